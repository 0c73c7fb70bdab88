"""train.config: every setting an option, config files, validation before training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import colorizer
from train.config import (TrainConfig, build_parser, load_config_file, parse_args, parse_groups, parse_repeat,
                          parse_subset)


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
        (["--data-dir", "x", "--cast-weight", "-1"], "--cast-weight must be >= 0"),
        (["--data-dir", "x", "--cast-weight", "nan"], "--cast-weight must be >= 0"),
        (["--data-dir", "x", "--cast-weight", "0.01", "--temperature", "0"], "no gradient"),
    ],
)
def test_bad_settings_fail_before_training(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


@pytest.mark.parametrize(
    "spec,message",
    [("food", "REGEX=N"), ("=2", "REGEX=N"), ("a=x", "whole number"), ("a=0", ">= 1"), ("(=2", "bad regular"), (";", "no rule")],
)
def test_bad_repeat_rules_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_repeat(spec)
    with pytest.raises(ValueError, match=message):
        parse_args(["--data-dir", "x", "--repeat", spec])


def test_repeat_rules_parse_with_the_last_equals_sign():
    rules = parse_repeat("^(?!.*/food/)=2; wall(papers)?/=3")
    assert [(p.pattern, n) for p, n in rules] == [("^(?!.*/food/)", 2), ("wall(papers)?/", 3)]
    assert rules[0][0].search("/x/photos/gcompris/a.webp") and not rules[0][0].search("/x/photos/food/A1.jpeg")


@pytest.mark.parametrize(
    "spec,message",
    [("x", "REGEX=F"), ("=0.5", "REGEX=F"), ("a=half", "not a fraction"), ("a=0", "in \\(0, 1\\]"),
     ("a=1.5", "in \\(0, 1\\]"), ("a=nan", "in \\(0, 1\\]"), ("(=0.5", "bad regular"), (";", "no rule")],
)
def test_bad_subset_rules_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_subset(spec)
    with pytest.raises(ValueError, match=message):
        parse_args(["--data-dir", "x", "--subset", spec])


def test_subset_draw_is_the_seed_only_with_a_subset_and_a_nonzero_seed():
    from train.config import subset_draw

    assert subset_draw(None, 3) is None  # without --subset the seed chooses nothing
    assert subset_draw("x=0.5", 0) is None and subset_draw("x=0.5", None) is None  # the hash of the path alone
    assert subset_draw("x=0.5", 2) == 2


def test_subset_rules_parse_with_the_last_equals_sign():
    rules = parse_subset("^(?!.*/food/)=0.25;a=b=1")
    assert [(p.pattern, f) for p, f in rules] == [("^(?!.*/food/)", 0.25), ("a=b", 1.0)]


@pytest.mark.parametrize(
    "spec,message",
    [("food", "NAME=REGEX"), ("=x", "NAME=REGEX"), ("a=", "NAME=REGEX"), ("other=x", "taken"), ("val=x", "taken"),
     ("a=x;a=y", "taken"), ("a=(", "bad regular"), (";", "no group")],
)
def test_bad_validation_groups_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_groups(spec)
    with pytest.raises(ValueError, match=message):
        parse_args(["--data-dir", "x", "--val-groups", spec])


def test_validation_groups_split_at_the_first_equals_sign_and_budget_is_checked():
    assert [(n, p.pattern) for n, p in parse_groups("food=(^|/)food/; sky = a=b")] == [("food", "(^|/)food/"),
                                                                                        ("sky", " a=b")]
    with pytest.raises(ValueError, match="max-cpu-hours"):
        parse_args(["--data-dir", "x", "--max-cpu-hours", "-1"])


def test_holdout_file_ema_and_checkpoint_minutes_are_checked(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        parse_args(["--data-dir", "x", "--holdout-file", str(tmp_path / "none.txt")])
    with pytest.raises(ValueError, match="--ema"):
        parse_args(["--data-dir", "x", "--ema", "1.0"])
    with pytest.raises(ValueError, match="--ckpt-minutes"):
        parse_args(["--data-dir", "x", "--ckpt-minutes", "-1"])
    with pytest.raises(ValueError, match="either"):
        parse_args(["--data-dir", "x", "--holdout", "a", "--val-dir", "y"])


def test_the_model_settings_of_training_are_the_models_own():
    """Each ``Colorizer`` parameter is a training setting of the same name and default, or
    one that training leaves to the model (``MODEL_ONLY``): one owner for each."""
    import dataclasses
    import inspect

    from colorizer.model import Colorizer
    from train.config import MODEL_ONLY, model_settings

    params = {k: p.default for k, p in inspect.signature(Colorizer.__init__).parameters.items() if k != "self"}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(MODEL_ONLY) <= set(params)
    converted = {"semantic_width": (None, 0.0), "trunk_blocks": (None, "4,8,12")}  # the model's form, the flag's
    for name, default in params.items():
        if name in MODEL_ONLY:
            continue
        assert name in fields, f"Colorizer({name}=...) has no training setting"
        assert (default, fields[name]) == converted.get(name, (default, default)), name
    settings = model_settings(TrainConfig(objective="regression", trunk_blocks="2,12"), prior=None, labels=None)
    assert settings["rebalance"] is None and settings["trunk_blocks"] == [2, 12]
    assert Colorizer(**{**settings, "width": 0.125}).rebalance is False  # the baselines' plain L2


def test_rebalancing_a_regression_outside_lab_is_refused_in_training_and_said_by_the_model():
    from colorizer.model import Colorizer

    with pytest.raises(ValueError, match="a --color-space yuv regression has none"):
        TrainConfig(dataset="imagefolder", data_dir=".", objective="regression", color_space="yuv",
                    rebalance=True).validate()
    with pytest.warns(UserWarning, match="no ab bins to rebalance over"):
        model = Colorizer(width=0.125, objective="regression", color_space="yuv", rebalance=True)
    assert model.rebalance is False


def test_the_pretrained_trunk_trains_only_its_last_blocks():
    base = dict(dataset="imagefolder", data_dir=".", network="hypercolumn", trunk="dinov2-small")
    with pytest.raises(ValueError, match="train its last blocks with --trunk-tune N"):
        TrainConfig(**base, train_trunk=True).validate()
    TrainConfig(**base, trunk_tune=4).validate()
    with pytest.raises(ValueError, match="--trunk-tune.*got 2"):
        TrainConfig(**base, trunk_tune=2).validate()
    with pytest.raises(ValueError, match="--trunk-tune trains blocks of the pretrained trunk"):
        TrainConfig(dataset="imagefolder", data_dir=".", network="hypercolumn", trunk_tune=4).validate()
    with pytest.raises(ValueError, match="--trunk-lr must be positive"):
        TrainConfig(**base, trunk_tune=4, trunk_lr=0).validate()
    with pytest.raises(ValueError, match="--trunk-lr must be positive"):
        TrainConfig(**base, trunk_tune=4, trunk_lr=float("nan")).validate()


def test_every_shipped_recipe_is_valid_and_starts_from_something_that_exists(tmp_path):
    """Each recipe of train/configs parses and validates as is (no command-line overrides; the
    data's held-out list, outside the project, stood in for by an empty file), and its init_from
    is a shipped model or the model another recipe writes (so a chain of recipes retrains the
    default from the shipped frozen start)."""
    recipes = sorted((Path(__file__).parents[1] / "train" / "configs").glob("*.yaml"))
    assert len(recipes) >= 5
    (tmp_path / "VALIDATION.txt").write_text("")
    configs = {}
    for path in recipes:  # parse_args validates
        held_out = load_config_file(path).get("holdout_file")
        assert held_out in (None, "../shared/data/VALIDATION.txt"), path.name
        stand_in = ["--holdout-file", str(tmp_path / "VALIDATION.txt")] if held_out else []
        configs[path.name] = parse_args(["--config-file", str(path), *stand_in])
    outputs = {str(Path(cfg.out) / "model") for cfg in configs.values()}
    for name, cfg in configs.items():
        if cfg.init_from:
            assert cfg.init_from in colorizer.available_models() or cfg.init_from in outputs, (name, cfg.init_from)
            assert cfg.init_from != str(Path(cfg.out) / "model"), name  # never its own output
