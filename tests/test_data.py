from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from colorizer.images import channel_spread
from tests.training_helpers import folder, tiny  # noqa: F401 - the fixture
from train.config import TrainConfig
from train.data import (TrainBatches, holdout_rule, load_val_images, open_rows, photo_key, subset_rule, train_crops,
                        val_crop)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_crops_single_and_multiscale(folder, tmp_path):
    cfg = tiny(folder, tmp_path)
    rng = np.random.default_rng(0)
    small = Image.fromarray(skimage.data.coffee()).resize((60, 40))
    crops = train_crops(small, rng, cfg)
    assert len(crops) == 1 and crops[0].shape == (32, 32, 3) and crops[0].dtype == np.uint8
    large = Image.fromarray(skimage.data.astronaut())  # 512 >= multiscale_min_side 256
    crops = train_crops(large, rng, cfg)
    assert len(crops) == cfg.large_crops and all(c.shape == (32, 32, 3) for c in crops)
    centre = val_crop(Image.fromarray(skimage.data.coffee()), 32)
    assert centre.shape == (32, 32, 3)
    np.testing.assert_array_equal(centre, val_crop(Image.fromarray(skimage.data.coffee()), 32))
    assert channel_spread(np.full((4, 4, 3), 7, np.uint8)) == 0


def test_holdout_splits_by_path(folder, tmp_path):
    cfg = tiny(folder, tmp_path)
    train_paths = [r["image"]["path"] for r in open_rows(cfg, "train")]
    val_paths = [r["image"]["path"] for r in open_rows(cfg, "val")]
    assert len(val_paths) == 2 and all(p.endswith("50.png") for p in val_paths)
    assert len(train_paths) == 11 and not set(train_paths) & set(val_paths)


