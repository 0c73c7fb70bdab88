"""evaluation.curves: learning curves of training runs against CPU-hours."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from evaluation.curves import main, read_curve

BASELINE = {"photos": 5, "size": 176, "groups": {"food": 2, "other": 3},
            "gray": {"food_auc": 0.9, "food_auc_rebal": 0.7, "food_cast": 14.0, "other_auc": 0.85,
                     "other_auc_rebal": 0.65, "other_cast": 15.0},
            "truth_colorfulness": {"food": 36.0, "other": 48.0}}


def write_run(folder, cpu_s, other_auc, lam=0.75, baseline=BASELINE):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"lam": lam, "out": str(folder), "width": 0.25}))
    (folder / "val_baseline.json").write_text(json.dumps(baseline))
    with open(folder / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "elapsed_s", "cpu_s", "val_loss", "val_auc", "val_auc_rebal", "food_auc", "food_auc_rebal",
                    "food_cast", "food_colorfulness", "other_auc", "other_auc_rebal", "other_cast", "other_colorfulness"])
        for i, (c, a) in enumerate(zip(cpu_s, other_auc)):
            w.writerow([100 * (i + 1), c, c, 3.0, 0.8, 0.7, 0.9, 0.75, 8.0, 30.0, a, 0.7, 9.0, 25.0])


def test_table_compares_runs_at_equal_compute_and_plots(tmp_path, capsys):
    write_run(tmp_path / "base", [360, 720, 1080], [0.80, 0.84, 0.86])
    write_run(tmp_path / "lam0.5", [360, 720], [0.70, 0.78], lam=0.5)
    table = tmp_path / "curves.md"
    assert main([str(tmp_path / "lam0.5"), "--base", str(tmp_path / "base"), "--out", str(tmp_path / "c.png"),
                 "--table", str(table)]) == 0
    text = table.read_text()
    lines = text.splitlines()
    assert lines[2].startswith("| gray (ab = 0) |") and "| 0.850 |" in lines[2] and "real 48.0" in lines[2]
    assert lines[3].startswith("| base | 300 | 0.300 |") and "| 0.860 |" in lines[3]
    assert lines[4].startswith("| lam0.5: lam=0.5 | 200 | 0.200 |") and "| 0.780 |" in lines[4]
    equal = text.split("At equal compute (0.200 CPU-hours each")[1]
    assert "| base | 200 | 0.200 |" in equal and "| 0.840 |" in equal  # base interpolated at 720 CPU-s
    with Image.open(tmp_path / "c.png") as img:
        assert img.width > 1000 and img.height > 500
    assert "wrote" in capsys.readouterr().out
    curve = read_curve(tmp_path / "base")
    assert curve.at("other_auc", 540 / 3600) == pytest.approx(0.82)


def test_runs_validated_on_different_photos_are_refused(tmp_path, capsys):
    write_run(tmp_path / "a", [360, 720, 1080], [0.8, 0.8, 0.8])
    write_run(tmp_path / "b", [360, 720, 1080], [0.8, 0.8, 0.8], baseline={**BASELINE, "photos": 6})
    (tmp_path / "c").mkdir()
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c.png")]) == 2
    assert "different photos" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluation.curves: error:") and "no val.csv" in err[0]


def test_revalidated_steps_keep_the_later_row_and_a_run_needs_its_baseline(tmp_path, capsys):
    write_run(tmp_path / "a", [360, 720, 1080], [0.80, 0.81, 0.82])
    with open(tmp_path / "a" / "val.csv", "a") as f:  # resumed from step 200's checkpoint: 300 validated again
        f.write("300,1000,1000,3.0,0.8,0.7,0.9,0.75,8.0,30.0,0.90,0.7,9.0,25.0\n")
    curve = read_curve(tmp_path / "a")
    assert list(curve.steps) == [100, 200, 300] and curve.columns["other_auc"][-1] == pytest.approx(0.90)
    (tmp_path / "a" / "val_baseline.json").unlink()
    assert main([str(tmp_path / "a"), "--out", str(tmp_path / "c.png")]) == 2
    assert "no val_baseline.json" in capsys.readouterr().err


def test_a_second_training_step_is_drawn_on_from_the_run_it_started_from(tmp_path, capsys):
    """--continues RUN=START: RUN's steps and CPU time count from START's end, so at equal
    compute it is compared with what both steps cost; a name that is not a run is refused."""
    write_run(tmp_path / "base", [360, 720, 1080], [0.80, 0.84, 0.86])
    write_run(tmp_path / "more", [360, 720], [0.87, 0.88], lam=0.5)
    write_run(tmp_path / "long", [720, 1440, 2160], [0.80, 0.83, 0.85], lam=0.6)
    out = tmp_path / "c.png"
    assert main([str(tmp_path / "base"), str(tmp_path / "more"), str(tmp_path / "long"), "--out", str(out),
                 "--continues", "more=base"]) == 0
    text = capsys.readouterr().out
    assert "| more: lam=0.5 (after base) | 500 | 0.500 |" in text and "| 0.880 |" in text
    equal = text.split("At equal compute (0.300 CPU-hours each")[1]
    # 0.3 CPU-h is base's end, where the continuation starts: its figures there are base's last
    assert "| more: lam=0.5 (after base) | 300 | 0.300 |" in equal and "| long: lam=0.6 | 150 | 0.300 |" in equal
    assert main([str(tmp_path / "base"), str(tmp_path / "more"), "--out", str(out), "--continues", "more=nope"]) == 2
    assert "--continues 'more=nope'" in capsys.readouterr().err
    after = read_curve(tmp_path / "more").after(read_curve(tmp_path / "base"))
    assert list(after.steps) == [100, 200, 300, 400, 500] and after.inherited == 3  # its line starts at base's end


def test_a_note_is_appended_to_the_table_and_a_missing_note_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "base", [360, 720, 1080], [0.80, 0.84, 0.86])
    note = tmp_path / "note.md"
    note.write_text("base ran on a machine with AVX512-BF16.\n\n")
    table = tmp_path / "curves.md"
    args = [str(tmp_path / "base"), "--out", str(tmp_path / "c.png"), "--table", str(table)]
    assert main(args + ["--note", str(note)]) == 0
    text = table.read_text()
    assert text.endswith("cast is the median over photos.\n\nbase ran on a machine with AVX512-BF16.\n")
    assert "base ran on" in capsys.readouterr().out  # printed as written
    assert main(args + ["--note", str(tmp_path / "none.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.md" in err[0]
