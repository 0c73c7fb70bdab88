from __future__ import annotations

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
from tests.training_helpers import folder, losses, tiny, write_config  # noqa: F401 - the fixture
from train.checkpoint import latest_checkpoint
from train.config import TrainConfig
from train.data import TrainBatches, load_val_images, open_rows
from train.loop import evaluate, get_lr, init_weights, main, to_lab, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_main_turns_errors_into_one_line(capsys, tmp_path):
    assert main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: error:") and "not a folder" in err[0]


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    assert get_lr(0, cfg) == pytest.approx(1e-4)
    assert get_lr(9, cfg) == pytest.approx(1e-3)
    assert get_lr(60, cfg) == pytest.approx(5.5e-4)
    assert get_lr(110, cfg) == pytest.approx(1e-4)
    assert get_lr(50, dataclasses.replace(cfg, schedule="constant")) == 1e-3


# ----------------------------------------------------------------------------- learning
@pytest.mark.parametrize("objective, space", [("classification", "lab"), ("regression", "lab"),
                                              ("regression", "yuv"), ("regression", "rgb"),
                                              ("classification", "yuv")])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(folder, tmp_path, objective, space):
    torch.manual_seed(0)
    cfg = tiny(folder, tmp_path, batch_size=6)
    rgb = next(TrainBatches(open_rows(cfg), cfg))
    model = Colorizer(objective=objective, width=0.125, input_size=64, color_space=space)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=1e-3)
    l, ab, mask = to_lab(rgb)
    assert l.shape == (6, 1, 32, 32) and ab.shape == (6, 2, 32, 32) and mask.all()
    history = []
    for _ in range(10):
        loss = model.loss(model(l), ab, mask, lightness=l)
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


def test_moving_average_is_checkpointed_resumed_and_saved(folder, tmp_path):
    whole = tiny(folder, tmp_path / "a", ema=0.5)
    train(whole)
    first = tiny(folder, tmp_path / "b", ema=0.5, max_steps=2)
    train(first)
    assert (latest_checkpoint(tmp_path / "b" / "run") / "ema.safetensors").is_file()
    train(dataclasses.replace(first, max_steps=4, resume=True))
    a = Colorizer.from_pretrained(str(tmp_path / "a" / "run" / "model"))
    b = Colorizer.from_pretrained(str(tmp_path / "b" / "run" / "model"))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
    # the saved model is the average, not the last weights
    from safetensors.torch import load_file

    last = load_file(str(latest_checkpoint(tmp_path / "a" / "run") / "model.safetensors"))
    assert any(not torch.equal(last[k], v) for k, v in a.state_dict().items() if k.startswith("net."))


def test_training_can_start_from_another_models_weights(folder, tmp_path):
    source = Colorizer(width=0.125, grid=20.0, input_size=64)
    source.save_pretrained(tmp_path / "source")
    target = Colorizer(width=0.125, grid=20.0, input_size=64, prior=[1.0] * source.num_bins, lam=0.9)
    init_weights(target, str(tmp_path / "source"))
    for name, value in source.state_dict().items():
        if name not in ("prior", "class_weights"):
            torch.testing.assert_close(target.state_dict()[name], value, msg=name)
    with pytest.raises(ValueError, match="width"):
        init_weights(Colorizer(width=0.25, grid=20.0), str(tmp_path / "source"))
    cfg = tiny(folder, tmp_path / "run", grid=20.0, init_from=str(tmp_path / "source"))
    train(cfg)
    assert losses(tmp_path / "run" / "run")


def test_checkpoints_are_also_written_by_time(folder, tmp_path, monkeypatch):
    import train.loop as loop

    ticks = iter(range(0, 10_000, 25))  # each reading of the clock: 25 s later
    monkeypatch.setattr(loop, "clock", lambda: float(next(ticks)))
    train(tiny(folder, tmp_path, ckpt_minutes=1.0, keep_checkpoints=10))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "step_0000004" in names and len(names) >= 2  # a periodic one before the final one


def test_an_eccv16_model_seeds_a_global_local_one(tmp_path):
    source = Colorizer(width=0.125, grid=20.0, input_size=64)
    source.save_pretrained(tmp_path / "source")
    target = Colorizer(width=0.125, grid=20.0, input_size=64, network="global_local")
    init_weights(target, str(tmp_path / "source"))
    for name, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], value, msg=name)
    back = tmp_path / "gl"
    target.save_pretrained(back)
    with pytest.raises(ValueError, match="cannot seed"):
        init_weights(Colorizer(width=0.125, grid=20.0, input_size=64), str(back))


