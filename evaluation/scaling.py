"""Held-out figures against the number of training photos: ``python -m evaluation.scaling``.

    python -m evaluation.scaling docs/data-scaling/ds-12 docs/data-scaling/ds-25 \
        docs/data-scaling/ds-50 docs/data-scaling/ds-100 --count other --group non-food \
        --target auc_rebalanced=gray+0.08 --target cast=gray*0.5 --target colorfulness=truth*0.75 \
        --out docs/data-scaling/scaling.png --table docs/data-scaling/scaling.md

Each point is a folder holding a training run's ``photos.json`` (the distinct photos it
trained on, per validation group: ``python -m train`` writes it for runs that read a
feature cache or use ``--subset``) and ``results.json`` (``python -m evaluation`` of that
run's model on the held-out photos). The runs differ in how many photos of one group they
saw (``--subset``, at equal steps): the table gives each run's figures on one evaluation
group at one temperature, and a least-squares line through each figure against log2 of the
photos counted (``--count``) gives its change per doubling of them (with its standard
error). A ``--target`` (a figure's value: a number, or ``gray+D``, ``gray*F``, ``truth*F``
of the group's gray and real-photo figures) is followed along that line to the photos
at which it would be met: an extrapolation of the trend, not a measurement, and the table
says so. Runs that trained on the same photos (their ``config.json`` chooses the same ones:
only ``--seed`` differs) are also given their spread, the noise of one run against which
the differences between runs are read.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorizer.errors import report_error
from evaluation.curves import save_figure, with_note, write_table
from train.config import subset_draw

__all__ = ["main", "Point", "read_point", "fit", "parse_target", "target_value", "target_spec", "group_rows",
           "gray_row", "figure_cell", "scaling_table", "plot_scaling", "add_target_options", "METRICS",
           "HIGHER_IS_BETTER"]

# (results.json key, title, higher is better)
METRICS = [
    ("auc", "AuC", True),
    ("auc_rebalanced", "rebalanced AuC", True),
    ("cast", "median colour cast (ab)", False),
    ("colorfulness", "colourfulness", True),
    ("psnr", "PSNR (dB)", True),
]
HIGHER_IS_BETTER = {k: h for k, _, h in METRICS}
_TARGET = re.compile(r"^(?:(gray|truth)\s*([+*])\s*)?([-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)$")


@dataclass
class Point:
    """One run: the photos it trained on (``photos``: of the counted group) and its figures."""

    name: str
    photos: int
    all_photos: int
    figures: dict[str, float]
    gray: dict[str, float]
    truth_colorfulness: float
    photo_set: str = ""  # runs with the same one trained on the same photos (another --seed)


def model_rows(rows: list[dict], temperature: float | None = None) -> list[dict]:
    """A report's model rows (not gray, mean ab or the truth), at ``temperature`` when given."""
    return [r for r in rows if r.get("model") is not None and r.get("temperature") is not None
            and (temperature is None or math.isclose(r["temperature"], temperature))]


def read_point(folder: Path, count: str, group: str, temperature: float) -> Point:
    """A point folder's counted photos and its model's figures on ``group`` at ``temperature``."""
    photos_path, results_path = folder / "photos.json", folder / "results.json"
    for path in (photos_path, results_path):
        if not path.is_file():
            raise ValueError(f"{folder}: no {path.name}")
    photos = json.loads(photos_path.read_text())
    if count not in photos.get("groups", {}):
        raise ValueError(f"{photos_path}: no group {count!r} (it has {', '.join(photos.get('groups', {})) or 'none'})")
    rows = group_rows(json.loads(results_path.read_text()), group, str(results_path))
    models = model_rows(rows, temperature)
    if len(models) != 1:
        raise ValueError(f"{results_path}: {len(models)} model rows at T={temperature:g} in group {group!r}; "
                         "a point is one model's evaluation")
    gray = gray_row(rows, f"{results_path}: group {group!r}")
    keys = [k for k, _, _ in METRICS]
    return Point(folder.name, int(photos["groups"][count]), int(photos["photos"]),
                 {k: float(models[0][k]) for k in keys}, {k: float(gray[k]) for k in keys},
                 float(gray["truth_colorfulness"]), _photo_set(folder, photos))


