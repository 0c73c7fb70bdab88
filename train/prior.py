"""The empirical prior over ab (or uv) bins of a data set: ``python -m train.prior``.

Streams N photos, converts each (short side resized to ``--size``, the whole photo) to
Lab with ``colorizer.color.rgb_to_lab``, counts every pixel in its nearest ab bin
(``colorizer.bins.PriorCounter``; for ``--objective classification --color-space yuv``,
in its nearest uv bin) and writes a JSON file with the prior (sums to 1)
and the rebalancing weights derived from it. Training reads it with
``--prior FILE`` and saves the prior in the model's config (``Colorizer(prior=...)``).

    python -m train.prior --dataset imagefolder --data-dir photos --images 1000 --out prior.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from colorizer.bins import PriorCounter, gamut_bins, rebalance_weights, rgb_to_chroma
from colorizer.errors import report_error
from colorizer.images import resize_short_side
from train.sources import iter_images
from train.config import TrainConfig
from train.data import open_rows, usable

__all__ = ["count_prior", "prior_from_config", "write_prior", "read_prior", "main"]


def count_prior(
    images: Iterable[Image.Image],
    centres: torch.Tensor,
    n_images: int,
    size: int = 176,
    device: str | torch.device = "cpu",
    progress: bool = False,
    space: str = "lab",
) -> tuple[PriorCounter, int]:
    """Count the chroma pixels of up to ``n_images`` RGB photos in the bins ``centres``
    (Q, 2) of ``space`` ("lab": ab; "yuv": scaled uv, ``colorizer.bins.rgb_to_chroma``).

    Each photo is resized so its short side is ``size`` (all pixels counted, aspect kept).
    Returns the counter and the number of photos counted.
    """
    counter = PriorCounter(centres.to(device))
    n = 0
    for img in tqdm(images, total=n_images, desc="prior", unit="img", disable=not progress):
        img = resize_short_side(img, size, upscale=True, resample=Image.Resampling.BILINEAR)
        rgb = torch.from_numpy(np.array(img)).to(device)  # (H, W, 3) uint8
        chroma = rgb_to_chroma(rgb.permute(2, 0, 1)[None], space)  # (1, 2, H, W)
        counter.update(chroma)
        n += 1
        if n >= n_images:
            break
    if n == 0:
        raise ValueError("prior: no usable photo to count")
    return counter, n


def _usable_photos(rows, cfg: TrainConfig, skipped: collections.Counter):
    for img, _ in iter_images(rows, cfg.image_column, cfg.label_column, skipped=skipped, max_pixels=cfg.max_pixels):
        rgb = usable(img, cfg, skipped)
        if rgb is not None:
            yield rgb


def prior_from_config(
    cfg: TrainConfig, n_images: int, size: int | None = None, device="cpu", progress: bool = True
) -> dict:
    """Count the prior of the training data of ``cfg`` (its data set, split, class filter
    and holdout) over ``n_images`` photos; returns the JSON-ready record (see ``write_prior``)."""
    rows = open_rows(cfg, "train")
    if cfg.shuffle_buffer > 0:
        rows = rows.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer)
    skipped: collections.Counter = collections.Counter()
    centres = gamut_bins(cfg.grid, space=cfg.bin_space)
    counter, n = count_prior(_usable_photos(rows, cfg, skipped), centres, n_images, size or cfg.crop, device, progress,
                             cfg.bin_space)
    prior = counter.prior()
    weights = rebalance_weights(prior, centres, cfg.lam)  # the model's prior_sigma default, 5
    return {
        "prior": [float(p) for p in prior],
        "class_weights": [float(w) for w in weights],
        "grid": cfg.grid,
        "space": cfg.bin_space,
        "lam": cfg.lam,
        "prior_sigma": 5.0,
        "images": n,
        "pixels": counter.total,
        "size": size or cfg.crop,
        "skipped": dict(skipped),
        "dataset": cfg.dataset,
        "config": cfg.config,
        "data_dir": cfg.data_dir,
        "split": cfg.split,
        "classes": cfg.classes,
        "holdout": cfg.holdout,
        "holdout_file": cfg.holdout_file,
        "repeat": cfg.repeat,
        "large_repeats": cfg.large_repeats,
    }


def write_prior(record: dict, path: str | Path) -> Path:
    """Write a prior record as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_prior(path: str | Path, grid: float, space: str = "lab") -> list[float]:
    """The ``(Q,)`` prior of a JSON file from ``write_prior``, checked against ``grid`` and
    the bins' ``space`` (files from before uv bins existed are ab priors)."""
    record = json.loads(Path(path).read_text())
    if "prior" not in record:
        raise ValueError(f"{path}: not a prior file (no 'prior' entry)")
    q = len(gamut_bins(grid, space=space))
    stored = record.get("space", "lab")
    if float(record.get("grid", grid)) != float(grid) or len(record["prior"]) != q or stored != space:
        raise ValueError(
            f"{path}: prior over {stored} bins of grid {record.get('grid')} ({len(record['prior'])} bins), "
            f"but the model uses {space} bins of grid {grid:g} ({q} bins)"
        )
    return [float(p) for p in record["prior"]]


def main(argv: list[str] | None = None) -> int:
    """``python -m train.prior``: count a data set's ab prior into a JSON file."""
    parser = argparse.ArgumentParser(prog="python -m train.prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="prior.json", help="output JSON file")
    parser.add_argument("--images", type=int, default=1000, help="photos to count")
    parser.add_argument("--size", type=int, default=176, help="short side the photos are resized to (pixels)")
    for name in (
        "dataset",
        "config",
        "data_dir",
        "data_files",
        "split",
        "image_column",
        "label_column",
        "classes",
        "classes_file",
        "holdout",
        "holdout_file",
        "repeat",
        "cache_dir",
        "shuffle_buffer",
        "seed",
        "grid",
        "objective",
        "color_space",
        "lam",
        "min_size",
        "gray_threshold",
        "multiscale_min_side",
        "large_repeats",
    ):
        default = getattr(TrainConfig, name)
        kind = type(default) if default is not None else str
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"as in python -m train (default: {default!r})",
        )
    parser.add_argument("--no-streaming", action="store_true", help="prepare the data set instead of streaming")
    args = vars(parser.parse_args(argv))
    out, n, size, no_stream = args.pop("out"), args.pop("images"), args.pop("size"), args.pop("no_streaming")
    try:
        cfg = TrainConfig(**args, streaming=not no_stream)
        if cfg.dataset == "imagefolder" and not (cfg.data_dir or cfg.data_files):
            raise ValueError("--dataset imagefolder needs --data-dir")
        record = prior_from_config(cfg, n, size)
    except (ValueError, OSError) as e:
        return report_error("train.prior", e)
    write_prior(record, out)
    print(
        f"wrote {out}: {record['images']} photos, {record['pixels']:,} pixels, "
        f"{sum(p > 0 for p in record['prior'])}/{len(record['prior'])} bins seen, skipped {record['skipped']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
