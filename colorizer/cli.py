"""Command line: ``python -m colorizer PHOTO... -o OUTDIR`` (or ``colorizer ...``).

Colorizes each photo (or every image in a given folder) at full resolution and
writes ``OUTDIR/<name>.png`` (PNG keeps alpha and adds no compression loss). Never
writes over an input; an existing output is kept unless ``--overwrite`` (and counted as
skipped, not failed, so a batch can be rerun to finish what is missing). Outputs are
marked as colorizer's (a PNG text chunk), and a rerun never takes its own earlier outputs
for inputs, even with ``-o`` pointing at the photos' folder. A file that cannot be
colorized gets one line on stderr and the rest go on; the exit status is 1 if any file
failed, 2 for bad arguments.

``colorizer export-onnx [-m MODEL] OUT.onnx`` writes a model's network as ONNX instead
(``Colorizer.export_onnx``); ``--backend onnxruntime`` colorizes with it in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from colorizer.bins import check_temperature
from colorizer.errors import error_line, fail, first_line, report_error
from colorizer.hub import DEFAULT_MODEL
from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, list_images, read_image

__all__ = ["main", "export_main", "build_parser", "build_export_parser", "plan_outputs", "RenderOptions", "error_line",
           "first_line", "report_error", "fail"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colorizer",
        description="Colorize photos with a Zhang et al. (2016) colorization model.",
    )
    p.add_argument("photos", nargs="+", type=Path, help="photos, or folders of photos, to colorize")
    p.add_argument("-o", "--out", type=Path, required=True, help="folder for the colorized PNGs (created)")
    p.add_argument(
        "-t", "--temperature", type=float, default=None,
        help="annealed-mean temperature in [0, 1]: lower is more saturated (default: the model's own; 1.0 for the shipped default)",
    )
    p.add_argument(
        "-m", "--model", default=DEFAULT_MODEL,
        help="shipped model name, model folder, or Hugging Face Hub repo id (default: the shipped default)",
    )
    p.add_argument(
        "--reference", type=Path, default=None, metavar="PHOTO",
        help="colour every photo after this photo's global features (Iizuka et al.'s global-feature transfer; "
             "models with a global branch, network global_local)",
    )
    p.add_argument("--uncertainty", action="store_true", help="also write NAME.uncertainty.png (entropy map)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)")
    p.add_argument("--suffix", default="", help="added to each output name, e.g. --suffix=-color or --suffix _color")
    p.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (decompression bombs); default {DEFAULT_MAX_PIXELS:,}",
    )
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA when there is a GPU, else cpu), cpu, cuda, cuda:1")
    p.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch",
        help="what runs the network on the CPU: torch (default) or onnxruntime (exported once per model "
             "into the cache folder; needs pip install 'colorizer[onnx]')",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--overlap", dest="overlap", action="store_const", const=True, default=None,
                       help="decode the next photo and write the last one in two threads while this one is "
                            "colorized (the default on a GPU; on a 2-core CPU the network already uses both cores)")
    order.add_argument("--sequential", dest="overlap", action="store_const", const=False,
                       help="read, colorize and write one photo at a time (the default on the CPU)")
    p.add_argument(
        "-j", "--workers", type=int, default=1,
        help="processes on the CPU, each colorizing its share of the photos with cores/N threads "
             "(0: one per core; default 1: one process whose network uses every core)",
    )
    return p


def plan_outputs(inputs: list[Path], out_dir: Path, suffix: str = "") -> list[Path]:
    """One output path per input: ``out_dir/<stem><suffix>.png``, made unique when two
    inputs share a stem (``x.png``, ``x-2.png``, ...)."""
    taken: set[str] = set()
    plan = []
    for src in inputs:
        name, n = f"{src.stem}{suffix}", 1
        while name.lower() in taken:
            n += 1
            name = f"{src.stem}{suffix}-{n}"
        taken.add(name.lower())
        plan.append(out_dir / f"{name}.png")
    return plan


def _heatmap(u: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(u, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))  # mode L


def build_export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="colorizer export-onnx",
        description="Write a model's network as ONNX (dynamic batch and sizes, multiples of 8), checked "
                    "against torch to 1e-4 in ONNX Runtime. Input 'lightness' (B, 1, H, W), L in [0, 100]; "
                    "a model with the pretrained DINOv2 trunk also takes 'trunk_lightness' (B, 1, h, w), the "
                    "same L resized to an area of about trunk_size^2 with sides multiples of 14; output (B, Q, "
                    "H/4, W/4) logits, or a regression model's colour in its colour space (ab, UV or RGB) at "
                    "H/4 x W/4.",
    )
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help="shipped model name, model folder, or Hub repo id")
    return p


def _load_model(prog: str, name: str, device="cpu"):
    """The model ``name`` on ``device`` in eval mode, or None after its one-line error."""
    from colorizer.model import Colorizer

    try:
        return Colorizer.from_pretrained(name).to(device).eval()
    except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
        report_error(prog, first_line(e), f"cannot load model {name!r}")
        return None


def export_main(argv: list[str]) -> int:
    """``colorizer export-onnx [-m MODEL] OUT.onnx``."""
    args = build_export_parser().parse_args(argv)
    prog = "colorizer export-onnx"
    from colorizer.onnx_runtime import OnnxExportError

    model = _load_model(prog, args.model)
    if model is None:
        return 2
    try:
        path = model.export_onnx(args.out)
    except (ImportError, OnnxExportError, OSError) as e:
        return report_error(prog, e, status=1)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB): model {args.model}, checked against torch to 1e-4")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-onnx"]:  # a photo of that name: ./export-onnx
        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    prog = "colorizer"
    if args.temperature is not None:
        try:
            check_temperature(args.temperature)
        except ValueError as e:
            return report_error(prog, f"--{e}")
    if args.max_pixels <= 0:
        return report_error(prog, f"--max-pixels must be positive, got {args.max_pixels}")
    if args.workers < 0:
        return report_error(prog, f"--workers must be 0 (one per core) or more, got {args.workers}")
    workers = _cores() if args.workers == 0 else args.workers
    cpu_only = args.backend == "onnxruntime" or workers > 1
    try:
        device = _device("cpu" if cpu_only and args.device == "auto" else args.device)
    except ValueError as e:
        return report_error(prog, e)
    if workers > 1 and device.type != "cpu":
        return report_error(prog, f"--workers runs processes on the CPU; the device is {device} (use --device cpu)")
    inputs = list_images(args.photos, missing="keep")
    earlier = [p for p in inputs if _is_our_output(p)]
    inputs = [p for p in inputs if p not in earlier]
    if not inputs:
        where = ", ".join(map(str, args.photos))
        return report_error(prog, f"no image files found in {where}" + (
            f" (only {len(earlier)} earlier output(s) of colorizer)" if earlier else ""))

    model = _load_model(prog, args.model, device)  # the model first: a bad --model leaves no empty output folder
    if model is None:
        return 2
    if args.backend == "onnxruntime" and args.reference is not None:
        tqdm.write(f"{prog}: note: --reference runs the network in torch (ONNX Runtime takes no reference)",
                   file=sys.stderr)
    elif args.backend == "onnxruntime":
        if device.type != "cpu":
            return report_error(prog, f"--backend onnxruntime runs on the CPU; use --device cpu (the device is {device})")
        try:
            model.use_onnxruntime()
        except Exception as e:  # noqa: BLE001 - a missing package or a failed export: one line
            return report_error(prog, e, "--backend onnxruntime")
    reference = None
    if args.reference is not None:
        try:
            reference = model.reference_features(args.reference, args.max_pixels)
        except (ImageError, ValueError) as e:
            return report_error(prog, e, "--reference")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return report_error(prog, e.strerror or e, f"cannot create {args.out}")

    failures = 0

    def failed(msg: str) -> None:
        nonlocal failures
        failures += 1
        report_error(prog, msg)

    todo, skipped = _plan(prog, inputs, args, failed)
    if workers > 1 and len(todo) > 1:
        try:
            _in_processes(model, todo, min(workers, len(todo)), args, reference, failed)
        except _WorkersFailed as e:
            report_error(prog, e)
            return 2
        except KeyboardInterrupt:
            report_error(prog, "interrupted: the photos written so far are complete, the rest were not started")
            return 130
    else:
        overlap = device.type != "cpu" if args.overlap is None else args.overlap
        _in_this_process(model, todo, RenderOptions.from_args(args), reference, overlap, args.quiet, failed)
    return _summary(prog, inputs, skipped, failures)


def _plan(prog: str, inputs: list[Path], args: argparse.Namespace, failed) -> tuple[list[tuple[Path, Path, Path]], int]:
    """Each input's outputs (the colorization and its entropy map): ``(todo, skipped)``, the
    photos to do as ``(src, dst, extra)`` and how many were skipped because their outputs
    exist; an output that would replace an input is a failure (``failed``)."""
    input_set = {_resolved(p) for p in inputs}
    todo, skipped = [], 0
    for src, dst in zip(inputs, plan_outputs(inputs, args.out, args.suffix)):
        extra = dst.with_name(dst.stem + ".uncertainty.png")
        targets = [dst, extra] if args.uncertainty else [dst]
        if any(_resolved(t) in input_set for t in targets):
            failed(f"{src}: output {dst} would replace an input; choose another --out or --suffix")
        elif not args.overwrite and any(t.exists() for t in targets):
            skipped += 1
            if not args.quiet:
                tqdm.write(f"{prog}: skipped {src}: {dst} exists (--overwrite replaces it)", file=sys.stderr)
        else:
            todo.append((src, dst, extra))
    return todo, skipped


def _in_this_process(model, todo: list, options: RenderOptions, reference, overlap: bool, quiet: bool,
                     failed) -> None:
    """The photos of ``todo`` one after another in this process. Overlapped: the next photo is
    decoded and the last one encoded (PNG) in two threads while the network and the renderer
    work on this one; sequential does one thing at a time."""

    def read(src: Path):
        """Decode in the reader thread (Pillow lets go of the GIL), or the error to report."""
        try:
            return read_image(src, options.max_pixels)
        except ImageError as e:
            return e

    bar = tqdm(total=len(todo), unit="photo", disable=quiet, desc="colorizing")
    reader, writer = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
    ahead = None if not overlap or not todo else reader.submit(read, todo[0][0])
    writing: list[tuple[Path, Future]] = []

    def collect(keep: int) -> None:
        while len(writing) > keep:  # at most `keep` photos wait to be written: memory stays bounded
            src, job = writing.pop(0)
            try:
                job.result()
            except (OSError, ValueError) as e:
                failed(_failure(src, e, writing=True))
            bar.update(1)

    try:
        for i, (src, dst, extra) in enumerate(todo):
            image = read(src) if ahead is None else ahead.result()
            if ahead is not None and i + 1 < len(todo):
                ahead = reader.submit(read, todo[i + 1][0])
            try:
                if isinstance(image, ImageError):
                    raise image
                result, heatmap = _render(model, image, options, reference)
            except (OSError, RuntimeError, ValueError) as e:  # ImageError is a ValueError
                failed(_failure(src, e))
                bar.update(1)
                continue
            if not overlap:
                writing.append((src, _done(_write, result, dst, heatmap, extra)))
            else:
                writing.append((src, writer.submit(_write, result, dst, heatmap, extra)))
            collect(keep=1)
        collect(keep=0)
    finally:
        reader.shutdown(cancel_futures=True)
        writer.shutdown(wait=True)
    bar.close()


def _summary(prog: str, inputs: list[Path], skipped: int, failures: int) -> int:
    """The closing lines on stderr and the exit status (1 if any photo failed)."""
    if skipped:
        print(f"{prog}: {skipped} of {len(inputs)} photo(s) skipped: their outputs exist", file=sys.stderr)
    if failures:
        print(f"{prog}: {failures} of {len(inputs)} photo(s) failed", file=sys.stderr)
        return 1
    return 0


def _write(result: Image.Image, dst: Path, heatmap: Image.Image | None, extra: Path) -> None:
    """A colorization (and its entropy map), each written atomically."""
    _save_atomic(result, dst)
    if heatmap is not None:
        _save_atomic(heatmap, extra)


def _cores() -> int:
    """The CPU cores this process may run on (its affinity, so a container's limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _WorkersFailed(Exception):
    """The worker processes could not start (the model would not load in them) or died."""


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """How each photo is colorized: the same in this process and in ``--workers`` processes."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    temperature: float | None = None
    uncertainty: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RenderOptions":
        return cls(args.max_pixels, args.temperature, args.uncertainty)


def _render(model, image, options: RenderOptions, reference) -> tuple[Image.Image, Image.Image | None]:
    """One decoded photo's colorization and, with ``uncertainty``, its entropy map."""
    pred = model.analyze(image, max_pixels=options.max_pixels, reference=reference)
    return pred.colorize(options.temperature), (_heatmap(pred.uncertainty()) if options.uncertainty else None)


def _failure(src: Path, error: BaseException, writing: bool = False) -> str:
    """The one line for a photo that failed (an ``ImageError`` already names its file)."""
    first = first_line(error)
    if writing:
        return f"{src}: cannot write the output ({first})"
    return str(error) if isinstance(error, ImageError) else f"{src}: {first}"


def _in_processes(model, todo: list, workers: int, args, reference, failed) -> None:
    """``--workers N``: the photos of ``todo`` shared among N processes (spawned, each with the
    model's exact weights from a temporary folder and cores/N threads), as each finishes its
    last; the progress bar and the failure lines (``failed``) stay in this process.

    Raises:
        _WorkersFailed: the workers could not load the model, or one died (killed, out of
            memory); the photos not done by then are not attempted.
    """
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, _cores() // workers)
    options = {"render": dataclasses.asdict(RenderOptions.from_args(args)), "backend": model.backend,
               "threads": threads, "reference": None if reference is None else reference.cpu().flatten().tolist()}
    with tempfile.TemporaryDirectory(prefix="colorizer-workers-") as folder:
        model.save_pretrained(folder, model_card_kwargs={})  # config and weights, not the card's figures
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start, initargs=(folder, options))
        bar = tqdm(total=len(todo), unit="photo", disable=args.quiet, desc=f"colorizing ({workers} processes)")
        try:
            jobs = {pool.submit(_worker_photo, str(src), str(dst), str(extra)): src for src, dst, extra in todo}
            for job in as_completed(jobs):
                try:
                    error = job.result()
                except BrokenProcessPool:
                    raise _WorkersFailed(f"a worker process died after {bar.n} of {len(todo)} photo(s); "
                                         "the rest were not attempted (out of memory? try fewer --workers)") from None
                if isinstance(error, _StartFailure):
                    raise _WorkersFailed(f"the worker processes cannot start: {error.message}")
                if error:
                    failed(error)
                bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()


