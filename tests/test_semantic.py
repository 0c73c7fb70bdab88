import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from colorizer.color import lab_to_rgb, rgb_to_lab
from colorizer.model import Colorizer
from evaluation.semantic import (
    accuracy,
    labelled_folder,
    main,
    markdown_table,
    semantic_check,
    to_gray,
    train_classifier,
)

HUES = {"R": 30.0, "G": 150.0, "B": 270.0}  # hue angle in the ab plane, degrees


def hue_image(label, seed, side=24):
    """A textured photo whose class is its hue alone: random smooth L (the same law for
    every class) with a constant chroma-35 ab at the class's hue angle."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 4, 4, generator=g) * 50 + 30
    lightness = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    angle = math.radians(HUES[label])
    ab = torch.tensor([35 * math.cos(angle), 35 * math.sin(angle)]).view(1, 2, 1, 1).expand(1, 2, side, side)
    rgb = lab_to_rgb(torch.cat([lightness, ab], dim=1))[0]  # (3, H, W)
    return Image.fromarray((rgb.permute(1, 2, 0) * 255 + 0.5).byte().numpy())


def hue_set(n_per_class, first_seed=0):
    images, labels = [], []
    for i in range(n_per_class):
        for label in HUES:
            images.append(hue_image(label, first_seed + 10 * i + len(labels)))
            labels.append(label)
    return images, labels


def by_mean_hue(images):
    """A hand-made classifier: the class whose hue is nearest the image's mean ab angle.
    A gray image has ab = 0, angle 0, which is nearest R (30 degrees)."""
    out = []
    for im in images:
        lab = rgb_to_lab(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None])
        a, b = lab[0, 1].mean().item(), lab[0, 2].mean().item()
        angle = math.degrees(math.atan2(b, a)) % 360 if math.hypot(a, b) > 2 else 0.0
        out.append(min(HUES, key=lambda k: min(abs(angle - HUES[k]), 360 - abs(angle - HUES[k]))))
    return out


def tiny_model(**kw):
    torch.manual_seed(0)
    return Colorizer(width=0.125, input_size=32, **kw).eval()


def test_accuracy_hand_counts():
    images, labels = hue_set(2)
    assert accuracy(by_mean_hue, images, labels) == 1.0
    wrong = ["G" if y == "R" else y for y in labels]  # two of six labels changed
    assert accuracy(by_mean_hue, images, wrong, batch_size=4) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        accuracy(by_mean_hue, images[:3], labels[:2])


def test_to_gray_keeps_lightness_and_drops_colour():
    img = hue_image("G", 3)
    gray = np.asarray(to_gray(img))
    assert gray.shape == (24, 24, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    lab = lambda x: rgb_to_lab(torch.from_numpy(np.array(x)).permute(2, 0, 1)[None])  # noqa: E731
    assert torch.allclose(lab(gray)[0, 0], lab(img)[0, 0], atol=0.6)  # L to 8-bit rounding


def test_semantic_check_rows_with_hand_classifier(monkeypatch):
    images, labels = hue_set(3)
    model = tiny_model()
    calls = []
    original = model.analyze
    monkeypatch.setattr(model, "analyze", lambda im, *a, **k: calls.append(1) or original(im, *a, **k))
    rows = semantic_check(by_mean_hue, images, labels, {"tiny": model}, [0.2, 1.0])
    assert [r["name"] for r in rows] == ["gray", "tiny T=0.2", "tiny T=1", "real"]
    assert len(calls) == len(images)  # one network run per photo, two decodes
    by_name = {r["name"]: r for r in rows}
    assert by_name["real"]["accuracy"] == 1.0 and by_name["real"]["correct"] == 9
    assert by_name["gray"]["accuracy"] == pytest.approx(1 / 3)  # gray is always "R"
    assert all(r["n"] == 9 for r in rows)
    with pytest.raises(ValueError, match="as many labels"):
        semantic_check(by_mean_hue, images, labels[:-1])


def test_semantic_check_regression_model_has_one_row():
    images, labels = hue_set(1)
    rows = semantic_check(by_mean_hue, images, labels, {"reg": tiny_model(objective="regression")}, [0.1, 0.5])
    assert [r["name"] for r in rows] == ["gray", "reg (regression)", "real"]


def test_trained_classifier_needs_colour():
    train_images, train_labels = hue_set(10, first_seed=0)
    test_images, test_labels = hue_set(4, first_seed=1000)
    classify = train_classifier(train_images, train_labels, size=16, epochs=12, width=8, batch_size=10, lr=1e-2)
    assert classify.classes == ["B", "G", "R"]
    rows = {r["name"]: r["accuracy"] for r in semantic_check(classify, test_images, test_labels)}
    assert rows["real"] >= 0.9
    assert rows["gray"] <= 0.6  # lightness alone does not tell the classes apart
    again = train_classifier(train_images, train_labels, size=16, epochs=12, width=8, batch_size=10, lr=1e-2)
    assert again(test_images) == classify(test_images)  # deterministic for a seed


def test_train_classifier_rejects_bad_input():
    images, labels = hue_set(1)
    with pytest.raises(ValueError, match="multiple of 8"):
        train_classifier(images, labels, size=12)
    with pytest.raises(ValueError, match="as many labels"):
        train_classifier(images, labels[:1])


def test_labelled_folder_splits_by_glob(tmp_path):
    for name in ["A001.jpeg", "A010.jpeg", "B020.png", "B021.png", "CX30.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    train, test = labelled_folder(tmp_path)
    assert [(p.name, y) for p, y in train] == [("A001.jpeg", "A"), ("B021.png", "B")]
    assert [(p.name, y) for p, y in test] == [("A010.jpeg", "A"), ("B020.png", "B"), ("CX30.jpg", "C")]
    _, test2 = labelled_folder(tmp_path, label_chars=2, test_glob="C*")
    assert [y for _, y in test2] == ["CX"]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        labelled_folder(tmp_path / "missing")


def test_markdown_table():
    table = markdown_table([{"name": "gray", "accuracy": 0.25, "correct": 1, "n": 4}], majority=0.5)
    assert table.splitlines() == [
        "| input to the classifier | accuracy | correct |",
        "|---|---:|---:|",
        "| (always the most common class) | 0.500 | |",
        "| gray | 0.250 | 1/4 |",
    ]


def test_main_end_to_end(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(1, 13):
        for label in HUES:
            hue_image(label, 100 * i + ord(label)).save(folder / f"{label}{i:03d}.png")
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    out = tmp_path / "out"
    rc = main(["--data-dir", str(folder), "--model", str(model_dir), "--temperature", "0.38", "--size", "16",
               "--epochs", "2", "--out", str(out), "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| gray |" in printed and f"| {model_dir} T=0.38 |" in printed and "| real |" in printed
    saved = json.loads((out / "semantic.json").read_text())
    assert saved["train"] == 33 and saved["test"] == 3  # numbers 010 of each class are held out
    assert saved["classes"] == ["B", "G", "R"]
    assert [r["name"] for r in saved["rows"]] == ["gray", f"{model_dir} T=0.38", "real"]
    assert (out / "semantic.md").read_text().startswith("| input to the classifier |")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data-dir", "{tmp}/missing"], "not a folder"),
        (["--data-dir", "{tmp}", "--test-glob", "*.nothing"], "need photos both matching"),
        (["--data-dir", "{tmp}", "--temperature", "-1"], "--temperature must be in [0, 1]"),
    ],
)
def test_main_errors_are_one_line(tmp_path, capsys, args, message):
    hue_image("R", 0).save(tmp_path / "R001.png")
    assert main([a.format(tmp=tmp_path) for a in args] + ["-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
