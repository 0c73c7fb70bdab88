"""Learning curves against compute: ``python -m evaluation.curves``.

    python -m evaluation.curves runs/compare/*/ --base runs/compare/base \
        --out docs/curves.png --table runs/compare/curves.md

Reads each run's ``val.csv`` (written by ``python -m train`` at every validation, with
the CPU seconds its training steps had used by then) and ``val_baseline.json`` (gray's
figures on the same photos), and draws, for each validation group (``--val-groups``,
e.g. food and other), AuC, class-rebalanced AuC, median colour cast and colourfulness
against CPU-hours, with gray (and the real photos' colourfulness) as reference lines.
The table gives each run's last validation and, so that runs are compared at equal
compute, every run's figures interpolated at the smallest final CPU time among them.
Runs are labelled by the settings in which their ``config.json`` differs from the base
run's (``evaluation.ablation.differences``), so labels cannot drift from what trained.
A run that went on from another's model (``--continues RUN=START``, folder names) is drawn
on from that run's curve, at the steps and CPU time of both.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorizer.errors import report_error
from evaluation.ablation import differences

__all__ = ["main", "Curve", "read_curve", "curves_table", "plot_curves", "with_note", "write_table", "save_figure", "METRICS"]

# (column suffix, axis title, higher is better)
METRICS = [
    ("auc", "AuC", True),
    ("auc_rebal", "rebalanced AuC", True),
    ("cast", "median colour cast (ab)", False),
    ("colorfulness", "colourfulness", True),
]


@dataclass
class Curve:
    """One run's validations: ``cpu_h`` (CPU-hours of training steps) and a column per figure."""

    name: str
    label: str
    steps: np.ndarray
    cpu_h: np.ndarray
    columns: dict[str, np.ndarray]
    baseline: dict
    inherited: int = 0  # leading validations that are the start's (``after``): drawn by the start's line

    def at(self, column: str, cpu_h: float) -> float:
        """The figure at ``cpu_h`` CPU-hours, linearly interpolated between validations."""
        return float(np.interp(cpu_h, self.cpu_h, self.columns[column]))

    def after(self, start: "Curve") -> "Curve":
        """This run's curve drawn on from ``start``'s, the run it was initialised from
        (``--continues``): its steps and CPU time counted from where ``start`` ended, so that
        a second training step is compared with the other runs at the compute of both."""
        columns = {k: np.concatenate([start.columns[k], v]) for k, v in self.columns.items() if k in start.columns}
        return Curve(self.name, f"{self.label} (after {start.name})",
                     np.concatenate([start.steps, self.steps + start.steps[-1]]),
                     np.concatenate([start.cpu_h, self.cpu_h + start.cpu_h[-1]]), columns, self.baseline,
                     len(start.steps))


