"""train: configuration, data pipeline, losses going down, checkpoints and exact resumption."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import torch.nn.functional as F

from colorizer.metrics import auc, evaluation_prior
from colorizer.model import Colorizer
from train.checkpoint import latest_checkpoint, optimizer_from_flat, optimizer_to_flat
from train.config import TrainConfig, build_parser, parse_args
from colorizer.images import channel_spread
from train.data import TrainBatches, load_val_images, open_rows, train_crops, val_crop
from train.loop import evaluate, get_lr, main, to_lab, train

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


pytestmark = pytest.mark.usefixtures("one_thread")


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


# ----------------------------------------------------------------------------- config
def test_every_setting_has_an_option_and_files_override_defaults(tmp_path):
    text = build_parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
    (tmp_path / "run.json").write_text(json.dumps({"width": 0.5, "crop": 128, "data_dir": "x"}))
    cfg = parse_args(["--config-file", str(tmp_path / "run.json"), "--crop", "96", "--no-flip"])
    assert (cfg.width, cfg.crop, cfg.flip, cfg.batch_size) == (0.5, 96, False, TrainConfig.batch_size)
    (tmp_path / "run.yaml").write_text("objective: regression\ndata_dir: x\n")
    assert parse_args(["--config-file", str(tmp_path / "run.yaml")]).objective == "regression"
    (tmp_path / "bad.json").write_text(json.dumps({"widht": 0.5}))
    with pytest.raises(ValueError, match="unknown settings"):
        parse_args(["--config-file", str(tmp_path / "bad.json")])


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--crop", "100", "--data-dir", "x"], "multiple of 8"),
        (["--crop", "512", "--data-dir", "x"], "must not exceed"),
        ([], "needs --data-dir"),
        (["--data-dir", "x", "--prior", "nope.json"], "no such file"),
    ],
)
def test_bad_settings_fail_before_training(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_main_turns_errors_into_one_line(capsys, tmp_path):
    assert main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a folder" in err[0]


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert get_lr(0, cfg) == pytest.approx(1e-4)
    assert get_lr(9, cfg) == pytest.approx(1e-3)
    assert get_lr(60, cfg) == pytest.approx(5.5e-4)
    assert get_lr(110, cfg) == pytest.approx(1e-4)
    assert get_lr(50, dataclasses.replace(cfg, schedule="constant")) == 1e-3


# ----------------------------------------------------------------------------- data
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


# ----------------------------------------------------------------------------- learning
@pytest.mark.parametrize("objective", ["classification", "regression"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(folder, tmp_path, objective):
    torch.manual_seed(0)
    cfg = tiny(folder, tmp_path, batch_size=6)
    rgb = next(TrainBatches(open_rows(cfg), cfg))
    model = Colorizer(objective=objective, width=0.125, input_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=1e-3)
    l, ab, mask = to_lab(rgb)
    assert l.shape == (6, 1, 32, 32) and ab.shape == (6, 2, 32, 32) and mask.all()
    history = []
    for _ in range(8):
        loss = model.loss(model(l), ab, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < 0.8 * history[0], history


def test_validation_rebalances_with_the_validation_set_prior(folder, tmp_path):
    """val_auc_rebal is colorizer.metrics' one definition: the validation photos' own prior,
    whatever the model's training prior (uniform here, which would make it equal val_auc)."""
    cfg = tiny(folder, tmp_path, holdout=r"(50|1|2)\.png$")
    val = load_val_images(open_rows(cfg, "val"), cfg)
    assert val.shape == (4, 32, 32, 3)
    torch.manual_seed(0)
    model = Colorizer(width=0.125, input_size=64)  # prior None: uniform
    figures = evaluate(model, val, torch.device("cpu"), batch_size=3)
    model.eval()
    with torch.no_grad():
        l, ab, _ = to_lab(val)
        pred = F.interpolate(model.decode(model(l)), size=ab.shape[-2:], mode="bilinear", align_corners=False)
    expected = auc(pred, ab, evaluation_prior([ab]).pixel_weights(ab))
    assert figures["val_auc_rebal"] == pytest.approx(expected, abs=1e-6)
    assert figures["val_auc"] == pytest.approx(auc(pred, ab), abs=1e-6)
    assert abs(figures["val_auc_rebal"] - figures["val_auc"]) > 1e-3


