"""Command line: ``python -m colorizer PHOTO... -o OUTDIR`` (or ``colorizer ...``).

Colorizes each photo (or every image in a given folder) at full resolution and
writes ``OUTDIR/<name>.png`` (PNG keeps alpha and adds no compression loss). Each output
records, in PNG text, that it is colorizer's and which photo it is of, so one mapping from
photos to files is decided before any work and is the same on every rerun: a photo keeps
the name of its own earlier outputs; a name held by anything else (an input, someone's
file, another photo's output or entropy map) is passed over for ``<name>-2.png``, with a
line. Nothing but a photo's own outputs is ever replaced, and those only with
``--overwrite``; a photo whose outputs are complete is skipped (exit 0), one with a file
missing gets that file, so a rerun finishes what is missing. Earlier outputs are never
taken for photos (a line for each one named). A file that cannot be colorized gets one
line on stderr and the rest go on; a closing line accounts for every input; the exit
status is 1 if any file or folder failed, 2 for bad arguments, 130 on Ctrl-C.

``colorizer export-onnx [-m MODEL] OUT.onnx`` writes a model's network as ONNX instead
(``Colorizer.export_onnx``); ``--backend onnxruntime`` colorizes with it in ONNX Runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import os
import stat
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from colorizer.bins import check_temperature
from colorizer.errors import error_line, fail, first_line, report_error
from colorizer.hub import DEFAULT_MODEL
from colorizer.images import (DEFAULT_MAX_PIXELS, OUTPUT_MARK, OUTPUT_SOFTWARE, ImageError, list_images, read_image,
                              write_atomically)

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
    p.add_argument("--overwrite", action="store_true",
                   help="colorize again photos whose outputs exist (only a photo's own outputs are ever replaced)")
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
    """One colorization path per input: ``out_dir/<stem><suffix>.png``, or ``...-2.png``,
    ``...-3.png`` when that name (or its entropy map's, ``<name>.uncertainty.png``) is
    another input's or another file's in ``out_dir``; an input keeps the name of its own
    earlier outputs there, so a rerun maps every photo to the same files."""
    return [dst for dst, _ in _assign(inputs, out_dir, suffix)]


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
    """``colorizer PHOTO... -o OUTDIR`` (or ``colorizer export-onnx ...``): the exit status.
    Ctrl-C is one line and status 130 in every mode, and each warning one
    ``colorizer: warning: FILE: ...`` line, naming the photo being read or colorized."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export-onnx"]:  # a photo of that name: ./export-onnx
        return export_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            _warn_in_one_line()
            return _colorize_all(args)
    except KeyboardInterrupt:
        return report_error("colorizer", "interrupted: the outputs written so far are complete; "
                                         "a rerun does the rest", status=130)


