"""evaluation.paired: two evaluations of the same photos compared photo by photo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.paired import main, paired_table, read_pairs, read_rows, summary_table

KEYS = ("auc", "auc_rebalanced", "psnr", "cast", "delta_colorfulness")


def write_report(path, rows: dict[str, list[float]], groups=None, temperature=1.0):
    """A results.json: per model row name, its auc_rebalanced per photo (the other figures fixed)."""
    n = len(next(iter(rows.values())))
    images = []
    for i in range(n):
        images.append({"name": f"p{i}.jpg", "group": (groups or ["g"] * n)[i], "rows": {
            name: {"auc": 0.9, "auc_rebalanced": values[i], "psnr": 22.0 + values[i], "cast": 10.0 - values[i],
                   "delta_colorfulness": 20.0} for name, values in rows.items()}})
    table = [{"name": "gray (ab = 0)", "model": None, "temperature": None}]
    table += [{"name": name, "model": name.split(" T=")[0], "temperature": float(name.split(" T=")[1])
               if " T=" in name else temperature} for name in rows]
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps({"table": table, "images": images}))
    return path


def test_the_table_holds_means_differences_wins_and_movers(tmp_path):
    a = write_report(tmp_path / "a", {"a T=1": [0.6, 0.7, 0.8, 0.5]})
    b = write_report(tmp_path / "b", {"b T=1": [0.65, 0.7, 0.75, 0.9]})
    table = paired_table(read_rows(a, None, None, 1.0), read_rows(b, None, None, 1.0), top=2, resamples=2000)
    lines = table.splitlines()
    assert lines[0] == "A: a T=1; B: b T=1; 4 photos"
    rebal = next(line for line in lines if line.startswith("| rebalanced AuC"))
    # differences +5, 0, -5, +40 points: mean +10; B better on 2 photos
    assert rebal.startswith("| rebalanced AuC (points) | 65.00 | 75.00 | +10.00 |") and rebal.endswith("| 2 of 4 |")
    lo, hi = [float(x) for x in rebal.split("|")[5].split(" to ")]
    assert -5 <= lo < 10 < hi <= 40
    cast = next(line for line in lines if line.startswith("| colour cast"))
    assert cast.endswith("| 2 of 4 |")  # lower is better: the photos whose cast fell
    movers = lines[lines.index("| photo | A | B | B - A |") + 2:]
    assert movers[0] == "| p3.jpg | 50.00 | 90.00 | +40.00 |" and movers[1].startswith("| p0.jpg") and len(movers) == 2


def test_the_interval_is_a_bootstrap_of_the_mean():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.02, 0.05, 400)
    a = ("a", {f"p{i}": dict.fromkeys(KEYS, 0.5) for i in range(400)})
    b = ("b", {f"p{i}": dict(dict.fromkeys(KEYS, 0.5), auc_rebalanced=0.5 + d) for i, d in enumerate(diffs)})
    row = next(line for line in paired_table(a, b, top=0).splitlines() if line.startswith("| rebalanced"))
    lo, hi = [float(x) for x in row.split("|")[5].split(" to ")]
    se = 100 * diffs.std() / np.sqrt(400)  # the normal interval is about mean +- 1.96 s.e.
    assert lo == pytest.approx(100 * diffs.mean() - 1.96 * se, abs=0.1)
    assert hi == pytest.approx(100 * diffs.mean() + 1.96 * se, abs=0.1)


def test_the_interval_in_chunks_is_the_same_draws():
    from evaluation.paired import _interval

    diff = np.random.default_rng(0).normal(size=37)
    assert _interval(diff, 1000, 3) == _interval(diff, 1000, 3, chunk=37 * 7)  # 143 chunks of 7 resamples


def test_rows_groups_and_the_command(tmp_path, capsys):
    both = write_report(tmp_path / "r", {"x T=1": [0.5, 0.6, 0.7], "y T=1": [0.6, 0.6, 0.6]},
                        groups=["food", "other", "other"])
    out = tmp_path / "t.md"
    assert main([str(both), str(both / "results.json"), "--row-a", "x T=1", "--row-b", "y T=1", "--group", "other",
                 "--table", str(out), "--top", "1"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert text == out.read_text() and "2 photos" in text and "| p2.jpg | 70.00 | 60.00 | -10.00 |" in text


@pytest.mark.parametrize("args, message", [
    (["{r}", "{r}"], "2 model rows (x T=1, y T=1)"),
    (["{r}", "{r}", "--temperature", "0.38"], "0 model rows at T=0.38"),
    (["{r}", "{nan}", "--row-a", "x T=1"], "no finite psnr for p1.jpg (None)"),
    (["{r}", "{r}", "--row-a", "x T=1", "--row-b", "z T=1"], "no row 'z T=1'"),
    (["{r}", "{r}", "--row-a", "x T=1", "--row-b", "y T=1", "--group", "wild"], "no photos in group 'wild'"),
    (["{r}", "{other}", "--row-a", "x T=1"], "other photos"),
    (["{r}", "{missing}", "--row-a", "x T=1"], "no evaluation report"),
    (["{r}", "{r}", "--row-a", "x T=1", "--row-b", "y T=1", "--resamples", "0"], "--resamples"),
])  # fmt: skip
def test_errors_are_one_line(tmp_path, capsys, args, message):
    r = write_report(tmp_path / "r", {"x T=1": [0.5, 0.6], "y T=1": [0.6, 0.6]})
    other = write_report(tmp_path / "o", {"x T=1": [0.5, 0.6, 0.7]})
    nan = write_report(tmp_path / "n", {"x T=1": [0.5, 0.6]})
    report = json.loads((nan / "results.json").read_text())
    report["images"][1]["rows"]["x T=1"]["psnr"] = None  # reports store an infinite PSNR as null
    (nan / "results.json").write_text(json.dumps(report))
    argv = [a.format(r=r, other=other, missing=tmp_path / "none", nan=nan) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_pairs_a_line_each_with_the_paired_figures(tmp_path, capsys):
    write_report(tmp_path / "reports" / "a", {"a T=1": [0.6, 0.7, 0.8, 0.5]})
    write_report(tmp_path / "reports" / "b", {"b T=1": [0.65, 0.7, 0.75, 0.9], "b T=0.38": [0.6, 0.7, 0.8, 0.5]})
    pairs = tmp_path / "pairs" / "pairs.yaml"
    pairs.parent.mkdir()
    pairs.write_text("- {label: b against a, a: ../reports/a, b: ../reports/b, row_b: b T=1}\n"
                     "- {label: colder, a: ../reports/a, row_a: a T=1, b: ../reports/b/results.json,\n"
                     "   temperature: 0.38}\n")
    read = read_pairs(pairs)
    assert read[0]["a"] == pairs.parent / "../reports/a" and read[1]["temperature"] == 0.38
    table = summary_table(read, None, resamples=2000)
    lines = table.splitlines()
    assert lines[0].startswith("| B against A | AuC (points) | rebalanced AuC (points) |") and len(lines) == 6
    # the pair's rebalanced cell holds what the two-report table gives for it
    full = paired_table(read_rows(tmp_path / "reports" / "a", None, None), read_rows(
        tmp_path / "reports" / "b", "b T=1", None), top=0, resamples=2000)
    rebal = next(line for line in full.splitlines() if line.startswith("| rebalanced")).split("|")
    cells = lines[2].split(" | ")
    assert cells[0] == "| b against a" and cells[2] == f"{rebal[4].strip()} ({rebal[5].strip()}), 2/4"
    assert lines[3].startswith("| colder | +0.00 (+0.00 to +0.00), 0/4 |")  # the same figures: no difference
    out = tmp_path / "t.md"
    assert main(["--pairs", str(pairs), "--table", str(out), "--resamples", "2000"]) == 0
    assert capsys.readouterr().out == out.read_text() == table


@pytest.mark.parametrize("text, args, message", [
    ("- {label: x, a: r}\n", [], "pair 1 needs label, a and b"),
    ("- {label: x, a: r, b: r, row: y}\n", [], "it has ['a', 'b', 'label', 'row']"),
    ("[1, 2]\n", [], "pair 1 needs label, a and b"),
    ("label: x\n", [], "a YAML list of pairs"),
    ("- {label: x, a: r, b: [\n", [], "not YAML"),
    ("- {label: x, a: r, b: nowhere, row_a: x T=1}\n", [], "no evaluation report"),
    ("- {label: x, a: r, b: r}\n", ["--row-a", "x T=1"], "--pairs names its reports"),
    ("- {label: x, a: r, b: r}\n", ["--top", "3"], "--pairs names its reports"),
    ("- {label: x, a: r, b: r, temperature: abc}\n", [], "temperature must be a number, not 'abc'"),
    ("- {label: x, a: r, b: r, temperature: true}\n", [], "temperature must be a number, not True"),
    ("- {label: x, a: [1], b: r}\n", [], "a must be text, not [1]"),
    ("- {label: x, a: r, b: r, row_a: [x]}\n", [], "row_a must be text"),
    ("- {1: x, label: x, a: r, b: r}\n", [], "it has ['1', 'a', 'b', 'label']"),
    ("- {label: x, a: r, b: r, row_a: x T=1, row_b: y T=1, temperature: 1}\n", [],
     "names both rows"),
    ("- {label: x, a: r, b: r}\n- {label: two, a: r, b: r}\n", [], "pair 1 (x): "),
    ("- {label: x, a: r, b: r, row_a: x T=1}\n", [], "name one with row_a/row_b or give temperature"),
])  # fmt: skip
def test_pairs_errors_are_one_line(tmp_path, capsys, text, args, message):
    write_report(tmp_path / "r", {"x T=1": [0.5, 0.6], "y T=1": [0.6, 0.6]})
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(text)
    assert main(["--pairs", str(pairs), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_two_reports_or_pairs_are_needed(tmp_path, capsys):
    assert main([]) == 2 and "give two reports A and B, or --pairs FILE" in capsys.readouterr().err
    assert main(["--pairs", str(tmp_path / "none.yaml")]) == 2 and "no pairs file" in capsys.readouterr().err
