"""Every evaluated model against the quality targets: ``python -m evaluation.targets``.

    python -m evaluation.targets docs/shipped docs/default-temperatures docs/pooling \
        --group non-food --target auc=gray+0.015 --target auc_rebalanced=gray+0.08 \
        --target cast=gray*0.5 --target colorfulness=truth*0.75 \
        --out docs/targets/targets.png --table docs/targets/targets.md

Each argument is an evaluation report (``results.json``, or the folder holding it, from
``python -m evaluation``) of the same photos; every model row of one group is read, at every
temperature the report holds. The table gives each row's figures and which targets it meets
(a target is ``METRIC=VALUE`` as in ``evaluation.scaling``: a number, ``gray+D``, ``gray*F``
or ``truth*F`` of the group's gray and real-photo figures); the figure puts every row on two
planes, plain against rebalanced AuC and colourfulness against colour cast, with each
target's line, so that where the rows lie against the corner the targets mark shows at a
glance whether any model reaches them. A model (a row's name without its temperature) is
one series however many reports hold it; its rows at several temperatures are joined by a
line (the trade-off its temperature gives).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from colorizer.errors import report_error
from evaluation.curves import save_figure, with_note, write_table
from evaluation.evaluate import labelled_source
from evaluation.paired import load_report
from evaluation.scaling import (HIGHER_IS_BETTER, METRICS, add_target_options, figure_cell, gray_row, group_rows,
                                model_rows, parse_target, target_spec, target_value)

__all__ = ["main", "Row", "read_rows", "targets_table", "plot_targets"]

# the two planes of the figure: (x, y) figures
PLANES = [("auc", "auc_rebalanced"), ("colorfulness", "cast")]
_KEYS = [k for k, _, _ in METRICS]


@dataclass
class Row:
    """One model row of a report's group: its report's label, name, temperature and figures."""

    report: str
    name: str
    temperature: float
    figures: dict[str, float]


def read_rows(specs: list[Path], group: str) -> tuple[list[Row], dict[str, float], float]:
    """Every model row of ``group`` in the reports (``LABEL=PATH`` or a path), with the
    group's gray figures and its real photos' colourfulness (the reports must agree on
    both: the same photos). A row another report already gave, figure for figure, is kept once."""
    rows, reference = [], None
    for spec in specs:
        label, given = labelled_source(str(spec))
        if not given:
            raise ValueError(f"{spec}: LABEL=PATH with no path")
        given = Path(given)
        if label == str(spec):  # no label: the report's folder names it
            label = (given if given.is_dir() else given.parent).resolve().name
        report = load_report(given)
        table = group_rows(report, group, str(spec))
        gray = gray_row(table, f"{spec}: group {group!r}")
        here = ({k: float(gray[k]) for k in _KEYS}, float(gray["truth_colorfulness"]))
        if reference is None:
            reference = here
        elif here != reference:
            raise ValueError(f"{spec}: other photos than {specs[0]} (its gray row differs)")
        models = model_rows(table)
        if not models:
            raise ValueError(f"{spec}: no model row in group {group!r}")
        for r in models:
            row = Row(label, r["name"], float(r["temperature"]), {k: float(r[k]) for k in _KEYS})
            if not any(seen.name == row.name and seen.figures == row.figures for seen in rows):
                rows.append(row)
    return rows, reference[0], reference[1]


def _model(row: Row) -> str:
    """A row's model as the figure labels it: its name without the temperature (one model scored
    in several reports is one series)."""
    return row.name.rsplit(" T=", 1)[0]


def _met(row: Row, target, value: float) -> bool:
    figure = row.figures[target[0]]
    return figure >= value if HIGHER_IS_BETTER[target[0]] else figure <= value


def targets_table(rows: list[Row], gray: dict[str, float], truth: float, group: str, targets) -> str:
    """Markdown: gray, the targets' values, and per row its figures and the targets it meets."""
    values = [target_value(t, gray, truth) for t in targets]
    head = "| report | row | " + " | ".join(title for _, title, _ in METRICS) + " | targets met |"
    lines = [head, "|---|---|" + "---:|" * len(METRICS) + "---:|",
             "| | gray (ab = 0) | " + " | ".join(figure_cell(k, gray[k]) for k in _KEYS[:3])
             + f" | real {truth:.1f} | {figure_cell('psnr', gray['psnr'])} | |"]
    if targets:
        by_metric = {t[0]: v for t, v in zip(targets, values)}
        lines.append("| | target | " + " | ".join(figure_cell(k, by_metric[k]) if k in by_metric else "" for k in _KEYS)
                     + f" | {len(targets)} |")
    best = 0
    for r in rows:
        hit = [t for t, v in zip(targets, values) if _met(r, t, v)]
        best = max(best, len(hit))
        cells = [figure_cell(k, r.figures[k]) + ("*" if any(t[0] == k for t in hit) else "") for k in _KEYS]
        label = r.report.replace("|", "&#124;")
        lines.append(f"| {label} | {r.name} | " + " | ".join(cells) + f" | {len(hit)} of {len(targets)} |")
    lines += ["", f"Held-out {group} photos. Targets: " + ("; ".join(f"{target_spec(t)} ({v:.3f})" for t, v in
                                                                     zip(targets, values)) or "none")
              + f". A figure marked * meets its target; the most any row meets: {best} of {len(targets)}."]
    for t, v in zip(targets, values):
        hits = [r for r in rows if _met(r, t, v)]
        lines.append(f"- {target_spec(t)}: met by {len(hits)} of {len(rows)} rows")
    return "\n".join(lines) + "\n"