def read_curve(run: Path, base_config: dict | None = None) -> Curve:
    """A run folder's curve; ``ValueError`` when it has not validated yet."""
    path = run / "val.csv"
    if not path.is_file():
        raise ValueError(f"{run}: no val.csv (the run has not validated yet)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "cpu_s" not in rows[0]:
        raise ValueError(f"{path}: no validation rows with CPU time (cpu_s)")
    # a run resumed from a checkpoint validates some steps again: the later row of a step counts
    rows = sorted({int(r["step"]): r for r in rows}.values(), key=lambda r: int(r["step"]))
    config = json.loads((run / "config.json").read_text())
    baseline_path = run / "val_baseline.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}
    names = [k for k in rows[0] if k not in ("step", "cpu_s", "elapsed_s")]
    try:
        columns = {k: np.array([float(r.get(k) or "nan") for r in rows]) for k in names}
        cpu_h = np.array([float(r["cpu_s"]) for r in rows]) / 3600.0
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable row ({e})") from None
    columns = {k: v for k, v in columns.items() if not np.isnan(v).all()}
    diff = "" if base_config is None else differences(config, base_config)
    label = run.name if diff in ("", "base") else f"{run.name}: {diff}"
    if not baseline:
        raise ValueError(f"{run}: no val_baseline.json (trained before curves were recorded?)")
    return Curve(run.name, label, np.array([int(r["step"]) for r in rows]), cpu_h, columns, baseline)


def _groups(curves: list[Curve]) -> list[str]:
    """The validation groups every curve reports (``val`` when none has groups)."""
    named = [set(c.baseline.get("groups", {})) for c in curves]
    common = set.intersection(*named) if named else set()
    return sorted(common, key=lambda g: (g == "other", g)) or ["val"]


def _check_same_photos(curves: list[Curve]) -> None:
    seen = {(c.baseline.get("photos"), c.baseline.get("size"), json.dumps(c.baseline.get("groups"), sort_keys=True))
            for c in curves if c.baseline}
    if len(seen) > 1:
        raise ValueError(f"the runs validated on different photos ({sorted(map(str, seen))}); curves would not compare")


def curves_table(curves: list[Curve]) -> str:
    """The Markdown table (see the module docstring)."""
    _check_same_photos(curves)
    groups = _groups(curves)
    equal = min(float(c.cpu_h[-1]) for c in curves)
    head = "| run | steps | CPU-h |" + "".join(
        f" {g} AuC | {g} rebal. | {g} cast | {g} colourf. |" for g in groups)
    lines = [head, "|---|---:|---:|" + "---:|" * 4 * len(groups)]
    gray = curves[0].baseline.get("gray", {})
    truth = curves[0].baseline.get("truth_colorfulness", {})
    if gray:
        cells = "".join(
            f" {gray.get(f'{g}_auc', float('nan')):.3f} | {gray.get(f'{g}_auc_rebal', float('nan')):.3f} | "
            f"{gray.get(f'{g}_cast', float('nan')):.1f} | real {truth.get(g, float('nan')):.1f} |" for g in groups)
        lines.append(f"| gray (ab = 0) | | |{cells}")

    def cells(c: Curve, at: float | None) -> str:
        out = ""
        for g in groups:
            for key, _, _ in METRICS:
                col = f"{g}_{key}"
                if col not in c.columns:
                    out += " |"
                    continue
                if at is not None and at < c.cpu_h[0]:  # before its first validation: not measured
                    out += " n/a |"
                    continue
                v = c.columns[col][-1] if at is None else c.at(col, at)
                out += f" {v:.1f} |" if key in ("cast", "colorfulness") else f" {v:.3f} |"
        return out

    for c in curves:
        lines.append(f"| {c.label} | {c.steps[-1]} | {c.cpu_h[-1]:.3f} |{cells(c, None)}")
    lines += ["", f"At equal compute ({equal:.3f} CPU-hours each, interpolated between validations):", "",
              lines[0], lines[1]]
    for c in curves:
        lines.append(f"| {c.label} | {int(round(np.interp(equal, c.cpu_h, c.steps)))} | {equal:.3f} |{cells(c, equal)}")
    photos = curves[0].baseline.get("photos")
    counts = curves[0].baseline.get("groups", {})
    if photos:
        lines += ["", f"{photos} validation photos ({', '.join(f'{n} {g}' for g, n in counts.items())}), centre crops "
                  f"at {curves[0].baseline.get('size')} px; AuC over the pooled pixels of a group, rebalanced with "
                  "the group's own prior; cast is the median over photos."]
    return "\n".join(lines) + "\n"


def plot_curves(curves: list[Curve], path: Path) -> Path:
    """A PNG grid: one row per validation group, one column per figure, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_same_photos(curves)
    groups = _groups(curves)
    fig, axes = plt.subplots(len(groups), len(METRICS), figsize=(4.2 * len(METRICS), 3.4 * len(groups)),
                             squeeze=False)
    gray = curves[0].baseline.get("gray", {})
    truth = curves[0].baseline.get("truth_colorfulness", {})
    for r, g in enumerate(groups):
        for k, (key, title, better_high) in enumerate(METRICS):
            ax = axes[r][k]
            col = f"{g}_{key}"
            for c in curves:
                if col in c.columns:  # a continuation from the start's last point, not over its line
                    own = slice(max(0, c.inherited - 1), None)
                    ax.plot(c.cpu_h[own], c.columns[col][own], marker="o", markersize=3, label=c.label)
            if col in gray:
                ax.axhline(gray[col], color="gray", linestyle="--", linewidth=1, label="gray (ab = 0)")
            if key == "colorfulness" and g in truth:
                ax.axhline(truth[g], color="black", linestyle=":", linewidth=1, label="real photos")
            ax.set_title(f"{g}: {title} ({'higher' if better_high else 'lower'} is better)", fontsize=9)
            ax.set_xlabel("CPU-hours of training")
            ax.grid(alpha=0.3)
    return save_figure(fig, [axes[0][0], axes[0][-1]], path)


def save_figure(fig, axes, path: Path, per_row: int = 4, bottom: float = 0.04) -> Path:
    """``fig`` as a PNG at ``path``, with one legend under its panels: each label of
    ``axes`` once, ``per_row`` to a row, above a margin of ``bottom``."""
    import matplotlib.pyplot as plt

    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(per_row, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, bottom + 0.025 * ((len(labels) + per_row - 1) // per_row), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (config.json, val.csv, val_baseline.json)")
    p.add_argument("--base", type=Path, help="the run the others are labelled against (default: the first)")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--table", type=Path, help="Markdown table to write (printed either way)")
    p.add_argument("--continues", action="append", default=[], metavar="RUN=START",
                   help="run folder RUN was initialised from START's model (folder names of two of the runs): "
                        "draw it on from START's curve (repeatable)")
    p.add_argument("--note", type=Path, help="Markdown file appended to the table (what the runs' files do not "
                                             "say, e.g. the machines they ran on), so a redrawn table keeps it")
    args = p.parse_args(argv)
    try:
        runs = list(dict.fromkeys(r.resolve() for r in ([args.base] if args.base else []) + args.runs))
        base_config = json.loads((runs[0] / "config.json").read_text())
        curves = [read_curve(r, base_config) for r in runs]
        by_name = {c.name: i for i, c in enumerate(curves)}
        for spec in args.continues:
            run, _, start = spec.partition("=")
            if run not in by_name or start not in by_name or run == start:
                raise ValueError(f"--continues {spec!r}: give RUN=START, two of the runs' folder names "
                                 f"({', '.join(by_name)})")
            curves[by_name[run]] = curves[by_name[run]].after(curves[by_name[start]])
        table = with_note(curves_table(curves), args.note)
        plot_curves(curves, args.out)
    except (OSError, KeyError, ValueError) as e:
        return report_error("evaluation.curves", e)
    write_table(table, args.table, args.out)
    return 0


def with_note(table: str, note: Path | None) -> str:
    """``table`` with the Markdown file ``note`` appended (what the runs' files do not say)."""
    return table if note is None else table.rstrip("\n") + "\n\n" + note.read_text().strip() + "\n"


def write_table(table: str, path: Path | None, figure: Path) -> None:
    """``table`` written to ``path`` (when given) and printed, with the figure's path."""
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
    print(table)
    print(f"wrote {figure}")


if __name__ == "__main__":
    sys.exit(main())
