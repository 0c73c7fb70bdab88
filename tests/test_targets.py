"""evaluation.targets: every evaluated model row against the quality targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.scaling import parse_target
from evaluation.targets import main, read_rows, targets_table

GRAY = {"name": "gray (ab = 0)", "model": None, "temperature": None, "auc": 0.86, "auc_rebalanced": 0.645,
        "cast": 14.0, "colorfulness": 0.0, "psnr": 21.0, "truth_colorfulness": 48.0}
TARGETS = ["auc=gray+0.015", "auc_rebalanced=gray+0.08", "cast=gray*0.5", "colorfulness=truth*0.75"]


def row(name, temperature, auc, rebal, cast, colour):
    return {"name": f"{name} T={temperature:g}", "model": name, "temperature": temperature, "auc": auc,
            "auc_rebalanced": rebal, "cast": cast, "colorfulness": colour, "psnr": 22.0}


def write_report(folder, rows, gray=GRAY):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"groups": {"non-food": [gray, *rows, dict(
        gray, name="ground truth", auc=1.0)], "food": [gray]}}))
    return folder


def reports(tmp_path):
    # targets: AuC 0.875, rebalanced 0.725, cast 7, colourfulness 36
    a = write_report(tmp_path / "sweep", [row("m", 1.0, 0.88, 0.70, 8.0, 30.0), row("m", 0.2, 0.87, 0.73, 7.0, 37.0)])
    b = write_report(tmp_path / "other", [row("n", 1.0, 0.89, 0.74, 6.0, 40.0), row("m", 1.0, 0.88, 0.70, 8.0, 30.0)])
    return a, b


def test_rows_at_every_temperature_and_their_labels(tmp_path):
    a, b = reports(tmp_path)
    rows, gray, truth = read_rows([a, Path(f"second={b / 'results.json'}")], "non-food")
    # the second report's m T=1 is the first's, figure for figure: kept once
    assert [(r.report, r.name) for r in rows] == [("sweep", "m T=1"), ("sweep", "m T=0.2"), ("second", "n T=1")]
    assert rows[1].temperature == 0.2 and rows[1].figures["auc_rebalanced"] == 0.73
    assert gray["cast"] == 14.0 and truth == 48.0


def test_the_table_marks_each_target_met_and_counts_them(tmp_path):
    a, b = reports(tmp_path)
    rows, gray, truth = read_rows([a, b], "non-food")
    table = targets_table(rows, gray, truth, "non-food", [parse_target(t) for t in TARGETS])
    lines = table.splitlines()
    assert lines[3] == "| | target | 0.875 | 0.725 | 7.0 | 36.0 |  | 4 |"
    assert lines[4] == "| sweep | m T=1 | 0.880* | 0.700 | 8.0 | 30.0 | 22.00 | 1 of 4 |"
    # the boundary counts as met (cast 7.0 <= 7.0); AuC 0.870 misses 0.875
    assert lines[5] == "| sweep | m T=0.2 | 0.870 | 0.730* | 7.0* | 37.0* | 22.00 | 3 of 4 |"
    assert lines[6] == "| other | n T=1 | 0.890* | 0.740* | 6.0* | 40.0* | 22.00 | 4 of 4 |"
    assert len([line for line in lines if line.startswith("| other | m T=1")]) == 0  # scored again: shown once
    assert "the most any row meets: 4 of 4" in table
    assert "- auc_rebalanced >= gray+0.08: met by 2 of 3 rows" in table
    assert "- auc >= gray+0.015: met by 2 of 3 rows" in table


def test_a_row_of_the_same_name_with_other_figures_is_kept(tmp_path):
    a, _ = reports(tmp_path)
    c = write_report(tmp_path / "rerun", [row("m", 1.0, 0.881, 0.70, 8.0, 30.0)])
    rows, *_ = read_rows([a, c], "non-food")
    assert [(r.report, r.name, r.figures["auc"]) for r in rows][-1] == ("rerun", "m T=1", 0.881) and len(rows) == 3
    with pytest.raises(ValueError, match="LABEL=PATH with no path"):
        read_rows([Path("x=")], "non-food")


def test_the_command_writes_the_table_and_the_figure(tmp_path, capsys):
    a, b = reports(tmp_path)
    png, md = tmp_path / "t.png", tmp_path / "t.md"
    args = [str(a), str(b), "--group", "non-food", "--out", str(png), "--table", str(md)]
    assert main(args + [a for t in TARGETS for a in ("--target", t)]) == 0
    assert md.read_text() in capsys.readouterr().out
    assert Image.open(png).size[0] > 800


@pytest.mark.parametrize("make, args, message", [
    ("gray", [], "other photos than"),
    ("none", [], "no evaluation report"),
    ("ok", ["--group", "food"], "no model row in group 'food'"),
    ("ok", ["--group", "wild"], "no evaluation group 'wild'"),
    ("ok", ["--target", "ssim=0.9"], "METRIC=VALUE"),
])  # fmt: skip
def test_errors_are_one_line(tmp_path, capsys, make, args, message):
    a, _ = reports(tmp_path)
    other = {"gray": lambda: write_report(tmp_path / "g", [row("m", 1.0, 0.9, 0.7, 8.0, 30.0)], dict(GRAY, cast=13.0)),
             "none": lambda: tmp_path / "missing", "ok": lambda: a}[make]()
    argv = [str(a), str(other), "--out", str(tmp_path / "t.png"), *args]
    if "--group" not in args:
        argv += ["--group", "non-food"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