def group_rows(report: dict, group: str, where: str) -> list[dict]:
    """An evaluation report's table rows of one group."""
    rows = report.get("groups", {}).get(group)
    if rows is None:
        raise ValueError(f"{where}: no evaluation group {group!r} (it has "
                         f"{', '.join(report.get('groups', {})) or 'none'})")
    return rows


def gray_row(rows: list[dict], where: str) -> dict:
    """A report group's gray (ab = 0) row."""
    gray = next((r for r in rows if r.get("model") is None and r["name"].startswith("gray")), None)
    if gray is None:
        raise ValueError(f"{where}: no gray row")
    return gray


# the run settings that choose the photos trained on (config.json), beside their counts
_PHOTO_SETTINGS = ("dataset", "config", "data_dir", "data_files", "split", "classes", "classes_file", "holdout",
                   "holdout_file", "min_size", "gray_threshold", "max_pixels", "subset", "subset_seed")


def _photo_set(folder: Path, photos: dict) -> str:
    """What identifies the photos a run trained on: its ``config.json``'s settings that choose
    them and its photo counts; the folder alone when it has no ``config.json``."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return str(folder.resolve())
    config = json.loads(config_path.read_text())
    settings = {k: config.get(k) for k in _PHOTO_SETTINGS}
    settings["subset_seed"] = subset_draw(settings["subset"], settings["subset_seed"])  # training's own rule
    return json.dumps([settings, photos], sort_keys=True)


def parse_target(spec: str) -> tuple[str, str | None, str | None, float]:
    """``METRIC=VALUE`` with VALUE a number, ``gray+D``, ``gray*F`` or ``truth*F``."""
    metric, sep, value = spec.partition("=")
    metric = metric.strip()
    if not sep or metric not in {k for k, _, _ in METRICS}:
        raise ValueError(f"--target {spec!r}: give METRIC=VALUE with METRIC one of "
                         f"{', '.join(k for k, _, _ in METRICS)}")
    m = _TARGET.match(value.replace(" ", ""))
    if m is None or (m.group(1) == "truth" and (metric != "colorfulness" or m.group(2) != "*")):
        raise ValueError(f"--target {spec!r}: VALUE is a number, gray+D, gray*F or (colorfulness) truth*F")
    return metric, m.group(1), m.group(2), float(m.group(3))


def target_value(target: tuple[str, str | None, str | None, float], gray: dict[str, float],
                 truth_colorfulness: float) -> float:
    """A parsed target's value, given the group's gray figures and its real photos' colourfulness."""
    metric, base, op, number = target
    if base is None:
        return number
    ref = truth_colorfulness if base == "truth" else gray[metric]
    return ref + number if op == "+" else ref * number


def target_spec(target: tuple[str, str | None, str | None, float]) -> str:
    """A parsed target as the tables write it, e.g. ``cast <= gray*0.5``."""
    metric, base, op, number = target
    better = HIGHER_IS_BETTER[metric]
    return f"{metric} {'>=' if better else '<='} " + (f"{number:g}" if base is None else f"{base}{op}{number:g}")