_WORKER: dict = {}  # in a --workers process: its model and options


@dataclasses.dataclass
class _StartFailure:
    """What a worker whose start-up failed answers for every photo (its one-line reason)."""

    message: str


def _worker_start(folder: str, options: dict) -> None:
    """A ``--workers`` process: Ctrl-C is the main process's to handle; its share of the cores,
    then the model (loaded from local safetensors). A failure is kept, to be answered per photo
    (an exception here would print a traceback and break the pool)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch

        from colorizer.model import Colorizer

        torch.set_num_threads(options["threads"])
        model = Colorizer.from_pretrained(folder).eval()
        if options["backend"] == "onnxruntime":
            model.use_onnxruntime(threads=options["threads"])
        reference = options["reference"]
        _WORKER.update(model=model, render=RenderOptions(**options["render"]),
                       reference=None if reference is None else torch.tensor(reference)[None])
    except Exception as e:  # noqa: BLE001 - reported once, in one line, by the main process
        _WORKER["failure"] = _StartFailure(first_line(e))


def _worker_photo(src: str, dst: str, extra: str) -> str | _StartFailure | None:
    """One photo in a ``--workers`` process: read, colorize, write; its failure line, or None."""
    if "failure" in _WORKER:
        return _WORKER["failure"]
    options: RenderOptions = _WORKER["render"]
    try:
        image = read_image(src, options.max_pixels)
        result, heatmap = _render(_WORKER["model"], image, options, _WORKER["reference"])
    except (OSError, RuntimeError, ValueError) as e:
        return _failure(Path(src), e)
    try:
        _write(result, Path(dst), heatmap, Path(extra))
    except (OSError, ValueError) as e:
        return _failure(Path(src), e, writing=True)
    return None


def _done(fn, *args) -> Future:
    """``fn(*args)`` run now, as a finished future (its exception kept for ``result()``)."""
    job: Future = Future()
    try:
        job.set_result(fn(*args))
    except Exception as e:  # noqa: BLE001 - handed to the caller, as a thread pool would
        job.set_exception(e)
    return job


def _resolved(path: Path) -> Path:
    """The path with symbolic links followed, or as given when they loop (reading it then
    says what is wrong, for that file only)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


OUTPUT_MARK = "colorizer"  # the PNG "Software" text of every output: a rerun never takes it for an input


def _is_our_output(path: Path) -> bool:
    """Whether ``path`` is a PNG this command wrote (its header says so; pixels are not read)."""
    if path.suffix.lower() != ".png":
        return False
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a pipe would block the open below forever
            return False
        with Image.open(path) as img:
            return str(img.info.get("Software", "")).startswith(OUTPUT_MARK)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _device(name: str):
    """``--device``: "auto" is CUDA when torch has a GPU, else the CPU; a CUDA device on a
    machine or torch build without one is a usage error, not a model error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r}: not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine or torch build has no CUDA GPU; use --device cpu")
    return device


def _save_atomic(img: Image.Image, dst: Path) -> None:
    """Write to a temporary name, then rename: a crash never leaves half a file."""
    from PIL import PngImagePlugin

    tmp = dst.with_name(f".{dst.name}.tmp")
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"{OUTPUT_MARK} (colorized from the photo's lightness)")
    try:
        img.save(tmp, format="PNG", pnginfo=info)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