def _warn_in_one_line() -> None:
    """Warnings (this process's, from now on) as one ``colorizer: warning: [FILE: ]...`` line
    each, every time (a second photo's corrupt EXIF is reported too), the photo named when
    the message does not name it (Pillow's do not)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split()) or category.__name__
        photo = getattr(_CURRENT, "photo", None)
        if photo is not None and str(photo) not in text:
            text = f"{photo}: {text}"
        tqdm.write(f"colorizer: warning: {text}", file=sys.stderr)

    warnings.simplefilter("always", UserWarning)
    warnings.showwarning = show


_CURRENT = threading.local()  # the photo this thread reads or colorizes, which a warning names


@contextlib.contextmanager
def _working_on(photo: Path | str):
    """Name ``photo`` in the warnings this thread gives inside the block."""
    _CURRENT.photo = photo
    try:
        yield
    finally:
        _CURRENT.photo = None


def _colorize_all(args: argparse.Namespace) -> int:
    """The photos of ``args``, as ``main`` promises: the exit status."""
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
    unreadable: list[OSError] = []
    listed = list_images(args.photos, missing="keep", on_error=unreadable.append)
    for e in unreadable:
        report_error(prog, f"{e.filename or 'a folder'}: cannot be read ({e.strerror or e})")
    inputs, left_out = _photos_to_colorize(prog, listed, args)
    if not inputs and unreadable and not left_out.named:  # its lines said why
        return 1
    if not inputs and not left_out.named:
        where = ", ".join(map(str, args.photos))
        return report_error(prog, f"no image files found in {where}" + (
            f" (only {left_out.found} earlier output(s) of colorizer)" if left_out.found else ""))
    if not inputs:  # only earlier outputs named: each has its line, nothing to load or create
        return _summary(prog, 0, left_out, 0, 0, len(unreadable))

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
            with _working_on(args.reference):
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
        tqdm.write(error_line(prog, msg, limit=None), file=sys.stderr)  # a long file name never cuts the reason

    todo, skipped = _plan(prog, inputs, args, failed)
    if workers > 1 and len(todo) > 1:
        try:
            _in_processes(model, todo, min(workers, len(todo)), args, reference, failed)
        except _WorkersFailed as e:
            report_error(prog, e)
            return 2
    else:
        overlap = device.type != "cpu" if args.overlap is None else args.overlap
        _in_this_process(model, todo, RenderOptions.from_args(args), reference, overlap, args.quiet, failed)
    return _summary(prog, len(inputs), left_out, skipped, failures, len(unreadable))


@dataclasses.dataclass
class _LeftOut:
    """Inputs not colorized by decision: named earlier outputs of colorizer, files named twice,
    and (not inputs, only counted) earlier outputs found in folders."""

    named: int = 0
    twice: int = 0
    found: int = 0


def _photos_to_colorize(prog: str, listed: list[Path], args: argparse.Namespace) -> tuple[list[Path], _LeftOut]:
    """The listed files to colorize: earlier outputs of colorizer left out (a line for each
    one named directly, a count for those found in folders), and each file once (``a.png``
    and ``./a.png`` are one photo: a line for the repeat)."""
    named = {Path(p) for p in args.photos}
    left_out, first, inputs = _LeftOut(), {}, []
    for src in listed:
        if _is_our_output(src):
            if src in named:
                left_out.named += 1
                _note(prog, f"{src}: left out: an output of colorizer (colorize the photo it was made from)")
            else:
                left_out.found += 1
            continue
        same = first.setdefault(_resolved(src), src)
        if same is not src:
            left_out.twice += 1
            _note(prog, f"{src}: left out: the same file as {same}, colorized once")
            continue
        inputs.append(src)
    return inputs, left_out


def _note(prog: str, text: str) -> None:
    """A line about one photo that is not an error (left out, written under another name);
    printed with -q too, which only hides the progress bar."""
    tqdm.write(f"{prog}: {text}", file=sys.stderr)


class _Job(NamedTuple):
    """One photo to colorize: the files to write (None: already complete, kept) and the
    photo's id, recorded in them."""

    src: Path
    dst: Path | None
    extra: Path | None
    photo: str


def _plan(prog: str, inputs: list[Path], args: argparse.Namespace, failed) -> tuple[list[_Job], int]:
    """What each input needs, decided before any work: ``(todo, skipped)``. A photo is
    skipped when its outputs are complete (the colorization, and with ``--uncertainty`` the
    entropy map, each this photo's own); otherwise only its missing files are written (all
    of them with ``--overwrite``). A photo given a numbered name gets a line saying why."""
    input_set = {_resolved(p) for p in inputs}
    todo, skipped = [], 0
    for src, (dst, why) in zip(inputs, _assign(inputs, args.out, args.suffix)):
        photo, extra = _photo_id(src), _heatmap_path(dst)
        files = [dst, extra] if args.uncertainty else [dst]
        write = [f for f in files if args.overwrite or _whose(f) is None]
        if not write:
            skipped += 1
            continue
        if any(_resolved(f) in input_set for f in write):  # never: an input is no output of colorizer
            failed(f"{src}: output {dst} would replace an input; choose another --out or --suffix")
            continue
        if why:
            _note(prog, f"{src}: written as {dst.name}: {why}")
        todo.append(_Job(src, dst if dst in write else None, extra if extra in write else None, photo))
    return todo, skipped


def _heatmap_path(dst: Path) -> Path:
    """The entropy map's file beside the colorization ``dst``."""
    return dst.with_name(dst.stem + ".uncertainty.png")