@pytest.mark.parametrize("streaming", [True, False])
def test_large_photos_are_read_again_and_still_resume_exactly(folder, tmp_path, streaming):
    cfg = tiny(folder, tmp_path, large_repeats=3, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    names = [os.path.basename(r["image"]["path"]) for r in open_rows(cfg, "train")]
    assert len(names) == 13 and names.count("large.png") == 3  # 10 small photos once, the large one 3 times
    assert len(list(open_rows(cfg, "val"))) == 2  # validation rows are never repeated
    cfg = dataclasses.replace(cfg, num_workers=2)
    ref = TrainBatches(open_rows(cfg), cfg)
    first = [next(ref) for _ in range(8)]
    part = TrainBatches(open_rows(cfg), cfg)
    for _ in range(5):
        next(part)
    resumed = TrainBatches(open_rows(cfg), cfg, state=part.state_dict())
    for expected in first[5:]:
        torch.testing.assert_close(next(resumed), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="large-repeats"):
        dataclasses.replace(cfg, large_repeats=0).validate()


def test_batches_are_uint8_and_resume_exactly(folder, tmp_path):
    cfg = tiny(folder, tmp_path)
    ref = TrainBatches(open_rows(cfg), cfg)
    first = [next(ref) for _ in range(7)]  # crosses passes over the data (11 photos + crops)
    assert first[0].shape == (4, 32, 32, 3) and first[0].dtype == torch.uint8
    part = TrainBatches(open_rows(cfg), cfg)
    for _ in range(3):
        next(part)
    state = json.loads(json.dumps(part.state_dict()))
    resumed = TrainBatches(open_rows(cfg), cfg, state=state)
    for expected in first[3:]:
        torch.testing.assert_close(next(resumed), expected, rtol=0, atol=0)


@pytest.mark.parametrize("streaming", [True, False])  # workers stride rows (1 shard) / take whole shards
def test_resume_with_workers_keeps_the_order(folder, tmp_path, streaming):
    cfg = tiny(folder, tmp_path, num_workers=2, streaming=streaming, cache_dir=str(tmp_path / "cache"))
    assert (open_rows(cfg).num_shards >= 2) == (not streaming)
    ref = TrainBatches(open_rows(cfg), cfg)
    first = [next(ref) for _ in range(6)]
    part = TrainBatches(open_rows(cfg), cfg)
    for _ in range(3):  # odd: the resumed loader must start with the other worker
        next(part)
    resumed = TrainBatches(open_rows(cfg), cfg, state=part.state_dict())
    for expected in first[3:]:
        torch.testing.assert_close(next(resumed), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="num-workers"):
        TrainBatches(open_rows(cfg), dataclasses.replace(cfg, num_workers=1), state=part.state_dict())


def test_bad_photos_are_skipped_and_counted(tmp_path):
    root = tmp_path / "bad" / "photos"
    root.mkdir(parents=True)
    coffee = Image.fromarray(skimage.data.coffee()).resize((60, 40))
    coffee.save(root / "good.jpg")
    coffee.convert("CMYK").save(root / "cmyk.jpg")
    coffee.convert("L").save(root / "gray.png")
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(root / "gray_rgb.png")
    Image.fromarray((np.arange(40 * 60, dtype=np.uint16) * 20).reshape(40, 60)).save(root / "gray16.png")
    coffee.resize((8, 6)).save(root / "tiny.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    cfg = tiny(root.parent, tmp_path, holdout=None, batch_size=2, shuffle_buffer=0)
    batches = TrainBatches(open_rows(cfg), cfg)
    for _ in range(3):
        assert next(batches).shape == (2, 32, 32, 3)
    assert batches.skipped_total() == {"unreadable": 2, "grayscale": 3, "tiny": 1}


def test_no_usable_photo_is_a_clear_error(tmp_path):
    root = tmp_path / "gray" / "photos"
    root.mkdir(parents=True)
    Image.fromarray(skimage.data.camera()).resize((64, 64)).save(root / "camera.png")
    cfg = tiny(root.parent, tmp_path, holdout=None, shuffle_buffer=0)
    with pytest.raises(RuntimeError, match="no usable photo"):
        next(TrainBatches(open_rows(cfg), cfg))


def test_holdout_file_lists_paths_relative_to_the_data_folder(folder, tmp_path):
    listed = tmp_path / "VALIDATION.txt"
    listed.write_text("# held out\nindoor/indoor1.png\noutdoor/outdoor50.png\n\n")
    cfg = tiny(folder, tmp_path, holdout=None, holdout_file=str(listed))
    val = sorted(os.path.basename(r["image"]["path"]) for r in open_rows(cfg, "val"))
    train_names = [os.path.basename(r["image"]["path"]) for r in open_rows(cfg, "train")]
    assert val == ["indoor1.png", "outdoor50.png"]
    assert len(train_names) == 11 and not set(train_names) & set(val)
    rule = holdout_rule(dataclasses.replace(cfg, holdout=r"large"))  # both: either one holds a photo out
    assert rule(str(folder / "outdoor" / "large.png")) and rule(str(folder / "indoor" / "indoor1.png"))
    assert not rule("/x/other/indoor1.png") and not rule("/x/indoor/indoor2.png")
    assert holdout_rule(dataclasses.replace(cfg, holdout_file=None, holdout=None)) is None


def test_repeat_rules_weigh_folders_and_multiply_with_large_repeats(folder, tmp_path):
    cfg = tiny(folder, tmp_path, repeat="/indoor/=3", large_repeats=2)
    names = [os.path.basename(r["image"]["path"]) for r in open_rows(cfg, "train")]
    indoor = [n for n in names if n.startswith("indoor")]
    assert len(indoor) == 5 * 3  # 5 training photos in indoor/, three reads each
    assert names.count("large.png") == 2 and names.count("outdoor1.png") == 1
    both = tiny(folder, tmp_path, repeat="/outdoor/=2", large_repeats=3)
    names = [os.path.basename(r["image"]["path"]) for r in open_rows(both, "train")]
    assert names.count("large.png") == 6 and names.count("outdoor1.png") == 2 and names.count("indoor1.png") == 1
    assert len(list(open_rows(both, "val"))) == 2  # validation rows are never repeated


def test_subset_keeps_nested_shares_of_matching_photos_chosen_by_their_path(tmp_path):
    paths = [f"/data/photos/{folder}/{i}.jpg" for folder in ("food", "gcompris") for i in range(400)]
    share = {}
    for f in (0.25, 0.5, 1.0):
        reads = subset_rule(TrainConfig(data_dir="/data/photos", subset=f"^(?!.*/food/)={f}"))
        counts = [reads(p) for p in paths]
        assert counts[:400] == [1] * 400  # food/ matches no rule: read as before
        share[f] = {p for p, n in zip(paths, counts) if n}
        assert {n for n in counts[400:]} <= {0, round(1 / f)}  # kept ones read 1/F times as often
        assert abs(len(share[f]) - 400 - 400 * f) <= 40  # about F of the 400 others kept
    assert share[0.25] <= share[0.5] <= share[1.0]  # a smaller share is a subset of a larger one
    # the choice is the photo's path under the data folder: the same from another checkout or a relative path
    moved = subset_rule(TrainConfig(data_dir="/elsewhere/photos", subset="^(?!.*/food/)=0.25"))
    assert {p for p in paths if moved(p.replace("/data/", "/elsewhere/"))} == share[0.25]
    # another --subset-seed: another draw of about the same size, nested too
    other = {}
    for f in (0.25, 0.5):
        reads = subset_rule(TrainConfig(data_dir="/data/photos", subset=f"^(?!.*/food/)={f}", subset_seed=1))
        other[f] = {p for p in paths[400:] if reads(p)}
        assert abs(len(other[f]) - 400 * f) <= 40 and other[f] != share[f] - set(paths[:400])
    assert other[0.25] <= other[0.5]
    zero = subset_rule(TrainConfig(data_dir="/data/photos", subset="^(?!.*/food/)=0.25", subset_seed=0))
    assert {p for p in paths if zero(p)} == share[0.25]  # seed 0 is no seed: the first draw
    assert photo_key("/data/photos/food/1.jpg", "/data/photos") == "food/1.jpg"
    assert photo_key("/other/1.jpg", "/data/photos") == "/other/1.jpg"
    assert subset_rule(TrainConfig()) is None


def test_subset_leaves_out_photos_and_reads_the_kept_ones_more_often(folder, tmp_path):
    cfg = tiny(folder, tmp_path, subset="/indoor/=0.5", repeat="/outdoor/=2")
    reads = subset_rule(cfg)
    indoor = sorted(p.name for p in (folder / "indoor").iterdir() if p.name != "indoor50.png")
    kept = [n for n in indoor if reads(str(folder / "indoor" / n))]
    assert 0 < len(kept) < len(indoor)  # a share of the 5 training photos (the hash of 5 fixed names)
    names = [os.path.basename(r["image"]["path"]) for r in open_rows(cfg, "train")]
    assert sorted(n for n in names if n.startswith("indoor")) == sorted(kept * 2)
    assert names.count("outdoor1.png") == 2  # other rules unchanged
    assert len(list(open_rows(cfg, "val"))) == 2  # the held-out photos are not subsampled
    batches = TrainBatches(open_rows(cfg, "train"), cfg)
    next(batches)
    assert len(batches.last_sources) == cfg.batch_size
    assert all(s.split("/")[0] in ("indoor", "outdoor") and s.endswith(".png") for s in batches.last_sources)
    assert all(s.split("/")[1] in kept for s in batches.last_sources if s.startswith("indoor/"))
