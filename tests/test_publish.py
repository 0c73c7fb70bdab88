"""train.publish: a run folder -> a model folder with a Hub model card."""

from __future__ import annotations

import dataclasses
import json
import shlex

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from colorizer.model import Colorizer
from train.config import TrainConfig, parse_args
from train.publish import main, reproduce_command

pytestmark = pytest.mark.usefixtures("one_thread")

TABLE = (
    "| method | AuC | AuC/img | rebal. AuC | PSNR (dB) | SSIM | colourfulness | \\|Δ colourfulness\\| |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    "| gray (ab = 0) | 0.871 | 0.870 | 0.802 | 24.10 | 0.951 | 0.0 | 31.2 |\n"
    "| mean ab (of this set) | 0.880 | 0.879 | 0.799 | 24.50 | 0.955 | 9.8 | 22.0 |\n"
    "| ground truth | 1.000 | 1.000 | 1.000 | inf | 1.000 | 31.2 | 0.0 |"
)


@pytest.fixture
def run(tmp_path):
    """A finished run as ``python -m train`` leaves it: model/, config.json, final.json."""
    folder = tmp_path / "runs" / "tiny"
    torch.manual_seed(0)
    model = Colorizer(width=0.125, input_size=64)
    model.save_pretrained(folder / "model")
    cfg = TrainConfig(
        data_dir="photos", holdout=r"food/[^/]*0\.jpeg$", width=0.125, input_size=64, crop=32, resize=40,
        batch_size=4, max_steps=123, num_workers=0, flip=False, out=str(folder),
    )
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    final = {
        "step": 123, "elapsed_s": 5400.0, "val_loss": 1.2345, "val_auc": 0.8765, "val_auc_rebal": 0.6543,
        "skipped": {"grayscale": 5}, "hardware": "1 x NVIDIA H100 80GB HBM3", "torch": "2.13.0",
    }
    (folder / "final.json").write_text(json.dumps(final, indent=1) + "\n")
    return folder


@pytest.fixture
def evaluation(tmp_path):
    """An evaluation folder as ``python -m evaluation --out`` leaves it."""
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "results.md").write_text(
        f"# Colorization evaluation\n\n3 photos.\n\n{TABLE}\n\nCommand: `python -m evaluation x`\n"
    )
    (folder / "results.json").write_text(json.dumps({"settings": {"size": 256}}))
    for name, colour in (("sweep.png", (200, 30, 30)), ("contact_sheet.png", (30, 30, 200))):
        Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(folder / name)
    return folder