def test_validation_groups_score_each_group_with_its_own_prior(folder, tmp_path):
    """--val-groups: each group's figures equal the same figures computed on that group alone
    (AuC with the group's own prior, median cast, mean colourfulness), and gray's baseline
    is written beside them."""
    from colorizer.color import lab_to_rgb
    from colorizer.metrics import colorfulness, colour_cast
    from train.loop import val_groups

    cfg = tiny(folder, tmp_path, holdout=r"(50|1|2)\.png$", val_groups="inside=/indoor/")
    names: list[str] = []
    val = load_val_images(open_rows(cfg, "val"), cfg, names=names)
    assert len(names) == len(val) == 4 and all(n.endswith(".png") for n in names)
    groups = val_groups(val, names, cfg.val_groups)
    assert set(groups) == {"inside", "other"}
    inside = [i for i, n in enumerate(names) if "/indoor/" in n]
    assert groups["inside"].index == inside and 0 < len(inside) < 4
    torch.manual_seed(0)
    model = Colorizer(width=0.125, input_size=64)
    figures = evaluate(model, val, torch.device("cpu"), batch_size=3, groups=groups)
    model.eval()
    with torch.no_grad():
        l, ab, _ = to_lab(val[inside])
        pred = F.interpolate(model.decode(model(l)), size=ab.shape[-2:], mode="bilinear", align_corners=False)
    assert figures["inside_auc"] == pytest.approx(auc(pred, ab), abs=1e-6)
    assert figures["inside_auc_rebal"] == pytest.approx(auc(pred, ab, evaluation_prior([ab]).pixel_weights(ab)), abs=1e-6)
    casts = [colour_cast(pred[i : i + 1], ab[i : i + 1]) for i in range(len(inside))]
    assert figures["inside_cast"] == pytest.approx(float(np.median(casts)), abs=1e-5)
    rgb = (lab_to_rgb(torch.cat([l, pred], 1)).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert figures["inside_colorfulness"] == pytest.approx(np.mean([colorfulness(x) for x in rgb]), abs=1e-4)
    gray = evaluate(None, val, torch.device("cpu"), groups=groups)
    assert "val_loss" not in gray and gray["inside_colorfulness"] < 0.5  # gray up to 8-bit rounding
    assert gray["inside_cast"] == pytest.approx(
        float(np.median([colour_cast(torch.zeros_like(ab[i : i + 1]), ab[i : i + 1]) for i in range(len(inside))])),
        abs=1e-5)
    with pytest.raises(ValueError, match="NAME=REGEX"):
        val_groups(val, names, "inside")

    train(dataclasses.replace(cfg, val_every=2))
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "val.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"cpu_s", "elapsed_s", "inside_auc", "other_cast", "other_colorfulness"} <= set(rows[0])
    assert 0 < float(rows[0]["cpu_s"]) < float(rows[1]["cpu_s"])
    baseline = json.loads((tmp_path / "run" / "val_baseline.json").read_text())
    assert baseline["groups"] == {"inside": len(inside), "other": 4 - len(inside)}
    assert baseline["gray"]["inside_auc"] == pytest.approx(gray["inside_auc"])
    assert baseline["truth_colorfulness"]["inside"] > 0


def test_training_stops_at_its_cpu_budget(folder, tmp_path, monkeypatch):
    """--max-cpu-hours: the run stops (with its final validation, checkpoint and model) once
    its training steps have used the budget, and the CPU time survives a resume."""
    import csv

    import train.loop as loop

    ticks = iter(range(0, 10_000, 100))  # each reading of the CPU clock: 100 CPU-s later
    monkeypatch.setattr(loop, "cpu_clock", lambda: float(next(ticks)))
    cfg = tiny(folder, tmp_path, max_steps=50, max_cpu_hours=250 / 3600, val_every=0, ckpt_every=1, keep_checkpoints=5)
    train(cfg)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["step"] == 3 and final["cpu_s"] == pytest.approx(300.0)  # 100 CPU-s a step; stops at >= 250
    rows = list(csv.DictReader(open(tmp_path / "run" / "val.csv")))
    assert [int(r["step"]) for r in rows] == [3]
    assert (tmp_path / "run" / "model").is_dir()
    train(dataclasses.replace(cfg, max_cpu_hours=450 / 3600, resume=True))
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["step"] == 5 and final["cpu_s"] == pytest.approx(500.0)


def test_log_rows_with_new_columns_rewrite_the_file_without_shifting(tmp_path):
    """A run resumed with newer code (or new --val-groups) logs more columns than its file
    has: the file is rewritten under the merged header, earlier rows blank in the new ones."""
    import csv

    from train.loop import _log_row

    path = tmp_path / "val.csv"
    _log_row(path, {"step": 1, "val_auc": 0.5})
    _log_row(path, {"step": 2, "cpu_s": 9.0, "val_auc": 0.6})
    _log_row(path, {"step": 3, "val_auc": 0.7})
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == ["step", "val_auc", "cpu_s"]
    assert [(r["step"], r["val_auc"], r["cpu_s"]) for r in rows] == [("1", "0.5", ""), ("2", "0.6", "9.0"), ("3", "0.7", "")]
    # a file an older version extended without its header: rows longer than the header
    mixed = tmp_path / "log.csv"
    mixed.write_text("step,loss\n1,0.5\n2,0.4,7.5\n")
    _log_row(mixed, {"step": 3, "loss": 0.3, "cpu_s": 9.0})
    rows = list(csv.DictReader(open(mixed)))
    assert [(r["step"], r["loss"], r["cpu_s"]) for r in rows] == [("1", "0.5", ""), ("2", "0.4", "7.5"), ("3", "0.3", "9.0")]


def test_a_checkpoint_without_cpu_time_resumes_with_an_estimate(folder, tmp_path):
    cfg = tiny(folder, tmp_path, max_steps=2, ckpt_every=1)
    train(cfg)
    state_path = latest_checkpoint(tmp_path / "run") / "state.json"
    state = json.loads(state_path.read_text())
    for key in ("cpu_s", "cpu_estimated", "run_id", "init_from"):
        state.pop(key)
    state_path.write_text(json.dumps(state))
    train(dataclasses.replace(cfg, max_steps=4, resume=True))
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert final["cpu_estimated"] and final["cpu_s"] >= state["elapsed_s"] * torch.get_num_threads()
    assert final["run_id"] and final["init_from"] is None and final["threads"] == torch.get_num_threads()


@pytest.mark.parametrize("native", [False, True])
def test_mixed_precision_auto_is_bf16_where_the_cpu_computes_in_it(folder, tmp_path, monkeypatch, native):
    """``mixed_precision: auto`` on the CPU: bf16 autocast and channels-last weights where the
    CPU has native bf16 (AVX512-BF16 or AMX), fp32 and plain layout where it would be emulated."""
    from accelerate.state import AcceleratorState

    from train import loop

    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: native)
    AcceleratorState._reset_state(True)  # one precision per process: this test sets its own
    try:
        run = loop.setup(tiny(folder, tmp_path, cpu=True))
        assert run.accelerator.mixed_precision == ("bf16" if native else "no")
        conv = next(m for m in run.raw.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == native
        assert np.isfinite(loop.train_step(run, next(run.batches), 1e-3))
    finally:
        AcceleratorState._reset_state(True)


def test_cpu_has_bf16_says_no_without_the_helpers(monkeypatch):
    from train import loop

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert loop.cpu_has_bf16() is False


def test_the_cast_weight_adds_the_weighted_cast_of_the_decoded_batch(folder, tmp_path):
    """--cast-weight: the step's loss is the colour loss plus the weight times the squared distance between
    each crop's mean decoded colour (at the model's temperature) and its true mean colour."""
    from train import loop

    run = loop.setup(tiny(folder, tmp_path, cast_weight=0.5))
    batch = next(run.batches)
    l, ab, mask = to_lab(batch)
    with torch.no_grad():
        output = run.model(l)
        colour = run.raw.loss(output, ab, mask, lightness=l)
        pred = run.raw.decode(output)
        cast = ((pred.mean((2, 3)) - ab.mean((2, 3))) ** 2).sum(1)[mask].mean()
    assert cast > 1.0  # an untrained model's crops are tinted: the term is there to see
    assert loop.train_step(run, batch, 0.0) == pytest.approx(float(colour + 0.5 * cast), rel=1e-4)


def test_a_label_head_learns_each_photos_label_beside_its_colours(folder, tmp_path):
    """--labels (Iizuka et al.'s joint classification): the classes come from the training
    photos (a column, or a pattern on the path), every batch carries its crops' labels, the
    loss adds the weighted label loss, and the saved model names its labels and reads them."""
    from train.data import label_rule

    cfg = tiny(folder, tmp_path, network="global_local", labels="column", label_weight=1.0, max_steps=3)
    rule = label_rule(cfg)
    assert rule.names == ["indoor", "outdoor"]
    by_path = tiny(folder, tmp_path, network="global_local", labels=r"/(in|out)door/")
    assert label_rule(by_path).names == ["in", "out"]
    assert label_rule(by_path)({"image": {"path": str(folder / "outdoor" / "x.png")}}) == 1
    assert label_rule(by_path)({"image": {"path": "/elsewhere/x.png"}}) == -1  # counts for colour only

    batches = TrainBatches(open_rows(cfg), cfg, labels=rule)
    rgb = next(batches)
    assert batches.last_labels.shape == (len(rgb),) and set(batches.last_labels.tolist()) <= {0, 1}

    train(cfg)
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    assert model.labels == ["indoor", "outdoor"] and model.net.label_head is not None
    reading = model.scene_labels(skimage.data.coffee())
    assert list(reading) != [] and set(reading) == {"indoor", "outdoor"} and abs(sum(reading.values()) - 1) < 1e-5
    assert all(np.isfinite(v) for v in losses(tmp_path / "run").values())

    # an eccv16 model seeds it (the label head starts fresh); a model without labels has none to read
    plain = Colorizer(width=0.125, grid=cfg.grid, input_size=64)
    plain.save_pretrained(tmp_path / "plain")
    labelled = Colorizer(width=0.125, grid=cfg.grid, input_size=64, network="global_local", labels=["a", "b", "c"])
    init_weights(labelled, str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="trained without labels"):
        plain.scene_labels(skimage.data.coffee())


def test_label_settings_are_checked_before_training(folder, tmp_path):
    with pytest.raises(ValueError, match="needs --network global_local"):
        tiny(folder, tmp_path, labels="column")
    with pytest.raises(ValueError, match="exactly one group"):
        tiny(folder, tmp_path, network="global_local", labels=r"door")
    with pytest.raises(ValueError, match="found 1 label"):
        from train.data import label_rule

        label_rule(tiny(folder, tmp_path, network="global_local", labels=r"(door)"))
    with pytest.raises(ValueError, match="labels need the global branch"):
        Colorizer(width=0.125, labels=["a", "b"])


@pytest.mark.parametrize("space", ["yuv", "rgb"])
def test_a_regression_in_another_colour_space_trains_validates_and_colorizes(folder, tmp_path, space):
    """Champati et al.'s colour spaces: --color-space yuv|rgb trains, validates (its output made
    ab with the photo's L), saves and colorizes like any model; it cannot seed a Lab one."""
    figures = train(tiny(folder, tmp_path, objective="regression", color_space=space))
    assert 0 < figures["val_auc"] <= 1
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    assert model.color_space == space
    out = model.colorize(skimage.data.coffee())
    assert out.size == (600, 400)
    with pytest.raises(ValueError, match="color_space"):
        init_weights(Colorizer(objective="regression", width=0.125, grid=model.settings["grid"]),
                     str(tmp_path / "run" / "model"))
    if space == "rgb":
        with pytest.raises(ValueError, match="--color-space rgb is regression only"):
            tiny(folder, tmp_path, color_space=space)


def test_a_classification_over_uv_bins_counts_its_prior_in_uv_and_colorizes(folder, tmp_path):
    """--objective classification --color-space yuv: the prior is counted over the uv bins
    (and a prior over ab bins is refused), the model trains, validates and colorizes."""
    from train.prior import read_prior

    figures = train(tiny(folder, tmp_path, color_space="yuv", grid=20))
    assert 0 < figures["val_auc"] <= 1
    record = json.loads((tmp_path / "run" / "prior.json").read_text())
    assert record["space"] == "yuv" and len(record["prior"]) == 81
    with pytest.raises(ValueError, match="prior over yuv bins"):
        read_prior(tmp_path / "run" / "prior.json", 20, "lab")
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    assert (model.objective, model.color_space, model.num_bins) == ("classification", "yuv", 81)
    assert model.colorize(skimage.data.coffee(), temperature=0.38).size == (600, 400)
    with pytest.raises(ValueError, match="per-channel classes are over a and b"):
        tiny(folder, tmp_path, color_space="yuv", objective="channel_classification")


def test_a_resumed_run_keeps_the_precision_it_ran_in(folder, tmp_path, monkeypatch):
    """``auto`` is decided once: a run started in bf16 resumes in bf16 on a machine that would
    choose fp32 (and the checkpoint says which)."""
    from accelerate.state import AcceleratorState

    from train import loop

    AcceleratorState._reset_state(True)
    try:
        monkeypatch.setattr(loop, "cpu_has_bf16", lambda: True)
        first = tiny(folder, tmp_path, cpu=True, max_steps=2)
        train(first)
        state = json.loads((latest_checkpoint(tmp_path / "run") / "state.json").read_text())
        assert state["precision"] == "bf16"
        AcceleratorState._reset_state(True)
        monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
        run = loop.setup(dataclasses.replace(first, max_steps=4, resume=True))
        assert run.accelerator.mixed_precision == "bf16" and run.step == 2
    finally:
        AcceleratorState._reset_state(True)