def plot_targets(rows: list[Row], gray: dict[str, float], truth: float, group: str, targets, path: Path) -> Path:
    """A PNG: the rows on each plane of ``PLANES``, gray, the real photos and the targets' lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {k: t for k, t, _ in METRICS}
    better = HIGHER_IS_BETTER
    fig, axes = plt.subplots(1, len(PLANES), figsize=(6.4 * len(PLANES), 5.2), squeeze=False)
    models = list(dict.fromkeys(_model(r) for r in rows))
    markers = "osD^vP*Xhp<>"
    for ax, (x, y) in zip(axes[0], PLANES):
        for i, model in enumerate(models):
            style = {"color": f"C{i % 10}", "marker": markers[(i // 10) % len(markers)]}
            mine = sorted((r for r in rows if _model(r) == model), key=lambda r: r.temperature)
            if len(mine) > 1:  # one model at several temperatures: its trade-off, from the lowest T
                ax.plot([r.figures[x] for r in mine], [r.figures[y] for r in mine], color=style["color"],
                        linewidth=0.8, alpha=0.6)
                ax.annotate(f"T={mine[0].temperature:g}", (mine[0].figures[x], mine[0].figures[y]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            ax.scatter([r.figures[x] for r in mine], [r.figures[y] for r in mine], s=22, label=model, **style)
        ax.scatter([gray[x]], [gray[y]], color="gray", marker="s", s=30, label="gray (ab = 0)")
        if x == "colorfulness":
            ax.axvline(truth, color="black", linestyle=":", linewidth=1, label="real photos")
        corner = {}
        for t in targets:
            value = target_value(t, gray, truth)
            if t[0] == x:
                ax.axvline(value, color="C3", linewidth=1, label="target")
            elif t[0] == y:
                ax.axhline(value, color="C3", linewidth=1, label="target")
            if t[0] in (x, y):
                corner[t[0]] = value
        if len(corner) == 2:  # where both targets are met, in view
            (x0, x1), (y0, y1) = _widened(ax.get_xlim(), corner[x], better[x]), _widened(ax.get_ylim(), corner[y],
                                                                                           better[y])
            xs = (corner[x], x1) if better[x] else (x0, corner[x])
            ys = (corner[y], y1) if better[y] else (y0, corner[y])
            ax.fill_between(xs, *ys, color="C3", alpha=0.08, label="both targets met")
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
        ax.set_xlabel(f"{titles[x]} ({'higher' if better[x] else 'lower'} is better)")
        ax.set_ylabel(f"{titles[y]} ({'higher' if better[y] else 'lower'} is better)")
        ax.set_title(f"{group}: {titles[x]} and {titles[y]}", fontsize=9)
        ax.grid(alpha=0.3)
    return save_figure(fig, axes[0], path, per_row=5, bottom=0.03)


def _widened(limits: tuple[float, float], target: float, higher: bool) -> tuple[float, float]:
    """Axis limits that show a stretch beyond ``target`` on its better side."""
    lo, hi = limits
    margin = 0.15 * (hi - lo)
    return (lo, max(hi, target + margin)) if higher else (min(lo, target - margin), hi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.targets", description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path,
                   help="evaluation reports: results.json or its folder, or LABEL=PATH (default label: the folder)")
    p.add_argument("--group", required=True, help="the evaluation group read (e.g. non-food)")
    add_target_options(p)
    args = p.parse_args(argv)
    try:
        targets = [parse_target(t) for t in args.target]
        rows, gray, truth = read_rows(args.reports, args.group)
        table = with_note(targets_table(rows, gray, truth, args.group, targets), args.note)
        plot_targets(rows, gray, truth, args.group, targets, args.out)
    except (OSError, ValueError) as e:
        return report_error("evaluation.targets", e)
    except KeyError as e:
        return report_error("evaluation.targets", f"not an evaluation report: it has no {e}")
    write_table(table, args.table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