def _assign(inputs: list[Path], out_dir: Path, suffix: str) -> list[tuple[Path, str | None]]:
    """Each input's colorization path and, when it is not the plain ``<stem><suffix>.png``,
    why. One mapping for the whole run, the same on every rerun: first each input takes back
    the name of its own earlier outputs in ``out_dir`` (they record which photo they are of);
    then each other input, in order, the first of ``<stem><suffix>``, ``...-2``, ``...-3``, ...
    whose colorization and entropy-map names are neither planned for another input (names
    compared without case) nor held by any other file (an input, someone's file, an output
    of another photo). Outputs written before colorizer recorded the photo count as the
    photo's that this plan gives their name, as they did then."""
    try:
        present = {name.lower(): name for name in os.listdir(out_dir)}
    except OSError:  # not made yet (or unreadable: writing there will say so)
        present = {}
    numbered: dict[str, set[int]] = {}  # lower-case base name -> the n of its existing "base-n" outputs
    for name in present:
        if not name.endswith(".png"):
            continue
        base = name[: -len(".uncertainty.png")] if name.endswith(".uncertainty.png") else name[: -len(".png")]
        head, _, n = base.rpartition("-")
        numbered.setdefault(base, set()).add(1)
        if head and n.isdigit() and int(n) > 1:
            numbered.setdefault(head, set()).add(int(n))

    def name(base: str, n: int) -> str:
        return base if n == 1 else f"{base}-{n}"

    def files(candidate: str) -> list[str]:
        return [f"{candidate}.png".lower(), f"{candidate}.uncertainty.png".lower()]

    whose = functools.cache(lambda f: _whose(out_dir / present[f]))  # each file's header read once a run

    def owners(candidate: str) -> list[str | None]:
        return [whose(f) if f in present else None for f in files(candidate)]

    def free(candidate: str) -> bool:
        return taken.isdisjoint(files(candidate))

    bases = [f"{src.stem}{suffix}" for src in inputs]
    chosen: list[str | None] = [None] * len(inputs)
    taken: set[str] = set()
    for i, (src, base) in enumerate(zip(inputs, bases)):  # its own earlier outputs, found by their record
        photo = _photo_id(src)
        for n in sorted(numbered.get(base.lower(), ())):
            candidate = name(base, n)
            mine = owners(candidate)
            if free(candidate) and photo in mine and set(mine) <= {photo, None}:
                chosen[i] = candidate
                taken.update(files(candidate))
                break
    plan = []
    for i, base in enumerate(bases):
        why = None
        n = 1
        while chosen[i] is None:
            candidate = name(base, n)
            held = [o for o in owners(candidate) if o not in (None, _EARLIER)]
            if not free(candidate):
                why = why or f"{base}.png (or its .uncertainty.png) is another photo's in this run"
            elif held:
                why = why or f"{base}.png (or its .uncertainty.png) is another file, not this photo's output"
            else:
                chosen[i] = candidate
                taken.update(files(candidate))
            n += 1
        plan.append((out_dir / f"{chosen[i]}.png", why))
    return plan


def _in_this_process(model, todo: list, options: RenderOptions, reference, overlap: bool, quiet: bool,
                     failed) -> None:
    """The photos of ``todo`` one after another in this process. Overlapped: the next photo is
    decoded and the last one encoded (PNG) in two threads while the network and the renderer
    work on this one; sequential does one thing at a time."""

    def read(src: Path):
        """Decode in the reader thread (Pillow lets go of the GIL), or the error to report."""
        try:
            with _working_on(src):
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
        for i, (src, dst, extra, photo) in enumerate(todo):
            image = read(src) if ahead is None else ahead.result()
            if ahead is not None and i + 1 < len(todo):
                ahead = reader.submit(read, todo[i + 1][0])
            try:
                if isinstance(image, ImageError):
                    raise image
                with _working_on(src):
                    result, heatmap = _render(model, image, options, reference)
            except (OSError, RuntimeError, ValueError) as e:  # ImageError is a ValueError
                failed(_failure(src, e))
                bar.update(1)
                continue
            if not overlap:
                writing.append((src, _done(_write, result, dst, heatmap, extra, photo)))
            else:
                writing.append((src, writer.submit(_write, result, dst, heatmap, extra, photo)))
            collect(keep=1)
        collect(keep=0)
    finally:
        reader.shutdown(cancel_futures=True)
        writer.shutdown(wait=True)  # a write under way (Ctrl-C) ends whole, or not at all
        bar.close()