def test_publish_writes_model_card_and_figures(run, evaluation, tmp_path, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text("## Limitations\n\n- Seen only food.\n")
    out = tmp_path / "published"
    (out).mkdir()
    (out / "stale.txt").write_text("kept")  # only the files publish writes are replaced
    rc = main(["--run", str(run), "--to", str(out), "--evaluation", str(evaluation), "--notes", str(notes),
               "--title", "tiny test model"])
    assert rc == 0 and capsys.readouterr().out.strip() == str(out / "README.md")
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors", "config.json", "README.md", "sweep.png", "contact_sheet.png", "stale.txt",
        "training_history.json"}

    # the weights and config round-trip strictly to the run's model
    again, original = Colorizer.from_pretrained(str(out)), Colorizer.from_pretrained(str(run / "model"))
    for (name, a), (_, b) in zip(again.state_dict().items(), original.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with Image.open(out / "sweep.png") as img:
        assert img.getpixel((0, 0)) == (200, 30, 30)

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "colorizer" and card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "mit" and "image-colorization" in card.data.tags
    text = card.text
    assert "# tiny test model" in text
    assert TABLE in text and "short side of at most 256 px" in text
    assert "![AuC and colourfulness against temperature](sweep.png)" in text
    assert "](contact_sheet.png)" in text
    assert "## Training" in text and "Steps: 123 x 4 crops of 32 px" in text
    assert "1.50 h on 1 x NVIDIA H100 80GB HBM3 (torch 2.13.0)" in text
    assert "AuC 0.8765, rebalanced AuC 0.6543" in text and "validation photos' own colour prior" in text
    assert "{'grayscale': 5}" in text
    assert "## Limitations" in text and "Seen only food." in text
    n_params = sum(p.numel() for p in original.parameters())
    assert f"{n_params:,} parameters" in text

    # the reproduce command is runnable and rebuilds the run's configuration
    block = text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert block.startswith("python -m train ") and "--max-steps 123" in block and "--no-flip" in block
    argv = shlex.split(block.replace("\\\n", " "))[3:]
    assert argv[-2:] == ["--out", str(run)]
    rebuilt = dataclasses.asdict(parse_args(argv))
    recorded = json.loads((run / "config.json").read_text())
    assert rebuilt == recorded


def test_publish_replaces_stale_figures(run, evaluation, tmp_path):
    out = tmp_path / "published"
    assert main(["--run", str(run), "--to", str(out), "--evaluation", str(evaluation)]) == 0
    assert main(["--run", str(run), "--to", str(out)]) == 0  # republished without an evaluation
    assert not (out / "sweep.png").exists() and not (out / "contact_sheet.png").exists()
    text = (out / "README.md").read_text()
    assert "sweep.png" not in text and "No evaluation results are attached" in text


def test_reproduce_command_lists_only_changed_settings():
    cmd = reproduce_command(dataclasses.asdict(TrainConfig(lr=1e-3, prior="uniform", resume=True)), "runs/x")
    assert cmd == "python -m train \\\n    --prior uniform \\\n    --lr 0.001 \\\n    --out runs/x"


@pytest.mark.parametrize(
    "remove,extra,message",
    [
        ("final.json", [], "final.json not found (is --run a finished run?)"),
        ("model/model.safetensors", [], "model.safetensors not found"),
        (None, ["--evaluation", "{tmp}/nowhere"], "results.md not found"),
        (None, ["--notes", "{tmp}/missing.md"], "missing.md not found"),
    ],
)
def test_missing_inputs_are_one_line_errors(run, tmp_path, capsys, remove, extra, message):
    if remove:
        (run / remove).unlink()
    argv = ["--run", str(run), "--to", str(tmp_path / "out")] + [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.publish: error:") and message in err
    assert not (tmp_path / "out" / "README.md").exists()


def test_unreadable_final_json_is_one_line(run, tmp_path, capsys):
    (run / "final.json").write_text("{not json")
    assert main(["--run", str(run), "--to", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("train.publish: error:")


def test_publish_can_set_the_shipped_temperature(run, tmp_path):
    out = tmp_path / "shipped"
    assert main(["--run", str(run), "--to", str(out), "--temperature", "0.5"]) == 0
    assert json.loads((out / "config.json").read_text())["temperature"] == 0.5
    assert Colorizer.from_pretrained(out).temperature == 0.5
    assert "T = 0.5" in (out / "README.md").read_text()


def test_publish_can_set_the_shipped_input_size(run, tmp_path, capsys):
    out = tmp_path / "shipped"
    assert main(["--run", str(run), "--to", str(out), "--input-size", "384"]) == 0
    assert json.loads((out / "config.json").read_text())["input_size"] == 384
    assert Colorizer.from_pretrained(out).input_size == 384
    assert "384x384" in (out / "README.md").read_text()
    capsys.readouterr()
    assert main(["--run", str(run), "--to", str(tmp_path / "bad"), "--input-size", "300"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "input_size must be a multiple of 8" in err


def test_publish_records_the_training_history_of_resumed_weights(run, tmp_path):
    """A run started from published weights (--init-from) inherits their training history:
    the new folder lists every segment, the card totals them, and publishing over the very
    folder the run started from keeps the earlier segments."""
    first = tmp_path / "published"
    assert main(["--run", str(run), "--to", str(tmp_path / "unknown")]) == 0
    history = json.loads((tmp_path / "unknown" / "training_history.json").read_text())
    assert history[0]["cpu_hours"] is None  # neither counted nor the threads recorded: not guessed
    final = json.loads((run / "final.json").read_text())
    (run / "final.json").write_text(json.dumps({**final, "threads": 2}))
    assert main(["--run", str(run), "--to", str(first)]) == 0
    history = json.loads((first / "training_history.json").read_text())
    assert len(history) == 1 and history[0]["steps"] == 123 and history[0]["hours"] == 1.5
    assert history[0]["cpu_hours"] == 3.0 and history[0]["cpu_hours_estimated"] and history[0]["init_from"] is None

    config = json.loads((run / "config.json").read_text())
    config["init_from"] = str(first)
    (run / "config.json").write_text(json.dumps(config))
    final = json.loads((run / "final.json").read_text())
    final["cpu_s"] = 7200.0
    (run / "final.json").write_text(json.dumps(final))
    assert main(["--run", str(run), "--to", str(first)]) == 0  # over the folder it started from
    history = json.loads((first / "training_history.json").read_text())
    assert [h["steps"] for h in history] == [123, 123] and history[1]["init_from"] == str(first)
    assert history[1]["cpu_hours"] == 2.0 and not history[1]["cpu_hours_estimated"]
    card = (first / "README.md").read_text()
    assert "### Training history" in card and "over 2 segment(s)" in card
    assert f"In all: 3.00 hours, {history[0]['cpu_hours'] + 2.0:.2f} CPU-hours" in card

    # the same run (run_id), resumed after being published and published again: replaced, not counted twice
    final.update(run_id="abc", step=200, init_from=str(first))
    (run / "final.json").write_text(json.dumps(final))
    assert main(["--run", str(run), "--to", str(first)]) == 0
    final["step"] = 300
    (run / "final.json").write_text(json.dumps(final))
    assert main(["--run", str(run), "--to", str(first)]) == 0
    history = json.loads((first / "training_history.json").read_text())
    assert [(h["steps"], h.get("run_id")) for h in history] == [(123, None), (123, None), (300, "abc")]

    config["init_from"] = str(tmp_path / "unrecorded")
    del final["init_from"]
    (run / "final.json").write_text(json.dumps(final))
    Colorizer(width=0.125, input_size=64).save_pretrained(tmp_path / "unrecorded")
    (run / "config.json").write_text(json.dumps(config))
    assert main(["--run", str(run), "--to", str(tmp_path / "third")]) == 0
    history = json.loads((tmp_path / "third" / "training_history.json").read_text())
    assert "not available" in history[0]["note"] and "steps" not in history[0] and len(history) == 2


def test_publish_shows_group_figures_and_the_comparison(run, evaluation, tmp_path):
    for name in ("contact_sheet_food.png", "contact_sheet_non-food.png", "sweep_food.png", "sweep_non-food.png"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(evaluation / name)
    comparison = tmp_path / "compare"
    comparison.mkdir()
    (comparison / "curves.md").write_text("| run | steps | CPU-h |\n|---|---:|---:|\n| base: base | 380 | 0.100 |\n")
    Image.fromarray(np.full((20, 30, 3), 10, np.uint8)).save(comparison / "curves.png")
    out = tmp_path / "model"
    assert main(["--run", str(run), "--to", str(out), "--evaluation", str(evaluation),
                 "--comparison", str(comparison)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"contact_sheet_food.png", "contact_sheet_non-food.png", "sweep_non-food.png", "curves.png"} <= names
    assert "contact_sheet.png" not in names and "sweep.png" not in names  # per group, not the pooled ones
    card = (out / "README.md").read_text()
    assert "![non-food samples](contact_sheet_non-food.png)" in card and "](sweep_food.png)" in card
    assert "## Architectures and losses compared at equal compute" in card and "| base: base | 380 |" in card
    assert main(["--run", str(run), "--to", str(out), "--comparison", str(tmp_path / "none")]) == 2


def test_publish_stores_tuned_encoder_blocks_in_float16_when_the_colours_hold(run, tmp_path):
    """A model with trained encoder blocks (trunk_tune) ships them in float16, as the
    package's encoder file is, after checking what that does to its colorizations."""
    import safetensors

    torch.manual_seed(0)
    model = Colorizer(objective="channel_classification", network="hypercolumn", trunk="dinov2-small",
                      trunk_size=56, width=0.25, input_size=64, trunk_tune=4)
    model.save_pretrained(run / "model")
    out = tmp_path / "shipped"
    assert main(["--run", str(run), "--to", str(out)]) == 0
    with safetensors.safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    trunk = {k for k in dtypes if k.startswith("net.trunk.")}
    assert len(trunk) == 74 and {dtypes[k] for k in trunk} == {"F16"}
    assert {dtypes[k] for k in dtypes if k not in trunk} == {"F32", "I64"}  # the decoder's, its batch counts
    shipped = Colorizer.from_pretrained(out)
    weight = "net.trunk.encoder.encoder.layer.11.mlp.fc1.weight"
    assert torch.equal(shipped.state_dict()[weight], model.state_dict()[weight].half().float())
    card = (out / "README.md").read_text()
    assert "are stored in float16" in card and ("at most 0 8-bit levels" in card or "at most 1 8-bit level " in card)