def fit(points: list[Point], metric: str) -> tuple[float, float, float]:
    """``(slope, its standard error, intercept)`` of the figure against log2 photos
    (the standard error is nan with fewer than three points)."""
    x = np.log2([p.photos for p in points])
    y = np.array([p.figures[metric] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    se = float("nan")
    if len(points) > 2:
        residuals = y - (slope * x + intercept)
        sxx = float(((x - x.mean()) ** 2).sum())
        se = math.sqrt(float((residuals ** 2).sum()) / (len(points) - 2) / sxx) if sxx > 0 else float("nan")
    return float(slope), se, float(intercept)


def photos_to_reach(value: float, slope: float, intercept: float, better_high: bool) -> float | None:
    """Photos at which the line reaches ``value``; None when it moves away from it."""
    if abs(slope) < 1e-12 or (slope > 0) != better_high:
        return None
    doublings = (value - intercept) / slope
    return math.inf if doublings > 60 else float(2 ** doublings)


def _photos(n: float | None) -> str:
    if n is None:
        return "never (the trend moves away)"
    if math.isinf(n):
        return "more than 1e18"
    return f"{n:,.0f}" if n < 1e7 else f"{n:.1e}"


def figure_cell(metric: str, value: float) -> str:
    """A figure as the table shows it: AuC to 3 places, PSNR to 2, the others to 1."""
    return f"{value:.3f}" if metric.startswith("auc") else f"{value:.2f}" if metric == "psnr" else f"{value:.1f}"


def scaling_table(points: list[Point], count: str, group: str, temperature: float,
                  targets: list[tuple[str, str | None, str | None, float]]) -> str:
    """Markdown: the points, the trend per doubling of photos, the targets followed along it."""
    keys = [(k, t) for k, t, _ in METRICS]
    lines = [f"| run | {count} photos | all photos | " + " | ".join(t for _, t in keys) + " |",
             "|---|---:|---:|" + "---:|" * len(keys)]
    gray = points[0].gray
    lines.append("| gray (ab = 0) | | | " + " | ".join(figure_cell(k, gray[k]) for k, _ in keys[:3])
                 + f" | real {points[0].truth_colorfulness:.1f} | {figure_cell('psnr', gray['psnr'])} |")
    for p in points:
        cells = [figure_cell(k, p.figures[k]) for k, _ in keys]
        lines.append(f"| {p.name} | {p.photos} | {p.all_photos} | " + " | ".join(cells) + " |")
    lines += ["", f"Held-out {group} photos at T = {temperature:g}. A line through each figure against log2 of the "
              f"{count} photos trained on:", "", "| figure | per doubling of the photos | ± standard error |",
              "|---|---:|---:|"]
    for k, title, _ in METRICS:
        slope, se, _ = fit(points, k)
        scale = 100 if k.startswith("auc") else 1
        unit = " points" if k.startswith("auc") else ""
        lines.append(f"| {title} | {slope * scale:+.2f}{unit} | {se * scale:.2f} |")
    lines += _same_photos_table(points, keys)
    if targets:
        lines += ["", "Targets followed along those lines (an extrapolation of the trend, not a measurement):", "",
                  f"| target | value | largest run | {count} photos at the trend | at slope + 1 s.e. | at slope - 1 s.e. |",
                  "|---|---:|---:|---:|---:|---:|"]
        best = max(points, key=lambda p: p.photos)
        for target in targets:
            metric = target[0]
            better = HIGHER_IS_BETTER[metric]
            value = target_value(target, best.gray, best.truth_colorfulness)
            slope, se, intercept = fit(points, metric)
            x_mean = float(np.mean(np.log2([p.photos for p in points])))
            y_mean = float(np.mean([p.figures[metric] for p in points]))

            def at(s: float) -> str:  # lines through the points' centre at another slope
                return "" if math.isnan(s) else _photos(photos_to_reach(value, s, y_mean - s * x_mean, better))

            lines.append(f"| {target_spec(target)} | {value:.3f} | {best.figures[metric]:.3f} | "
                         f"{_photos(photos_to_reach(value, slope, intercept, better))} | {at(slope + se)} | "
                         f"{at(slope - se)} |")
    return "\n".join(lines) + "\n"


def _same_photos_table(points: list[Point], keys: list[tuple[str, str]]) -> list[str]:
    """Markdown lines: for each set of runs that trained on the same photos (another
    ``--seed``), the spread of each figure; none when no two runs share their photos."""
    sets: dict[str, list[Point]] = {}
    for p in points:
        sets.setdefault(p.photo_set, []).append(p)
    same = [runs for runs in sets.values() if len(runs) > 1]
    if not same:
        return []
    lines = ["", "Runs on the same photos (another `--seed`: another order of the crops and another prior sample): "
             "the spread, largest - smallest, of each figure (AuC in points):", "",
             "| runs | photos | " + " | ".join(t for _, t in keys) + " |", "|---|---:|" + "---:|" * len(keys)]
    spreads = []
    for runs in same:
        spread = [max(p.figures[k] for p in runs) - min(p.figures[k] for p in runs) for k, _ in keys]
        spreads.append(spread)
        lines.append(f"| {', '.join(p.name for p in runs)} | {runs[0].photos} | "
                     + " | ".join(_spread_cell(k, v) for (k, _), v in zip(keys, spread)) + " |")
    if len(same) > 1:
        lines.append("| mean | | " + " | ".join(_spread_cell(k, float(np.mean(col)))
                                                 for (k, _), col in zip(keys, zip(*spreads))) + " |")
    return lines


def _spread_cell(metric: str, value: float) -> str:
    return f"{value * 100:.1f}" if metric.startswith("auc") else figure_cell(metric, value)


def plot_scaling(points: list[Point], count: str, group: str, targets, path: Path) -> Path:
    """A PNG: one panel per figure against the photos (log scale), the points, the line, gray and the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
    best = max(points, key=lambda p: p.photos)
    x = np.array([p.photos for p in points], dtype=float)
    for ax, (key, title, better) in zip(axes[0], METRICS):
        slope, _, intercept = fit(points, key)
        reach = [photos_to_reach(target_value(t, best.gray, best.truth_colorfulness), slope, intercept, better)
                 for t in targets if t[0] == key]
        right = max([x.max() * 2] + [min(r, 2.0 ** 17) * 1.2 for r in reach if r is not None])
        line = np.geomspace(x.min() / 1.2, right, 50)
        ax.plot(line, slope * np.log2(line) + intercept, color="C0", linewidth=1, linestyle="-.",
                label="trend (least squares on log2 photos)")
        ax.plot(x, [p.figures[key] for p in points], "o", color="C0", label="runs")
        ax.axhline(best.gray[key], color="gray", linestyle="--", linewidth=1, label="gray (ab = 0)")
        if key == "colorfulness":
            ax.axhline(best.truth_colorfulness, color="black", linestyle=":", linewidth=1, label="real photos")
        for t in targets:
            if t[0] == key:
                value = target_value(t, best.gray, best.truth_colorfulness)
                ax.axhline(value, color="C3", linewidth=1, label="target")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel(f"{count} training photos")
        ax.set_title(f"{group}: {title} ({'higher' if better else 'lower'} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    return save_figure(fig, axes[0], path, per_row=6, bottom=0.055)


def add_target_options(p: argparse.ArgumentParser) -> None:
    """The options of a command that draws figures against targets: --target (repeatable),
    --out (the PNG), --table and --note."""
    p.add_argument("--target", action="append", default=[], metavar="METRIC=VALUE",
                   help="a figure's target: a number, gray+D, gray*F or truth*F (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--table", type=Path, help="Markdown table to write (printed either way)")
    p.add_argument("--note", type=Path, help="Markdown file appended to the table (what the files do not say)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("points", nargs="+", type=Path, help="folders with photos.json and results.json, one per run")
    p.add_argument("--count", required=True, help="the photos.json group whose photos are counted (e.g. other)")
    p.add_argument("--group", required=True, help="the results.json evaluation group read (e.g. non-food)")
    p.add_argument("--temperature", type=float, default=1.0, help="the temperature of the rows read (default 1)")
    add_target_options(p)
    args = p.parse_args(argv)
    try:
        targets = [parse_target(t) for t in args.target]
        points = sorted((read_point(f, args.count, args.group, args.temperature) for f in args.points),
                        key=lambda q: q.photos)
        if len({q.photos for q in points}) < 2:
            raise ValueError("give runs of at least two different numbers of photos")
        grays = {json.dumps(q.gray, sort_keys=True) for q in points}
        if len(grays) > 1:
            raise ValueError("the points were evaluated on different photos (their gray rows differ)")
        table = with_note(scaling_table(points, args.count, args.group, args.temperature, targets), args.note)
        plot_scaling(points, args.count, args.group, targets, args.out)
    except (OSError, KeyError, ValueError) as e:
        return report_error("evaluation.scaling", e)
    write_table(table, args.table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
