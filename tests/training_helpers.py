"""Small photo folders and tiny training configurations shared by the training tests."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import skimage.data
from PIL import Image

from train.config import TrainConfig

SAMPLES = [skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea, skimage.data.rocket]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of small photos cut from scikit-image samples, plus one large photo."""
    root = tmp_path_factory.mktemp("photos")
    for c, name in enumerate(["indoor", "outdoor"]):
        (root / name).mkdir()
        for i in range(6):
            img = Image.fromarray(SAMPLES[(i + c) % len(SAMPLES)]())
            w, h = img.size
            box = (i * w // 12, i * h // 14, w - (5 - i) * w // 12, h - (5 - i) * h // 14)
            img.crop(box).resize((60, 44), Image.BILINEAR).save(root / name / f"{name}{i}{'0' if i == 5 else ''}.png")
    Image.fromarray(skimage.data.astronaut()).save(root / "outdoor" / "large.png")  # 512 px: multi-scale
    return root


def tiny(folder, tmp_path, **kw) -> TrainConfig:
    base = dict(
        dataset="imagefolder",
        data_dir=str(folder),
        out=str(tmp_path / "run"),
        width=0.125,
        crop=32,
        resize=40,
        val_size=32,
        batch_size=4,
        num_workers=0,
        shuffle_buffer=8,
        prior_images=4,
        multiscale_min_side=256,
        large_crops=2,
        max_steps=4,
        log_every=1,
        val_every=0,
        ckpt_every=100,
        warmup_steps=0,
        schedule="constant",
        lr=1e-3,
        min_size=16,
        holdout=r"50\.png$",
        val_images=4,
    )
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def write_config(cfg: TrainConfig, path) -> str:
    """The configuration as a --config-file, for runs through the command line."""
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    return str(path)


def losses(run_dir) -> dict[int, float]:
    with open(run_dir / "log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


