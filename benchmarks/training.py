"""Training throughput: the data pipeline alone, then training steps (images/s).

    python benchmarks/training.py                      # photos made from scikit-image samples
    python benchmarks/training.py --data-dir PHOTOS    # a real folder (imagefolder)
    python benchmarks/training.py --pretrained-trunk   # the DINOv2 decoder on cached features

Prints, in one run: decoded-and-cropped images/s of the data pipeline (``train.data``)
with 0 and N workers; training images/s at ``--crop`` px for the full-width network
and a small one, on batches already on the device (compute only) and fed by the real
pipeline; and the share of wall time the device waited for data (on CUDA: GPU idle).
``--settings`` then times the small network's compute-only step under the settings
that decide CPU speed -- bf16 autocast, ``channels_last``, torch threads, batch size,
crop size -- each as a ratio against fp32 at the default recipe's settings (all
threads, contiguous, batch 16, 128 px crops: the training step before bf16 on the CPU)
measured in the same run.
Not a test: the figures depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorizer.model import Colorizer  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.data import TrainBatches, open_rows  # noqa: E402
from train.loop import cpu_has_bf16, to_lab  # noqa: E402


def make_photos(folder: Path, n: int = 48) -> Path:
    """``n`` JPEGs cut from scikit-image's sample photos: mostly ~300x170, some ~1000 px."""
    import skimage.data as d

    sources = [d.astronaut(), d.coffee(), d.chelsea(), d.rocket(), d.immunohistochemistry()]
    rng = np.random.default_rng(0)
    for i in range(n):
        src = Image.fromarray(sources[i % len(sources)])
        large = i % 12 == 0
        w, h = (1000, 760) if large else (307, 172)
        x0 = rng.integers(0, max(1, src.width // 4))
        crop = src.crop((x0, 0, src.width - x0 // 2, src.height)).resize((w, h), Image.BILINEAR)
        (folder / "photos").mkdir(parents=True, exist_ok=True)
        crop.save(folder / "photos" / f"p{i:03d}.jpg", quality=90)
    return folder


def bench_pipeline(cfg: TrainConfig, batches: int) -> float:
    """Images/s of decoded, cropped uint8 batches (no training)."""
    stream = TrainBatches(open_rows(cfg), cfg)
    next(stream)  # workers start, first batch
    t0 = time.perf_counter()
    n = sum(len(next(stream)) for _ in range(batches))
    return n / (time.perf_counter() - t0)


def bench_train(cfg: TrainConfig, width: float, steps: int, device: torch.device, fed: bool,
                channels_last: bool | None = None, bf16: bool | None = None) -> tuple[float, float]:
    """(images/s, share of time waiting for data) of training steps at ``width``;
    ``bf16`` (autocast) and ``channels_last`` default to what the training loop does
    (``mixed_precision: auto``: on CUDA and on CPUs with native bf16)."""
    model = Colorizer(width=width).to(device)
    if bf16 is None:
        bf16 = device.type == "cuda" or cpu_has_bf16()
    if channels_last is None:
        channels_last = bf16
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-3)
    stream = TrainBatches(open_rows(cfg), cfg, pin_memory=device.type == "cuda") if fed else None
    fixed = torch.randint(0, 256, (cfg.batch_size, cfg.crop, cfg.crop, 3), dtype=torch.uint8, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        rgb = next(stream).to(device, non_blocking=True) if fed else fixed
        l, ab, mask = to_lab(rgb)
        with amp:
            loss = model.loss(model(l), ab, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # synchronise

    step()  # warm-up (workers, kernels)
    wait0 = stream.wait_s if fed else 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    wait = (stream.wait_s - wait0) if fed else 0.0
    return steps * cfg.batch_size / dt, wait / dt


def bench_pretrained_trunk(steps: int, device: torch.device, batch: int = 16) -> None:
    """Training images/s of the DINOv2 colorizer's decoder on cached trunk features, against
    the same decoder running the frozen trunk at every step, the cost of caching a crop's
    features once, and the step of the default before it (the ECCV16-trunk hypercolumn
    colorizer of train/configs/hypercolumn-finetune.yaml: width 0.25, 96 px crops, end to
    end); compute only, bf16 autocast where the CPU has it, as the training loop does."""
    bf16 = device.type == "cuda" or cpu_has_bf16()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def rate(model: Colorizer, crop: int, with_features: bool) -> float:
        model = model.to(device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        rgb = torch.randint(0, 256, (batch, crop, crop, 3), dtype=torch.uint8, device=device)
        l, ab, mask = to_lab(rgb)
        features = None
        if with_features:
            with torch.no_grad():
                trunk = model.net.trunk
                features = trunk(l)
                if trunk.tune:  # the cache's tokens where the tuned blocks start
                    start = trunk.tokens(trunk.pixels(trunk.resize(l)), trunk.depth - trunk.tune)
                    features = (*features, start)

        def step() -> None:
            with amp:
                out = model(l, trunk_features=features) if features is not None else model(l)
                loss = model.loss(out, ab, mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()

        step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - t0)

    def encode_rate(model: Colorizer, crop: int) -> float:
        l = torch.rand(batch, 1, crop, crop, device=device) * 100
        with torch.no_grad():
            model.net.trunk(l)
            t0 = time.perf_counter()
            for _ in range(steps):
                model.net.trunk(l)
        return steps * batch / (time.perf_counter() - t0)

    previous = Colorizer(objective="channel_classification", network="hypercolumn", width=0.25, input_size=384)
    previous.net.unfreeze()
    dino = dict(objective="channel_classification", network="hypercolumn", trunk="dinov2-small", input_size=448)
    base = rate(previous, 96, False)
    figures = [("previous default's step (ECCV16-trunk hypercolumn, 96 px, end to end)", 96, base),
               ("DINOv2 decoder, 224 px crops, trunk run at every step", 224, rate(Colorizer(**dino), 224, False)),
               ("DINOv2 decoder, 224 px crops, cached trunk features", 224, rate(Colorizer(**dino), 224, True)),
               ("DINOv2 decoder + encoder blocks 9-12 tuned, 224 px, from cached block 8", 224,
                rate(Colorizer(**dino, trunk_tune=4), 224, True)),
               ("caching: the frozen trunk's features of a 224 px crop, once", 224,
                encode_rate(Colorizer(**dino), 224))]
    print(f"pretrained trunk, batch {batch}, {'bf16' if bf16 else 'fp32'}, compute only "
          "(ratios against the previous default's step, in images and in pixels):")
    for name, crop, r in figures:
        print(f"  {name:72s} {r:7.1f} img/s  x{r / base:.2f}  {r * crop * crop / 1e6:5.2f} Mpx/s  "
              f"x{r * crop * crop / (base * 96 * 96):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="imagefolder of photos (default: made from scikit-image samples)")
    parser.add_argument("--crop", type=int, default=176)
    parser.add_argument("--batch-size", type=int, default=0, help="default 8 on CPU, 64 on CUDA")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--small-width", type=float, default=0.25)
    parser.add_argument(
        "--steps", type=int, default=0, help="training steps timed per setting (default 3 on CPU, 30 on CUDA)"
    )
    parser.add_argument("--pipeline-batches", type=int, default=12)
    parser.add_argument("--settings", action="store_true", help="also time the CPU settings (threads, "
                        "channels_last, batch, crop) against the default recipe's")
    parser.add_argument("--pretrained-trunk", action="store_true", help="only time the DINOv2 colorizer's decoder "
                        "on cached features against running its trunk and against the previous default's step")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (30 if device.type == "cuda" else 3)
    if args.pretrained_trunk:
        bench_pretrained_trunk(max(steps, 4), device)
        return
    args.batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or str(make_photos(Path(tmp.name)))
    base = TrainConfig(
        dataset="imagefolder",
        data_dir=data_dir,
        crop=args.crop,
        batch_size=args.batch_size,
        shuffle_buffer=64,
        num_workers=args.num_workers,
    )
    print(
        f"device {device}, {torch.get_num_threads()} torch threads, crop {args.crop}, batch {args.batch_size}, data {data_dir}"
    )

    p0 = bench_pipeline(dataclasses.replace(base, num_workers=0), args.pipeline_batches)
    pn = bench_pipeline(base, args.pipeline_batches)
    print(
        f"pipeline: {p0:7.1f} img/s in the main process, {pn:7.1f} img/s with {args.num_workers} workers "
        f"(x{pn / p0:.2f})"
    )

    results = {}
    for width in (1.0, args.small_width):
        compute, _ = bench_train(base, width, steps, device, fed=False)
        fed, wait = bench_train(base, width, steps, device, fed=True)
        results[width] = compute
        idle = "GPU idle" if device.type == "cuda" else "waiting for data"
        print(
            f"train width {width:g}: {compute:7.1f} img/s compute only, {fed:7.1f} img/s fed by the pipeline "
            f"({wait:.0%} of the time {idle}; pipeline/compute ratio x{pn / compute:.1f})"
        )
    print(f"small/full speed-up: x{results[args.small_width] / results[1.0]:.1f}")
    if args.settings:
        bench_settings(base, args.small_width, max(steps, 4), device)


def bench_settings(base: TrainConfig, width: float, steps: int, device: torch.device) -> None:
    """Compute-only training images/s of the ``width`` network under each CPU setting,
    against the default recipe's settings (measured first and last; their mean is the
    baseline, their spread says how steady the machine was)."""
    threads = torch.get_num_threads()
    recipe = dataclasses.replace(base, crop=128, batch_size=16)
    native = "native" if cpu_has_bf16() else "emulated: no AVX512-BF16 or AMX"
    variants = [  # (name, config, threads, channels_last, bf16)
        ("fp32: %d threads, contiguous, batch 16, crop 128" % threads, recipe, threads, False, False),
        ("channels_last", recipe, threads, True, False),
        (f"bf16 autocast ({native})", recipe, threads, False, True),
        ("bf16 + channels_last (mixed_precision auto)", recipe, threads, True, True),
        ("1 thread", recipe, 1, False, False),
        ("batch 8", dataclasses.replace(recipe, batch_size=8), threads, False, False),
        ("batch 32", dataclasses.replace(recipe, batch_size=32), threads, False, False),
        ("crop 96", dataclasses.replace(recipe, crop=96), threads, False, False),
        ("crop 176", dataclasses.replace(recipe, crop=176, resize=256), threads, False, False),
        ("fp32 again", recipe, threads, False, False),
    ]
    figures = []
    try:
        for name, cfg, n_threads, cl, bf16 in variants:
            torch.set_num_threads(n_threads)
            rate, _ = bench_train(cfg, width, steps, device, fed=False, channels_last=cl, bf16=bf16)
            figures.append((name, cfg, rate))
    finally:
        torch.set_num_threads(threads)
    baseline = (figures[0][2] + figures[-1][2]) / 2
    print(f"CPU settings, width {width:g}, compute only (baseline {baseline:.1f} img/s; first and last "
          f"recipe runs {figures[0][2]:.1f} and {figures[-1][2]:.1f}):")
    for name, cfg, rate in figures:
        pixels = rate * cfg.crop * cfg.crop / 1e6
        print(f"  {name:52s} {rate:7.1f} img/s  {pixels:6.2f} Mpx/s  x{rate / baseline:.2f} img/s")


if __name__ == "__main__":
    main()
