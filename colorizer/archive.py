"""Colorize an archive on Ray Data: ``python -m colorizer.archive SOURCE... -o OUT``.

The photos (a folder tree, a list of paths, a Parquet table with an image column, or a
Hugging Face data set) become a Ray Dataset; ``map_batches`` hands batches of them to a pool
of actors, each of which loads the model once and reads, colorizes and writes its photos.
The driver (this process) appends one manifest row per photo (``OUT/manifest.jsonl``:
source, output, model and revision, temperature, seconds, error) as the results stream
back, so a rerun skips what the manifest says is done and retries only what failed. A
photo that cannot be colorized is a row with its one-line error, never a crash. The same
command runs on this machine (a local Ray instance, no set-up) or on a cluster
(``--address``). Needs ``pip install 'colorizer[archive]'``; the design is in
docs/archive.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from colorizer.bins import check_temperature
from colorizer.errors import first_line, report_error
from colorizer.hub import DEFAULT_MODEL
from colorizer.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, OUTPUT_SOFTWARE, list_images, write_atomically

__all__ = ["main", "build_parser", "require_ray", "read_manifest", "Settings", "MANIFEST"]

PROG = "colorizer archive"
MANIFEST = "manifest.jsonl"
FORMATS = ("png", "jpeg", "parquet")
_RESULT_COLUMNS = ("key", "source", "output", "seconds", "error", "skipped")


def require_ray():
    """The ``ray`` module with Ray Data loaded, or an ImportError whose one line says how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part this command needs
    except ImportError as e:
        raise ImportError(f"colorizer archive needs Ray Data ({first_line(e)}): "
                          "pip install 'colorizer[archive]'") from None
    return ray


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Colorize an archive of photos on Ray Data (this machine, or a cluster with --address): "
                    "resumable, one manifest row per photo, a failed photo a row with its error.",
    )
    p.add_argument("photos", nargs="*", type=Path, help="photos, or folders of photos (searched recursively)")
    src = p.add_argument_group("other sources (instead of photos)")
    src.add_argument("--files-from", type=Path, metavar="LIST", help="a text file of photo paths, one a line")
    src.add_argument("--parquet", nargs="+", metavar="PATH", help="Parquet files or folders with an image column")
    src.add_argument("--hf", metavar="NAME", help="a Hugging Face data set: a Hub id or a local data set folder")
    src.add_argument("--hf-config", default=None, help="the data set's configuration (subset)")
    src.add_argument("--split", default="train", help="the data set's split (default: train)")
    src.add_argument("--streaming", action="store_true", help="stream the data set instead of downloading it")
    src.add_argument("--image-column", default="image",
                     help="the column of encoded image bytes (or a Hugging Face Image) (default: image)")
    src.add_argument("--key-column", default=None,
                     help="a column naming each row (default: the image's own path, else a hash of its bytes)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the output folder (created), with the manifest")
    p.add_argument("--format", choices=FORMATS, default="png",
                   help="png (default), jpeg (a photo with alpha is still written as PNG, keeping it), or parquet "
                        "(tables of key, source and the PNG bytes)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality, 1-95 (default 95)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="shipped model name, model folder, or Hub repo id")
    p.add_argument("--revision", default=None, help="the Hub revision (branch, tag or commit) of --model")
    p.add_argument("-t", "--temperature", type=float, default=None,
                   help="annealed-mean temperature in [0, 1] (default: the model's own)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (decompression bombs); default {DEFAULT_MAX_PIXELS:,}")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--address", default=None,
                     help="an existing Ray cluster: auto, HOST:PORT (ray start --head) or ray://HOST:10001 "
                          "(default: start a local Ray instance)")
    ray.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor (default 1)")
    ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (default 0: the CPU)")
    ray.add_argument("--actors", type=int, default=None,
                     help="most actors (model copies) at once (default: as many as the cluster's CPUs or GPUs allow)")
    ray.add_argument("--batch-size", type=int, default=8, help="photos per batch handed to an actor (default 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


@dataclass(frozen=True)
class Settings:
    """What each actor needs to colorize and write a photo (sent to it once, at its start)."""

    model: str
    revision: str | None
    temperature: float | None
    max_pixels: int | None
    out: str
    format: str
    quality: int
    threads: int
    device: str


# ----------------------------------------------------------------------------- the manifest


def read_manifest(path: Path) -> dict[str, dict]:
    """Each key's latest row of a manifest (JSON Lines, appended to run after run); a line
    cut short by a killed run is ignored (its photo is done again)."""
    rows: dict[str, dict] = {}
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "key" in row:
                rows[row["key"]] = row
    return rows


class _Manifest:
    """The manifest, appended to by this process only, each batch's rows flushed to disk
    before the next batch is taken."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self.file = open(path, "a", encoding="utf-8")
        if cut:  # a line cut short by a killed run: end it, so the next row starts on its own line
            self.file.write("\n")

    def append(self, rows: list[dict]) -> None:
        self.file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


# ----------------------------------------------------------------------------- the sources


def _file_rows(paths: list[Path], out: Path) -> list[dict]:
    """One row per photo of files and folders: ``key`` (its path relative to the common
    folder of the inputs, mirrored under OUT) and ``source`` (its path). Files under OUT
    (earlier outputs) are left out."""
    files = [f for f in list_images(paths, missing="keep") if not _inside(f, out)]
    if not files:
        return []
    bases = [os.path.abspath(p if p.is_dir() else p.parent) for p in paths]
    base = os.path.commonpath(bases)
    rows = [{"key": Path(os.path.relpath(os.path.abspath(f), base)).as_posix(), "source": os.path.abspath(f)}
            for f in files]  # absolute: an actor's working folder is not this one
    stems = Counter(_output_name(row["key"]).lower() for row in rows)
    for row in rows:  # b.jpg and b.png would both be b.png: each keeps its suffix, b.jpg.png and b.png.png
        row["name"] = row["key"] if stems[_output_name(row["key"]).lower()] > 1 else _output_name(row["key"])
    return rows


def _output_name(key: str) -> str:
    """A photo's output name without its suffix: its key without an image suffix (``a/b.jpg`` -> ``a/b``)."""
    path = PurePosixPath(key)
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_SUFFIXES else key


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def _listed(list_file: Path) -> list[Path]:
    """The paths of a ``--files-from`` list, one a line (blank lines and ``#`` comments skipped)."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--files-from {list_file}: cannot be read ({first_line(e)})") from None
    return [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _hf_dataset(ray, args):
    """A Hugging Face data set (from the Hub, or a local data set folder: the same call) as a Ray Dataset."""
    try:
        import datasets
    except ImportError:
        raise ImportError("--hf needs the datasets package: pip install 'colorizer[archive]'") from None
    try:
        ds = datasets.load_dataset(args.hf, args.hf_config, split=args.split, streaming=args.streaming)
    except Exception as e:  # noqa: BLE001 - the Hub's and the loaders' many errors: one line
        raise ValueError(f"--hf {args.hf}: cannot load split {args.split!r} ({first_line(e)})") from None
    try:
        return ray.data.from_huggingface(ds)
    except OSError:
        # Ray asks the Hub's API whether a streamed data set has Parquet files, without catching
        # a connection error (offline, or a local data set): read it through Ray's own streaming
        # datasource for Hugging Face data sets, the path from_huggingface takes when the Hub has none.
        from ray.data._internal.datasource.huggingface_datasource import HuggingFaceDatasource

        return ray.data.read_datasource(HuggingFaceDatasource(dataset=ds))


def _table_name(args) -> str:
    return args.hf or ",".join(args.parquet or ())


def _dataset(ray, args, done: set[str]):
    """The photos still to do as a Ray Dataset, and how many the driver already skipped (``(ds, skipped)``).
    Files are listed and filtered here; a table's rows are filtered by the actors, which see their keys."""
    if args.parquet or args.hf:
        if args.hf:
            ds = _hf_dataset(ray, args)
        else:
            try:
                ds = ray.data.read_parquet([p if "://" in p else os.path.abspath(p) for p in args.parquet])
            except Exception as e:  # noqa: BLE001 - missing files, not Parquet: one line
                raise ValueError(f"--parquet: {first_line(e)}") from None
        names = ds.columns()
        for column in (args.image_column, args.key_column):
            if column is not None and column not in names:
                raise ValueError(f"no column {column!r} in {_table_name(args)}; its columns: {', '.join(names)}")
        return ds.select_columns([c for c in dict.fromkeys((args.image_column, args.key_column)) if c]), 0
    paths = list(args.photos) + (_listed(args.files_from) if args.files_from else [])
    rows = _file_rows(paths, args.out)
    if not rows:
        raise ValueError(f"no image files found in {', '.join(map(str, paths))}")
    todo = [r for r in rows if r["key"] not in done]
    if not todo:
        return None, len(rows)
    return ray.data.from_items(todo), len(rows) - len(todo)


# ----------------------------------------------------------------------------- the actors


def _output_path(out: Path, name: str, suffix: str) -> Path:
    """Where a photo's output goes: its name (``_output_name``) mirrored under ``out``, with
    ``suffix`` (``a/b`` -> ``out/a/b.png``). A name that would leave ``out`` (``..``, absolute) is refused."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"{name}: not a name an output can have inside the output folder")
    return out.joinpath(*parts[:-1], parts[-1] + suffix)


def _row_key(row: dict, image_column: str, key_column: str | None) -> tuple[str, object]:
    """A table row's key and image input: the key column, else the image's own path (a Hugging
    Face Image keeps it), else the first 16 hex digits of the SHA-256 of its bytes."""
    value = row[image_column]
    path = None
    if isinstance(value, dict):  # a Hugging Face Image: {"bytes": ..., "path": ...}
        path, value = value.get("path"), value.get("bytes")
    if value is None:
        value = b""
    elif not isinstance(value, (bytes, bytearray)):
        value = bytes(value)
    if key_column is not None:
        return str(row[key_column]), value
    if path:
        return str(path), value
    return hashlib.sha256(value).hexdigest()[:16], value


def _exif(source) -> bytes | None:
    """The photo's EXIF, upright (orientation 1: the output is turned as ``read_image`` turns it), or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
            exif = img.getexif()
            if not exif:
                return None
            if 0x0112 in exif:
                exif[0x0112] = 1
            return exif.tobytes()
    except Exception:  # noqa: BLE001 - EXIF is kept when it can be read, never a reason to fail a photo
        return None


def encode(image, fmt: str, exif: bytes | None = None, quality: int = 95) -> tuple[bytes, str]:
    """A colorized photo encoded as ``fmt`` ("png", "jpeg", or "parquet": PNG bytes), with its
    EXIF: ``(data, suffix)``. A photo with alpha is PNG whatever ``fmt`` (JPEG would drop it)."""
    from PIL import PngImagePlugin

    buf = io.BytesIO()
    extra = {"exif": exif} if exif else {}
    if fmt == "jpeg" and image.mode == "RGB":
        image.save(buf, format="JPEG", quality=quality, **extra)
        return buf.getvalue(), ".jpg"
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", OUTPUT_SOFTWARE)
    image.save(buf, format="PNG", pnginfo=info, **extra)
    return buf.getvalue(), ".png"


class ColorizeBatch:
    """A Ray Data actor: loads the model once, then reads, colorizes and writes batches of
    photos; each photo's result is a row (its error a one-line message, never an exception)."""

    def __init__(self, settings: Settings, image_column: str | None = None, key_column: str | None = None,
                 done: frozenset = frozenset(), table: str = ""):
        import torch

        from colorizer.model import Colorizer

        torch.set_num_threads(settings.threads)
        kwargs = {"revision": settings.revision} if settings.revision else {}
        self.model = Colorizer.from_pretrained(settings.model, **kwargs).to(settings.device).eval()
        self.settings, self.image_column, self.key_column = settings, image_column, key_column
        self.done, self.table = done, table

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        n = len(next(iter(batch.values())))
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        results = [self._one(row) for row in rows]
        columns = {c: np.array([r[c] for r in results], dtype=object) for c in _RESULT_COLUMNS}
        if self.settings.format == "parquet":
            columns["image"] = np.array([r.get("image") for r in results], dtype=object)
        return columns

    def _one(self, row: dict) -> dict:
        start = time.perf_counter()
        if self.image_column is None:  # a file: key, path and output name
            key, source, name = str(row["key"]), str(row["source"]), str(row["name"])
            image = source
        else:
            try:
                key, image = _row_key(row, self.image_column, self.key_column)
            except Exception as e:  # noqa: BLE001 - a row whose key or image cannot be made: its own row
                key, image = f"row without a key ({first_line(e)})", b""
            source, name = f"{self.table}:{key}", _output_name(key)
            if key in self.done:  # done in an earlier run: counted, not redone
                return {"key": key, "source": source, "output": None, "error": None, "seconds": 0.0, "skipped": True}
        result = {"key": key, "source": source, "output": None, "error": None, "skipped": False}
        s = self.settings
        try:
            folder = None if s.format == "parquet" else _output_path(Path(s.out), name, "")  # refused before the work
            colorized = self.model.colorize(image, temperature=s.temperature, max_pixels=s.max_pixels)
            data, suffix = encode(colorized, s.format, _exif(image), s.quality)
            if folder is None:
                result["image"] = data
            else:
                out = _output_path(Path(s.out), name, suffix)
                out.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(out, lambda tmp: tmp.write_bytes(data))
                result["output"] = str(out)
        except (OSError, RuntimeError, ValueError, MemoryError) as e:  # ImageError is a ValueError
            message = first_line(e)
            result["error"] = message if isinstance(image, str) and message.startswith(image) else f"{source}: {message}"
        result["seconds"] = round(time.perf_counter() - start, 4)
        return result


# ----------------------------------------------------------------------------- the run


def _revision(model: str, revision: str | None) -> str:
    """The model's weights, named: the first 16 hex digits of the SHA-256 of its ``model.safetensors``."""
    from colorizer.hub import weights_file

    digest = hashlib.sha256()
    with open(weights_file(model, revision=revision), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _model_source(model: str) -> str:
    """What the actors load: a model folder as an absolute path (an actor's working folder is not
    this one); a shipped name (each node's installed package has it) or a Hub id as it is."""
    from colorizer.hub import available_models

    folder = Path(model).expanduser()
    return str(folder.absolute()) if model not in available_models() and folder.is_dir() else model


def _check_same_settings(rows: dict[str, dict], run: dict) -> None:
    """A manifest's photos were made with one model, revision and temperature: a rerun with
    others would mix two colorizations in one archive."""
    for row in rows.values():
        theirs = {k: row.get(k) for k in run}
        if theirs != run:
            raise ValueError(f"the manifest's photos were made with {theirs}, not {run}: use another --out, "
                             "or the same --model and --temperature")


def _actors(ray, args) -> int:
    """How many actors at most: ``--actors``, else as many as the cluster's CPUs (or GPUs) hold."""
    if args.actors:
        return args.actors
    resources = ray.cluster_resources()
    if args.num_gpus > 0:
        return max(1, int(resources.get("GPU", 0) // args.num_gpus))
    return max(1, int(resources.get("CPU", 1) // args.num_cpus))


def _check_args(args) -> None:
    kinds = [bool(args.photos or args.files_from), bool(args.parquet), bool(args.hf)]
    if sum(kinds) != 1:
        raise ValueError("give one source: photos or folders (and/or --files-from), --parquet, or --hf")
    if args.temperature is not None:
        try:
            check_temperature(args.temperature)
        except ValueError as e:
            raise ValueError(f"--{e}") from None
    for name in ("max_pixels", "batch_size", "quality", "num_cpus"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.num_gpus < 0 or (args.actors is not None and args.actors <= 0):
        raise ValueError("--num-gpus must be 0 or more and --actors positive")


def main(argv: list[str] | None = None) -> int:
    """``python -m colorizer.archive``: 0 when every photo is done, 1 if any failed, 2 for bad arguments or set-up."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _check_args(args)
        ray = require_ray()
    except (ValueError, ImportError) as e:
        return report_error(PROG, e)
    manifest_path = args.out / MANIFEST
    try:
        from colorizer.model import Colorizer

        model = Colorizer.from_pretrained(args.model, **({"revision": args.revision} if args.revision else {}))
        temperature = model.temperature if args.temperature is None else args.temperature
        run = {"model": args.model, "revision": _revision(args.model, args.revision), "temperature": temperature}
        earlier = read_manifest(manifest_path)
        _check_same_settings(earlier, run)
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        return report_error(PROG, first_line(e))
    done = {k for k, row in earlier.items() if not row.get("error")}

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=args.address, include_dashboard=False, log_to_driver=not args.quiet,
                     configure_logging=not args.quiet, logging_level="ERROR" if args.quiet else "INFO")
        except Exception as e:  # noqa: BLE001 - no cluster at that address, and the like: one line
            return report_error(PROG, first_line(e), f"cannot start or reach Ray{f' at {args.address}' if args.address else ''}")
    try:
        return _run(ray, args, run, done, manifest_path)
    except (ValueError, ImportError, OSError) as e:
        return report_error(PROG, first_line(e))
    except KeyboardInterrupt:
        return report_error(PROG, "interrupted: the photos in the manifest are complete; rerun to finish", status=130)
    except Exception as e:  # noqa: BLE001 - Ray's own failures (a worker that cannot load the model, a lost node)
        return report_error(PROG, first_line(e), "the run stopped (the photos in the manifest are complete; "
                            "rerun to finish)")
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, args, run: dict, done: set[str], manifest_path: Path) -> int:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not args.quiet
    ds, skipped = _dataset(ray, args, done)
    table = bool(args.parquet or args.hf)
    gpu = args.num_gpus > 0
    settings = Settings(model=_model_source(args.model), revision=args.revision, temperature=args.temperature,
                        max_pixels=args.max_pixels, out=str(args.out.absolute()), format=args.format,
                        quality=args.quality, threads=max(1, int(args.num_cpus)), device="cuda" if gpu else "cpu")
    completed = failed = 0
    manifest = _Manifest(manifest_path)
    parts = _PartWriter(args.out) if args.format == "parquet" else None
    try:
        if ds is not None:
            results = ds.map_batches(
                ColorizeBatch,
                batch_size=args.batch_size,
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=_actors(ray, args)),
                num_cpus=args.num_cpus,
                num_gpus=args.num_gpus or None,
                fn_constructor_kwargs={
                    "settings": settings, "done": frozenset(done) if table else frozenset(), "table": _table_name(args),
                    "image_column": args.image_column if table else None, "key_column": args.key_column,
                },
            )
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                new = [i for i, s in enumerate(batch["skipped"]) if not s]
                skipped += len(batch["key"]) - len(new)
                batch = {k: [v[i] for i in new] for k, v in batch.items()}
                if parts is not None:
                    batch["output"] = parts.write(batch)
                rows = [{"key": str(batch["key"][i]), "source": str(batch["source"][i]), "output": _text(batch["output"][i]),
                         **run, "seconds": float(batch["seconds"][i]), "error": _text(batch["error"][i])}
                        for i in range(len(new))]
                manifest.append(rows)
                for row in rows:
                    if row["error"]:
                        failed += 1
                        print(f"{PROG}: error: {row['error']}", file=sys.stderr)
                    else:
                        completed += 1
    finally:
        manifest.close()
    print(f"{PROG}: {completed} done, {skipped} skipped (done before), {failed} failed; manifest {manifest_path}",
          file=sys.stderr)
    return 1 if failed else 0


def _text(value) -> str | None:
    """A text column's value, or None: a column of no text comes back from Ray's Arrow blocks as NaN."""
    return value if isinstance(value, str) else None


class _PartWriter:
    """``--format parquet``: each batch's colorized photos as one table ``OUT/part-<run>-<n>.parquet``
    (key, source, image: PNG bytes), written before its manifest rows, so a row that says done
    always has its table. A table no manifest row names (left by a killed run) is removed."""

    def __init__(self, out: Path):
        named = {row.get("output") for row in read_manifest(out / MANIFEST).values()}
        for part in out.glob("part-*.parquet"):
            if str(part) not in named:
                part.unlink()
        self.out, self.run, self.count = out, time.strftime("%Y%m%d-%H%M%S"), 0

    def write(self, batch: dict) -> list[str | None]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ok = [i for i, error in enumerate(batch["error"]) if _text(error) is None]  # lists, one item a photo
        if not ok:
            return [None] * len(batch["key"])
        self.count += 1
        dst = self.out / f"part-{self.run}-{self.count:05d}.parquet"
        table = pa.table({"key": [str(batch["key"][i]) for i in ok], "source": [str(batch["source"][i]) for i in ok],
                          "image": pa.array([bytes(batch["image"][i]) for i in ok], pa.binary())})
        write_atomically(dst, lambda tmp: pq.write_table(table, tmp))
        return [None if _text(error) else str(dst) for error in batch["error"]]


if __name__ == "__main__":
    from colorizer.archive import main as _main  # the module's own classes, which Ray's workers import by name

    sys.exit(_main())