def test_training_resumes_exactly_and_saves_on_interrupt(folder, tmp_path, monkeypatch):
    whole = tiny(folder, tmp_path / "a")
    figures = train(whole)
    run_a = tmp_path / "a" / "run"
    assert set(figures) == {"val_loss", "val_auc", "val_auc_rebal"} and 0 < figures["val_auc"] <= 1
    assert (run_a / "model" / "model.safetensors").is_file() and (run_a / "samples").is_dir()
    model = Colorizer.from_pretrained(str(run_a / "model"))
    prior = json.loads((run_a / "prior.json").read_text())["prior"]
    torch.testing.assert_close(model.prior, torch.tensor(prior, dtype=torch.float32))
    # the sample grid shows exactly what users get: input | model.colorize | truth, one photo a row
    val = load_val_images(open_rows(whole, "val"), whole).numpy()  # (2, 32, 32, 3)
    with Image.open(run_a / "samples" / "step_0000004.png") as img:
        grid = np.asarray(img)
    assert grid.shape == (2 * 32, 3 * 32, 3)
    for i, photo in enumerate(val):
        row = grid[i * 32 : (i + 1) * 32]
        np.testing.assert_array_equal(row[:, 32:64], np.asarray(model.colorize(Image.fromarray(photo))))
        np.testing.assert_array_equal(row[:, 64:], photo)
        assert (row[:, :32].max(axis=2) == row[:, :32].min(axis=2)).all()  # the input: gray

    first = tiny(folder, tmp_path / "b", max_steps=2)
    train(first)
    with pytest.raises(ValueError, match="--resume"):
        train(dataclasses.replace(first, max_steps=4))
    train(dataclasses.replace(first, max_steps=4, resume=True))
    a, b = losses(run_a), losses(tmp_path / "b" / "run")
    assert list(b) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a, b)

    calls = {"n": 0}
    real_next = TrainBatches.__next__

    def interrupting(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_next(self)

    monkeypatch.setattr(TrainBatches, "__next__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(folder, tmp_path / "c", prior=str(run_a / "prior.json")))
    ckpt = latest_checkpoint(tmp_path / "c" / "run")
    state = json.loads((ckpt / "state.json").read_text())
    assert ckpt.name == "step_0000002" and state["reason"] == "interrupted"
    monkeypatch.undo()

    # Ctrl-C (a real SIGINT) between optimizer.step() and the step count: the step is
    # finished first, so the checkpoint is step 3 with step 3's weights and resumes exactly.
    real_step = torch.optim.AdamW.step
    steps = {"n": 0}

    def signalled_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", signalled_step)
        d = tiny(folder, tmp_path / "d")
        assert main(["--config-file", str(write_config(d, tmp_path / "d.json"))]) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # restored after the loop
    ckpt = latest_checkpoint(tmp_path / "d" / "run")
    assert ckpt.name == "step_0000003" and json.loads((ckpt / "state.json").read_text())["reason"] == "interrupted"
    train(dataclasses.replace(d, resume=True))
    resumed = losses(tmp_path / "d" / "run")
    assert list(resumed) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        assert resumed[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a, resumed)

    # a second Ctrl-C in the same step stops at once, without a checkpoint of a half-done step
    def twice_signalled_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return out

    with monkeypatch.context() as m:
        m.setattr(torch.optim.AdamW, "step", twice_signalled_step)
        with pytest.raises(KeyboardInterrupt, match="no checkpoint written"):
            train(tiny(folder, tmp_path / "e", prior=str(run_a / "prior.json")))
    assert latest_checkpoint(tmp_path / "e" / "run") is None


def test_optimizer_state_round_trips_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_flat(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)
    again = torch.optim.AdamW(model.parameters(), lr=1e-3)
    again.load_state_dict(optimizer_from_flat(tensors, json.loads(json.dumps(meta))))
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(again.state_dict()["state"][0][k], v)
