"""Inference benchmark: colorize time against the network's own, content, memory, the CLI.

    python benchmarks/inference.py [--repeats 5] [--sizes 0.25 1 12] [--quick]

Prints Markdown tables, each figure measured in this run, with their targets:

1. ``Colorizer.colorize`` of a grayscale photo (NASA's astronaut portrait resized) at each
   size, against the network alone at its input size (forward and decoding, no photo
   work), measured interleaved in the same process (target: a 1 MP colorize in at most 0.5 s
   on a 2-core CPU); and against a plain reference
   pipeline in the style of the original release (skimage ``rgb2lab`` at full size, a
   square 256x256 network input, skimage resize and ``lab2rgb``). Targets: colorize at
   most 3x the network at 12 MP and 1.5x at 1 MP; at least 6x faster than the reference
   at 12 MP; peak memory above the decoded photo at most 300 MB at 12 MP.
2. Content: 4 MP photos that are black, white, mid-gray, noise and the photo. Target:
   within 1.3x of each other.
3. A 100 MP photo through ``colorize`` (peak memory target 2 GB above the decoded photo)
   and a 10000x10000 black PNG through the CLI (under 10 s).
4. The full-resolution work alone (``colorizer.render``): its compiled kernel (numba)
   against its torch operations; and what the kernel costs on first use (compiling) and
   in a later process (loading it from numba's cache).
5. The network in torch against ONNX Runtime (the same weights exported), alone and
   through ``colorize``, at each size: the default CPU backend is ONNX Runtime only if it
   is clearly faster.
6. The CLI on a folder of 50 one-megapixel JPEGs: photos per second, ``--overlap``
   (decoding and writing in threads) and ``--workers 2`` (two processes of one thread each,
   their start-up included) against ``--sequential`` (the default on the CPU).

Each case runs in a fresh subprocess, so its peak memory (VmHWM after a reset, above the
resident size once the photo is decoded) is its own. Not a test: the figures depend on
the machine and on whatever else runs on it; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak resident size (Linux: /proc/self/clear_refs), return the current one."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _photo(megapixels: float, kind: str = "photo"):
    import numpy as np
    from PIL import Image
    from skimage import data

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    if kind == "photo":  # a real photo, as the grayscale a user would bring
        return np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((w, h), Image.Resampling.BICUBIC))
    if kind == "noise":
        return np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    return np.full((h, w), {"black": 0, "white": 255, "mid-gray": 128}[kind], dtype=np.uint8)


def _reference(model, gray, temperature: float):
    """The straightforward pipeline: skimage at full resolution, square 256 resize."""
    import numpy as np
    import torch
    from skimage import color, transform

    rgb = np.repeat(gray[..., None], 3, axis=2)
    lab = color.rgb2lab(rgb)
    l_full = lab[..., 0]
    l_small = transform.resize(l_full, (256, 256))
    with torch.no_grad():
        out = model(torch.from_numpy(l_small).float()[None, None])
        ab = model.decode(out, temperature)[0].numpy().transpose(1, 2, 0)
    ab_full = transform.resize(ab, l_full.shape)
    lab_out = np.concatenate([l_full[..., None], ab_full], axis=2)
    return (color.lab2rgb(lab_out) * 255).round().astype(np.uint8)


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def case(kind: str, arg: str, repeats: int, model_name: str) -> dict:
    """One measurement, in this (fresh) process."""
    import torch

    from colorizer import Colorizer

    model = Colorizer.from_pretrained(model_name)
    if kind in ("colorize", "reference"):
        gray = _photo(float(arg))
        if kind == "reference":
            fn = lambda: _reference(model, gray, 0.38)  # noqa: E731
            fn()
            base = _reset_peak()
            times = _timed(fn, repeats)
            return {"seconds": _median(times), "peak_mb": _status_mb("VmHWM") - base}
        pred = model.analyze(gray)
        small = model.network_input(pred.lightness)

        def network():
            with torch.no_grad():
                model.decode(model(small))

        model.colorize(gray), network()  # warm up: tables, allocator, threads
        base = _reset_peak()
        ours, net = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine
            ours += _timed(lambda: model.colorize(gray), 1)
            net += _timed(network, 1)
        return {"seconds": _median(ours), "network": _median(net), "peak_mb": _status_mb("VmHWM") - base,
                "input": list(small.shape[-2:])}
    if kind == "backends":  # torch against ONNX Runtime, the same weights, interleaved
        import tempfile

        gray = _photo(float(arg))
        onnx = Colorizer.from_pretrained(model_name)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            onnx.use_onnxruntime(path=onnx.export_onnx(Path(tmp) / "network.onnx"))
            export_s = time.perf_counter() - t0
        small = model.network_input(model.analyze(gray).lightness)

        def network(m):
            with torch.no_grad():
                m.decode(m.run_network(small))

        times: dict[str, list[float]] = {k: [] for k in ("torch_net", "ort_net", "torch", "ort")}
        for m in (model, onnx):
            m.colorize(gray), network(m)
        for _ in range(repeats):
            times["torch_net"] += _timed(lambda: network(model), 1)
            times["ort_net"] += _timed(lambda: network(onnx), 1)
            times["torch"] += _timed(lambda: model.colorize(gray), 1)
            times["ort"] += _timed(lambda: onnx.colorize(gray), 1)
        return {**{k: _median(v) for k, v in times.items()}, "export_s": export_s, "input": list(small.shape[-2:])}
    if kind == "renderer":  # the full-resolution work alone: the compiled kernel against the torch operations
        import colorizer.render as render_module

        pred = model.analyze(_photo(float(arg)))
        ab = pred.ab()
        paths = {"compiled": True, "torch": False}
        times = {k: [] for k in paths}
        for _ in range(repeats + 1):
            for k, flag in paths.items():
                render_module.KERNEL = flag
                times[k] += _timed(lambda: render_module.render(pred.lightness, ab), 1)
        return {k: _median(v[1:]) for k, v in times.items()}
    if kind == "first-use":  # the kernel's compilation (run with an empty NUMBA_CACHE_DIR), then from the cache
        import colorizer.render as render_module

        small = _photo(0.25)
        render_module.KERNEL = False
        model.colorize(small)  # the network's and torch's own first-use costs, kept out of the figure
        render_module.KERNEL = True
        t0 = time.perf_counter()
        render_module._compiled()  # numba's import
        import_s = time.perf_counter() - t0
        times = _timed(lambda: model.colorize(small), 2)
        return {"import": import_s, "first": times[0], "second": times[1]}
    if kind == "content":
        photos = {k: _photo(float(arg), k) for k in ("black", "white", "mid-gray", "noise", "photo")}
        for p in photos.values():
            model.colorize(p)
        times: dict[str, list[float]] = {k: [] for k in photos}
        for _ in range(repeats):
            for k, p in photos.items():
                times[k] += _timed(lambda: model.colorize(p), 1)
        return {k: _median(v) for k, v in times.items()}
    if kind == "big":
        gray = _photo(float(arg))
        model.colorize(_photo(1.0))
        base = _reset_peak()
        t = _timed(lambda: model.colorize(gray), 1)[0]
        return {"seconds": t, "peak_mb": _status_mb("VmHWM") - base}
    if kind == "cli":  # arg: "PHOTO_OR_FOLDER OUT [--sequential]"
        from colorizer.cli import main

        base = _reset_peak()
        t0 = time.perf_counter()
        rc = main(arg.split() + ["-q", "-m", model_name])
        return {"seconds": time.perf_counter() - t0, "rc": rc, "peak_mb": _status_mb("VmHWM") - base}
    raise ValueError(kind)


def run(kind: str, arg: str, args, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--case", kind, arg, "--repeats", str(args.repeats), "--model", args.model]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=None if env is None else {**os.environ, **env})
    if out.returncode:
        raise SystemExit(f"case {kind} {arg} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _folder(folder: Path, n: int = 50) -> Path:
    """``n`` one-megapixel JPEGs cut from scikit-image's sample photos (gray and colour)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = Image.fromarray(sources[i % len(sources)])
        x0, y0 = int(rng.integers(0, src.width // 5)), int(rng.integers(0, src.height // 5))
        img = src.crop((x0, y0, x0 + src.width * 4 // 5, y0 + src.height * 4 // 5)).resize((1155, 866))
        (img.convert("L") if i % 2 else img).save(folder / f"p{i:02d}.jpg", quality=90)
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    p.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0, 12.0], help="megapixels")
    p.add_argument("--model", default="default", help="model (default: the shipped one)")
    p.add_argument("--quick", action="store_true", help="sizes and the folder only, no 100 MP or 10000x10000 cases")
    p.add_argument("--case", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(*args.case, args.repeats, args.model)))
        return

    import torch

    print(f"# colorizer inference benchmark: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, model {args.model}, median of {args.repeats}")
    print()
    print("| photo | network input | colorize s | network alone s | colorize / network (target) | "
          "reference s | speed-up (target) | peak MB above the photo (target) |")
    print("|---|---|---|---|---|---|---|---|")
    targets = {1.0: ("<= 1.5", "", ""), 12.0: ("<= 3", ">= 6", "<= 300")}
    seconds_targets = {1.0: "(<= 0.5)"}
    for mp in args.sizes:
        o, r = run("colorize", str(mp), args), run("reference", str(mp), args)
        t_ratio, t_speed, t_mem = targets.get(mp, ("", "", ""))
        print(f"| {mp:g} MP | {o['input'][1]}x{o['input'][0]} | {o['seconds']:.3f} {seconds_targets.get(mp, '')} | "
              f"{o['network']:.3f} | "
              f"{o['seconds'] / o['network']:.2f}x {t_ratio} | {r['seconds']:.3f} | "
              f"{r['seconds'] / o['seconds']:.1f}x {t_speed} | {o['peak_mb']:.0f} {t_mem} |", flush=True)
    print()
    print("| photo | full-resolution work: torch operations s | compiled (numba) s | speed-up |")
    print("|---|---|---|---|")
    for mp in args.sizes:
        o = run("renderer", str(mp), args)
        print(f"| {mp:g} MP | {o['torch']:.3f} | {o['compiled']:.3f} | {o['torch'] / o['compiled']:.1f}x |", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        first, cached = (run("first-use", "0", args, {"NUMBA_CACHE_DIR": cache}) for _ in range(2))
    print(f"\nThe compiled kernel on first use: {first['first'] - first['second']:.1f} s to compile (once per machine, "
          f"then cached on disk); in a later process {cached['first'] - cached['second']:.2f} s to load it from the "
          f"cache, after {cached['import']:.2f} s importing numba")
    print()
    c = run("content", "4", args)
    fastest = min(c.values())
    print("| 4 MP photo | " + " | ".join(c) + " | slowest / fastest (target <= 1.3) |")
    print("|---" * (len(c) + 2) + "|")
    print("| colorize s | " + " | ".join(f"{v:.3f}" for v in c.values()) + f" | {max(c.values()) / fastest:.2f}x |",
          flush=True)
    print()
    print("| photo | network input | network: torch s | network: onnxruntime s | speed-up | "
          "colorize: torch s | colorize: onnxruntime s | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for mp in args.sizes:
        o = run("backends", str(mp), args)
        print(f"| {mp:g} MP | {o['input'][1]}x{o['input'][0]} | {o['torch_net']:.3f} | {o['ort_net']:.3f} | "
              f"{o['torch_net'] / o['ort_net']:.2f}x | {o['torch']:.3f} | {o['ort']:.3f} | {o['torch'] / o['ort']:.2f}x |",
              flush=True)
    print(f"\nONNX export (once per set of weights, cached): {o['export_s']:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.quick:
            print()
            print("| case | seconds | peak MB above the photo (target) |")
            print("|---|---|---|")
            b = run("big", "100", args)
            print(f"| colorize, 100 MP photo (11547x8660) | {b['seconds']:.1f} | {b['peak_mb']:.0f} (<= 2048) |",
                  flush=True)
            from PIL import Image

            Image.new("L", (10000, 10000), 0).save(tmp / "black.png")
            k = run("cli", f"{tmp / 'black.png'} -o {tmp / 'black-out'}", args)
            size = (tmp / "black.png").stat().st_size // 1024
            print(f"| CLI, 10000x10000 black PNG ({size} KB), decode to PNG written (target < 10 s) | "
                  f"{k['seconds']:.1f} | {k['peak_mb']:.0f} |", flush=True)
        folder = _folder(tmp / "folder")
        seq = run("cli", f"{folder} -o {tmp / 'seq'} --sequential", args)
        ovl = run("cli", f"{folder} -o {tmp / 'ovl'} --overlap", args)
        par = run("cli", f"{folder} -o {tmp / 'par'} --workers 2", args)
        print()
        print("| CLI, 50 one-megapixel JPEGs | photos/s | speed-up |")
        print("|---|---|---|")
        print(f"| one at a time (--sequential) | {50 / seq['seconds']:.2f} | 1.00x |")
        print(f"| overlapped (--overlap) | {50 / ovl['seconds']:.2f} | {seq['seconds'] / ovl['seconds']:.2f}x |")
        print(f"| two processes (--workers 2) | {50 / par['seconds']:.2f} | {seq['seconds'] / par['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
