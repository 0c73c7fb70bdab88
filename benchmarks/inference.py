"""Inference benchmark: end-to-end colorize time and peak memory, ours vs a reference.

    python benchmarks/inference.py [--repeats 3] [--sizes 0.25 1 12] [--widths 1.0 0.25]

For photos of 0.25, 1 and 12 megapixels and a full-width and a small network, it
times ``Colorizer.colorize`` (read L, aspect-kept network input, bilinear ab
upsampling, gamut clipping, recombination with full-resolution L) against a
straightforward reference pipeline in the style of the original release:
skimage ``rgb2lab`` on the full image, a square resize of L to 256x256, the same
network, ab resized back to full size with skimage, skimage ``lab2rgb``. The shipped
trained model is used where its width matches (its saturated predictions send more
pixels through gamut clipping than an untrained model's near-zero ab would).
Each case runs in a fresh subprocess, so peak memory (max RSS above the process's
resident size after imports, model load and photo decode) is that case's alone.
Prints a table with ratios reference / ours (higher is better for us).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _photo(megapixels: float):
    import numpy as np
    from PIL import Image
    from skimage import data

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    # a real photo (NASA's astronaut portrait), as the grayscale a user would bring
    img = Image.fromarray(data.astronaut()).convert("L").resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img)


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


def load(model: str, width: float):
    """The shipped (or given) model when its width matches, so the ab it predicts, and
    with it the share of out-of-gamut pixels that cost extra work, are a trained
    model's; otherwise an untrained model of that width (same architecture and cost)."""
    import torch

    from colorizer import Colorizer

    trained = Colorizer.from_pretrained(model)
    if abs(trained.net.head.in_channels - Colorizer(width=width).net.head.in_channels) == 0:
        return trained, f"weights: {model}, input {trained.input_size}"
    torch.manual_seed(0)
    return Colorizer(width=width, input_size=256).eval(), "random init"


def run_case(pipeline: str, megapixels: float, width: float, repeats: int, model_name: str) -> dict:
    model, kind = load(model_name, width)
    gray = _photo(megapixels)
    fn = (lambda: model.colorize(gray)) if pipeline == "ours" else (lambda: _reference(model, gray, 0.38))
    base = _rss_mb()
    times = []
    for _ in range(repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return {"seconds": times[len(times) // 2], "peak_mb": _rss_mb() - base, "model": kind}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    p.add_argument("--sizes", type=float, nargs="+", default=[0.25, 1.0, 12.0], help="megapixels")
    p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25], help="network widths")
    p.add_argument("--model", default="default", help="trained model used where its width matches (default: shipped)")
    p.add_argument("--case", nargs=3, metavar=("PIPELINE", "MP", "WIDTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        pipeline, mp, width = args.case
        print(json.dumps(run_case(pipeline, float(mp), float(width), args.repeats, args.model)))
        return

    import torch

    print(f"# colorizer inference benchmark: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| photo | width (weights) | ours s | reference s | speed-up | ours peak MB | reference peak MB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for width in args.widths:
        for mp in args.sizes:
            res = {}
            for pipeline in ("ours", "reference"):
                cmd = [sys.executable, __file__, "--case", pipeline, str(mp), str(width), "--repeats", str(args.repeats),
                       "--model", args.model]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                res[pipeline] = json.loads(out.stdout.strip().splitlines()[-1])
            o, r = res["ours"], res["reference"]
            print(f"| {mp:g} MP | {width:g} ({o['model']}) | {o['seconds']:.3f} | {r['seconds']:.3f} | "
                  f"{r['seconds'] / o['seconds']:.2f}x | {o['peak_mb']:.0f} | {r['peak_mb']:.0f} | "
                  f"{r['peak_mb'] / max(o['peak_mb'], 1.0):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