def _summary(prog: str, photos: int, left_out: _LeftOut, skipped: int, failures: int, folders: int) -> int:
    """The closing line on stderr, accounting for every input, when any was not simply
    colorized; the exit status (1 if any photo or folder failed)."""
    given = photos + left_out.named + left_out.twice
    parts = [(photos - skipped - failures, "colorized"), (skipped, "skipped (their outputs are complete)"),
             (failures, "failed"), (left_out.named, "left out (outputs of colorizer)"),
             (left_out.twice, "left out (named twice)")]
    if given - parts[0][0] or folders:
        counts = ", ".join(f"{n} {what}" for n, what in parts if n)
        unread = f"; {folders} folder(s) could not be read" if folders else ""
        print(f"{prog}: {given} photo(s): {counts or 'none'}{unread}", file=sys.stderr)
    return 1 if failures or folders else 0


def _write(result: Image.Image, dst: Path | None, heatmap: Image.Image | None, extra: Path | None,
           photo: str) -> None:
    """A colorization and its entropy map, those of them not None, each written atomically
    and marked as ``photo``'s."""
    if dst is not None:
        _save_atomic(result, dst, photo)
    if heatmap is not None and extra is not None:
        _save_atomic(heatmap, extra, photo)


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
    return pred.render(options.temperature), (_heatmap(pred.uncertainty()) if options.uncertainty else None)


def _failure(src: Path, error: BaseException, writing: bool = False) -> str:
    """The one line for a photo that failed (an ``ImageError`` already names its file): the
    reason itself (an OSError's strerror, not its repeat of the long path)."""
    first = first_line(error.strerror if isinstance(error, OSError) and error.strerror else error)
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
            jobs = {pool.submit(_worker_photo, str(job.src), job.dst and str(job.dst), job.extra and str(job.extra),
                                job.photo): job.src for job in todo}
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
    _warn_in_one_line()
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


def _worker_photo(src: str, dst: str | None, extra: str | None, photo: str) -> str | _StartFailure | None:
    """One photo in a ``--workers`` process: read, colorize, write; its failure line, or None."""
    if "failure" in _WORKER:
        return _WORKER["failure"]
    options: RenderOptions = _WORKER["render"]
    try:
        with _working_on(src):
            image = read_image(src, options.max_pixels)
            result, heatmap = _render(_WORKER["model"], image, options, _WORKER["reference"])
    except (OSError, RuntimeError, ValueError) as e:
        return _failure(Path(src), e)
    try:
        _write(result, dst and Path(dst), heatmap, extra and Path(extra), photo)
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


PHOTO_KEY = "colorizer-photo"  # the PNG text of every output naming its photo (``_photo_id``)
_OTHER, _EARLIER = "other", ""  # _whose: not an output of colorizer; one that names no photo (older)


def _photo_id(src: Path) -> str:
    """What an output records of its photo: a digest of the photo's resolved path (the same
    for ``a.png`` and ``./a.png``; it tells nothing of the path to who sees the PNG)."""
    return hashlib.sha256(os.fsencode(_resolved(src))).hexdigest()[:16]


def _whose(path: Path) -> str | None:
    """Whose output ``path`` is, from its PNG header (pixels are not read): None when there
    is no file there; the photo id it records; ``_EARLIER`` for an output of colorizer that
    records none (written before outputs did); ``_OTHER`` for any other file."""
    if not os.path.lexists(path):
        return None
    if path.suffix.lower() != ".png":
        return _OTHER
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a pipe would block the open below forever
            return _OTHER
        with Image.open(path) as img:
            if not str(img.info.get("Software", "")).startswith(OUTPUT_MARK):
                return _OTHER
            return str(img.info.get(PHOTO_KEY, _EARLIER))
    except (OSError, ValueError, Image.DecompressionBombError):
        return _OTHER


def _is_our_output(path: Path) -> bool:
    """Whether ``path`` is a PNG this command wrote."""
    return _whose(path) not in (None, _OTHER)


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


def _save_atomic(img: Image.Image, dst: Path, photo: str) -> None:
    """Write to a temporary name, then rename (``write_atomically``): a crash never leaves half
    a file. The PNG is marked as colorizer's output of ``photo`` (its ``_photo_id``)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", OUTPUT_SOFTWARE)
    info.add_text(PHOTO_KEY, photo)
    write_atomically(dst, lambda tmp: img.save(tmp, format="PNG", pnginfo=info))


if __name__ == "__main__":
    sys.exit(main())
