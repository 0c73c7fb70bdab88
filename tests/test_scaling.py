"""evaluation.scaling: held-out figures against the number of training photos, and targets along the trend."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from evaluation.scaling import fit, main, parse_target, read_point

GRAY = {"name": "gray (ab = 0)", "model": None, "temperature": None, "auc": 0.86, "auc_rebalanced": 0.645,
        "cast": 14.0, "colorfulness": 0.0, "psnr": 21.0, "truth_colorfulness": 48.0}


def write_point(folder, photos, rebal, cast, colour=30.0, temperature=1.0, gray=GRAY):
    folder.mkdir(parents=True)
    (folder / "photos.json").write_text(json.dumps({"photos": photos + 500,
                                                    "groups": {"food": 500, "other": photos}}))
    model = {"name": f"{folder.name} T={temperature:g}", "model": str(folder), "temperature": temperature,
             "auc": 0.88, "auc_rebalanced": rebal, "cast": cast, "colorfulness": colour, "psnr": 22.0}
    other = dict(model, auc=0.5)
    (folder / "results.json").write_text(json.dumps({"groups": {"non-food": [gray, model], "food": [gray, other]}}))


def points(tmp_path, count=3):
    # rebalanced AuC +1 point and cast -1 per doubling of the photos; colourfulness flat
    for k, n in enumerate([50, 100, 200, 400][:count]):
        write_point(tmp_path / f"ds-{n}", n, 0.65 + 0.01 * k, 10.0 - k)
    return [str(tmp_path / f"ds-{n}") for n in [50, 100, 200, 400][:count]]


def test_trend_per_doubling_and_the_photos_a_target_needs(tmp_path, capsys):
    table, png = tmp_path / "s.md", tmp_path / "s.png"
    args = points(tmp_path) + ["--count", "other", "--group", "non-food", "--target", "auc_rebalanced=gray+0.08",
                               "--target", "cast=gray*0.5", "--target", "colorfulness=truth*0.75",
                               "--out", str(png), "--table", str(table)]
    assert main(args) == 0
    text = table.read_text()
    lines = text.splitlines()
    assert lines[2].startswith("| gray (ab = 0) |") and "0.645" in lines[2] and "real 48.0" in lines[2]
    assert lines[3].startswith("| ds-50 | 50 | 550 |") and "| 0.650 |" in lines[3] and "| 10.0 |" in lines[3]
    assert "| rebalanced AuC | +1.00 points | 0.00 |" in text
    assert "| median colour cast (ab) | -1.00 | 0.00 |" in text
    # 0.725 = 0.65 + 0.01 * log2(N / 50): N = 50 * 2**7.5; cast 7 = 10 - log2(N / 50): N = 400
    assert f"| auc_rebalanced >= gray+0.08 | 0.725 | 0.670 | {50 * 2 ** 7.5:,.0f} |" in text
    assert "| cast <= gray*0.5 | 7.000 | 8.000 | 400 |" in text
    assert "| colorfulness >= truth*0.75 | 36.000 | 30.000 | never (the trend moves away) |" in text
    assert "extrapolation" in text and text in capsys.readouterr().out
    assert Image.open(png).size[0] > 1000


def test_the_fit_and_its_standard_error():
    class P:  # the fields fit reads
        def __init__(self, photos, y):
            self.photos, self.figures = photos, {"auc": y}

    slope, se, intercept = fit([P(10, 1.0), P(20, 2.0)], "auc")
    assert math.isclose(slope, 1.0) and math.isnan(se)  # two points: no error estimate
    slope, se, _ = fit([P(1, 0.0), P(2, 1.0), P(4, 1.0), P(8, 3.0)], "auc")
    assert math.isclose(slope, 0.9) and math.isclose(se, math.sqrt(0.7 / 2 / 5))  # residuals .1 .2 .7 .2 -> sse .7


@pytest.mark.parametrize("spec,message", [
    ("rebal=0.7", "METRIC=VALUE"), ("auc", "METRIC=VALUE"), ("auc=gray-0.1", "VALUE is"),
    ("cast=truth*0.5", "VALUE is"), ("colorfulness=truth+3", "VALUE is"), ("auc=high", "VALUE is"),
])
def test_bad_targets_are_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_target(spec)


def test_targets_parse():
    assert parse_target("auc_rebalanced=gray+0.08") == ("auc_rebalanced", "gray", "+", 0.08)
    assert parse_target("cast = gray * 0.5") == ("cast", "gray", "*", 0.5)
    assert parse_target("auc=0.9") == ("auc", None, None, 0.9)


def test_bad_points_are_one_error_line(tmp_path, capsys):
    write_point(tmp_path / "a", 50, 0.65, 10.0)
    write_point(tmp_path / "b", 50, 0.66, 9.0)
    write_point(tmp_path / "c", 100, 0.66, 9.0, gray=dict(GRAY, auc=0.8))
    write_point(tmp_path / "d", 100, 0.66, 9.0, temperature=0.38)
    (tmp_path / "e").mkdir()
    common = ["--count", "other", "--group", "non-food", "--out", str(tmp_path / "x.png")]
    cases = [
        ([str(tmp_path / "a"), str(tmp_path / "b")], "two different numbers of photos"),
        ([str(tmp_path / "a"), str(tmp_path / "c")], "different photos"),
        ([str(tmp_path / "a"), str(tmp_path / "d")], "0 model rows at T=1"),
        ([str(tmp_path / "a"), str(tmp_path / "e")], "no photos.json"),
        ([str(tmp_path / "a"), "--target", "x=1"], "METRIC=VALUE"),
    ]
    for argv, message in cases:
        assert main(argv + common) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main([str(tmp_path / "a"), "--count", "people", "--group", "non-food", "--out", "x.png"]) == 2
    assert "no group 'people'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no evaluation group 'wild'"):
        read_point(tmp_path / "a", "other", "wild", 1.0)


def test_runs_on_the_same_photos_get_their_spread(tmp_path, capsys):
    """Runs whose config.json chose the same photos (another --seed only) are one photo set:
    the table gives each set's spread; runs without config.json are each their own."""
    def config(folder, subset_seed, seed):
        (folder / "config.json").write_text(json.dumps({"data_dir": "photos", "subset": "x=0.25",
                                                        "subset_seed": subset_seed, "seed": seed}))

    write_point(tmp_path / "q", 100, 0.66, 9.0)
    write_point(tmp_path / "q-r1", 100, 0.68, 8.0, colour=31.0)
    write_point(tmp_path / "q-s1", 100, 0.70, 7.0)  # another draw of the share: not the same photos
    write_point(tmp_path / "all", 400, 0.66, 10.0)
    write_point(tmp_path / "all-r1", 400, 0.67, 10.5)
    config(tmp_path / "q", 0, 0)
    config(tmp_path / "q-r1", 0, 1)
    config(tmp_path / "q-s1", 1, 0)
    args = [str(tmp_path / n) for n in ("q", "q-r1", "q-s1", "all", "all-r1")]
    assert main(args + ["--count", "other", "--group", "non-food", "--out", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    assert "| q, q-r1 | 100 | 0.0 | 2.0 | 1.0 | 1.0 | 0.00 |" in text
    assert "q-s1 |" not in text.split("Runs on the same photos")[1]
    assert "all, all-r1" not in text  # no config.json: each its own set
    assert "| mean |" not in text  # one set

    (tmp_path / "all" / "config.json").write_text(json.dumps({"data_dir": "photos", "seed": 0}))
    (tmp_path / "all-r1" / "config.json").write_text(json.dumps({"data_dir": "photos", "seed": 1, "subset_seed": 0}))
    # an older run's config has no subset_seed: without --subset it chooses nothing, so the two are one set
    assert main(args + ["--count", "other", "--group", "non-food", "--out", str(tmp_path / "s.png")]) == 0
    text = capsys.readouterr().out
    assert "| all, all-r1 | 400 | 0.0 | 1.0 | 0.5 | 0.0 | 0.00 |" in text and "| mean | | 0.0 | 1.5 | 0.8 | 0.5 |" in text


def test_subset_seed_zero_is_no_seed(tmp_path):
    """--subset-seed 0 draws by the hash of the path alone, as runs before the option did."""
    from evaluation.scaling import _photo_set

    counts = {"photos": 10, "groups": {"other": 10}}
    sets = []
    for name, config in [("new", {"subset": "x=0.5", "subset_seed": 0}), ("old", {"subset": "x=0.5"}),
                         ("drawn", {"subset": "x=0.5", "subset_seed": 1}), ("all", {"subset_seed": 1})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(dict(config, data_dir="photos")))
        sets.append(_photo_set(tmp_path / name, counts))
    assert sets[0] == sets[1] and sets[2] != sets[0] and sets[3] not in sets[:3]
