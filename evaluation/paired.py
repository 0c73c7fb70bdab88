"""Two evaluations of the same photos compared photo by photo: ``python -m evaluation.paired``.

    python -m evaluation.paired results/ds-25 results/ds-25-s1 --group non-food --top 5

Each argument is an evaluation report (``results.json``, or the folder holding it, from
``python -m evaluation``); a row of each is compared (``--row-a``, ``--row-b``; by default the
report's one model row, or its one at ``--temperature``) over the photos of one group. For each figure the table
gives both rows' means over photos, the mean difference with a 95% interval from a bootstrap
over the photos (the photos drawn again with replacement, ``--resamples`` times), and on how
many photos the second row is better. A report's headline figures pool the pixels of every
photo, so a few photos whose colour flips can move them by points; this says whether a
difference holds photo by photo or comes from a handful of them (``--top`` lists the photos
whose figure moved most). The rebalanced AuC per photo uses the whole evaluated set's prior.

    python -m evaluation.paired --pairs docs/paired/pairs.yaml --group non-food --table docs/paired/non-food.md

compares many pairs at once, a line each (the mean difference, its interval and the photos
where B is better, per figure): the pairs file is a YAML list of ``{label, a, b}`` with
optional ``row_a``, ``row_b`` and ``temperature``, its report paths relative to the file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colorizer.errors import first_line, report_error
from evaluation.scaling import model_rows

__all__ = ["main", "load_report", "read_rows", "paired_table", "summary_table", "read_pairs", "FIGURES"]

# (per-photo key, title, higher is better, scale shown)
FIGURES = [
    ("auc", "AuC (points)", True, 100.0),
    ("auc_rebalanced", "rebalanced AuC (points)", True, 100.0),
    ("psnr", "PSNR (dB)", True, 1.0),
    ("cast", "colour cast (ab)", False, 1.0),
    ("delta_colorfulness", "colourfulness gap to the real photo", False, 1.0),
]


def load_report(path: Path) -> dict:
    """An evaluation report: ``results.json`` or the folder holding it."""
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"{path}: no evaluation report (results.json)")
    return json.loads(path.read_text())


def _row_name(report: dict, row: str | None, temperature: float | None, where: str) -> str:
    """``row``, or the report's one model row (at ``temperature`` when given)."""
    if row is not None:
        return row
    names = [r["name"] for r in model_rows(report.get("table", []), temperature)]
    if len(names) != 1:
        at = "" if temperature is None else f" at T={temperature:g}"
        raise ValueError(f"{where}: {len(names)} model rows{at} ({', '.join(names) or 'none'}); "
                         "name one with --row-a/--row-b" + (" or give --temperature" if temperature is None else ""))
    return names[0]


def read_rows(path: Path, row: str | None, group: str | None,
              temperature: float | None = None) -> tuple[str, dict[str, dict]]:
    """A report's row name and, per photo of ``group`` (None: every photo), that row's figures."""
    report = load_report(path)
    name = _row_name(report, row, temperature, str(path))
    photos = {}
    for im in report.get("images", []):
        if group is not None and im.get("group") != group:
            continue
        if name not in im["rows"]:
            raise ValueError(f"{path}: no row {name!r} (it has {', '.join(im['rows'])})")
        figures = im["rows"][name]
        for key, *_ in FIGURES:
            value = figures.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{path}: row {name!r} has no finite {key} for {im['name']} ({value!r})")
        photos[im["name"]] = figures
    if not photos:
        raise ValueError(f"{path}: no photos" + (f" in group {group!r}" if group else ""))
    return name, photos


def _interval(diff: np.ndarray, resamples: int, seed: int, chunk: int = 1 << 22) -> tuple[float, float]:
    """The 95% percentile interval of the mean of ``diff`` over ``resamples`` bootstrap
    draws of the photos (drawn in chunks, so that many photos need little memory)."""
    rng = np.random.default_rng(seed)
    per = max(1, chunk // len(diff))
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(min(per, resamples - i), len(diff)))].mean(1)
                            for i in range(0, resamples, per)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@dataclass(frozen=True)
class Difference:
    """One figure of two rows over the same photos: both means, the mean difference B - A,
    its 95% bootstrap interval, and the photos where B is better."""

    title: str
    mean_a: float
    mean_b: float
    diff: float
    lo: float
    hi: float
    better: int
    photos: int


def differences(rows_a: dict[str, dict], rows_b: dict[str, dict], resamples: int = 10000,
                seed: int = 0) -> list[Difference]:
    """Per figure of ``FIGURES``, B against A over their photos (which must be the same)."""
    if set(rows_a) != set(rows_b):
        only = sorted(set(rows_a) ^ set(rows_b))
        raise ValueError(f"the two reports hold other photos ({len(only)} in one only, e.g. {only[0]})")
    names = sorted(rows_a)
    out = []
    for key, title, higher, scale in FIGURES:
        va = np.array([rows_a[n][key] for n in names], dtype=float) * scale
        vb = np.array([rows_b[n][key] for n in names], dtype=float) * scale
        diff = vb - va
        lo, hi = _interval(diff, resamples, seed)
        better = int(((diff > 0) if higher else (diff < 0)).sum())
        out.append(Difference(title, va.mean(), vb.mean(), diff.mean(), lo, hi, better, len(names)))
    return out


_FOOTNOTE = ("higher AuC, rebalanced AuC and PSNR are better, lower cast and colourfulness gap: the distance from "
             "the real photo's")


def paired_table(a: tuple[str, dict], b: tuple[str, dict], top: int = 5, top_figure: str = "auc_rebalanced",
                 resamples: int = 10000, seed: int = 0) -> str:
    """Markdown: per figure the means, the mean difference B - A with its bootstrap interval,
    and the photos where B is better; then the ``top`` photos whose ``top_figure`` moved most."""
    (name_a, rows_a), (name_b, rows_b) = a, b
    figures = differences(rows_a, rows_b, resamples, seed)
    names = sorted(rows_a)
    lines = [f"A: {name_a}; B: {name_b}; {len(names)} photos", "",
             "| figure | A | B | B - A | 95% interval | photos where B is better |", "|---|---:|---:|---:|---:|---:|"]
    for d in figures:
        lines.append(f"| {d.title} | {d.mean_a:.2f} | {d.mean_b:.2f} | {d.diff:+.2f} | {d.lo:+.2f} to {d.hi:+.2f} "
                     f"| {d.better} of {d.photos} |")
    lines += ["", f"Means over photos ({_FOOTNOTE}); the interval from a bootstrap over the photos "
              f"({resamples} resamples)."]
    if top:
        key, title, _, scale = next(f for f in FIGURES if f[0] == top_figure)
        moved = sorted(names, key=lambda n: -abs(rows_b[n][key] - rows_a[n][key]))[:top]
        lines += ["", f"Photos whose {title} moved most:", "", "| photo | A | B | B - A |", "|---|---:|---:|---:|"]
        for n in moved:
            x, y = rows_a[n][key] * scale, rows_b[n][key] * scale
            lines.append(f"| {n} | {x:.2f} | {y:.2f} | {y - x:+.2f} |")
    return "\n".join(lines) + "\n"


_PAIR_KEYS = {"label", "a", "b", "row_a", "row_b", "temperature"}


def read_pairs(path: Path) -> list[dict]:
    """A pairs file: a YAML list of ``{label, a, b}`` (optional ``row_a``, ``row_b``,
    ``temperature``); ``a`` and ``b`` become paths relative to the file's folder."""
    import yaml

    if not path.is_file():
        raise ValueError(f"{path}: no pairs file")
    try:
        pairs = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not YAML ({first_line(e)})") from None
    if not isinstance(pairs, list) or not pairs:
        raise ValueError(f"{path}: a YAML list of pairs ({{label, a, b}}) is expected")
    out = []
    for i, pair in enumerate(pairs, 1):
        if not isinstance(pair, dict) or not {"label", "a", "b"} <= set(pair) or set(pair) - _PAIR_KEYS:
            keys = sorted(map(str, pair)) if isinstance(pair, dict) else type(pair).__name__
            raise ValueError(f"{path}: pair {i} needs label, a and b (optional row_a, row_b, temperature); "
                             f"it has {keys}")
        for key in sorted(set(pair) - {"temperature"}):
            if not isinstance(pair[key], str) or not pair[key].strip():
                raise ValueError(f"{path}: pair {i}'s {key} must be text, not {pair[key]!r}")
        t = pair.get("temperature")
        if "temperature" in pair and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)):
            raise ValueError(f"{path}: pair {i}'s temperature must be a number, not {t!r}")
        if "temperature" in pair and "row_a" in pair and "row_b" in pair:
            raise ValueError(f"{path}: pair {i} names both rows, so its temperature would choose nothing")
        out.append({**pair, "a": path.parent / pair["a"], "b": path.parent / pair["b"]})
    return out


def summary_table(pairs: list[dict], group: str | None, resamples: int = 10000, seed: int = 0) -> str:
    """Markdown: a line per pair (B against A), per figure the mean difference over photos, its
    95% interval and the photos where B is better."""
    head = "| B against A | " + " | ".join(title for _, title, *_ in FIGURES) + " |"
    lines = [head, "|---|" + "---:|" * len(FIGURES)]
    for i, pair in enumerate(pairs, 1):
        t = pair.get("temperature")
        try:
            _, rows_a = read_rows(pair["a"], pair.get("row_a"), group, t)
            _, rows_b = read_rows(pair["b"], pair.get("row_b"), group, t)
            figures = differences(rows_a, rows_b, resamples, seed)
        except ValueError as e:
            hint = str(e).replace("--row-a/--row-b", "row_a/row_b").replace("--temperature", "temperature")
            raise ValueError(f"pair {i} ({pair['label']}): {hint}") from None
        cells = [f"{d.diff:+.2f} ({d.lo:+.2f} to {d.hi:+.2f}), {d.better}/{d.photos}" for d in figures]
        lines.append(f"| {pair['label'].replace('|', '&#124;')} | " + " | ".join(cells) + " |")
    where = f"the photos of group {group}" if group else "all photos"
    lines += ["", f"Each cell: the mean difference B - A over {where}, its 95% interval from a bootstrap over the "
              f"photos ({resamples} resamples), and on how many photos B is better ({_FOOTNOTE})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.paired", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, nargs="?", help="the first report: results.json or its folder")
    p.add_argument("b", type=Path, nargs="?", help="the second report (the same photos)")
    p.add_argument("--pairs", type=Path, help="a YAML file of pairs to compare, a line each (instead of A and B)")
    p.add_argument("--group", help="compare the photos of this evaluation group (default: all photos)")
    p.add_argument("--temperature", type=float,
                   help="read the model row at this temperature (default: a report's one model row)")
    p.add_argument("--row-a", help="the row of the first report, e.g. 'default T=1' (default: its one model row)")
    p.add_argument("--row-b", help="the row of the second report (default: its one model row)")
    p.add_argument("--top", type=int, help="list the photos whose figure moved most (default 5; 0: none)")
    p.add_argument("--top-figure", choices=[k for k, *_ in FIGURES],
                   help="the figure --top ranks by (default auc_rebalanced)")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--table", type=Path, help="Markdown file to write (printed either way)")
    args = p.parse_args(argv)
    try:
        if args.resamples < 1 or (args.top is not None and args.top < 0):
            raise ValueError("--resamples must be at least 1 and --top at least 0")
        if args.pairs is not None:
            if args.a is not None or args.row_a or args.row_b or args.temperature is not None or \
                    args.top is not None or args.top_figure is not None:
                raise ValueError("--pairs names its reports, rows and temperatures itself and lists no photos: give "
                                 "no A, B, --row-a, --row-b, --temperature, --top or --top-figure with it")
            table = summary_table(read_pairs(args.pairs), args.group, args.resamples)
        elif args.b is None:
            raise ValueError("give two reports A and B, or --pairs FILE")
        else:
            a = read_rows(args.a, args.row_a, args.group, args.temperature)
            b = read_rows(args.b, args.row_b, args.group, args.temperature)
            table = paired_table(a, b, 5 if args.top is None else args.top, args.top_figure or "auc_rebalanced",
                                 args.resamples)
        if args.table:
            args.table.parent.mkdir(parents=True, exist_ok=True)
            args.table.write_text(table)
    except (OSError, ValueError) as e:
        return report_error("evaluation.paired", e)
    except KeyError as e:
        return report_error("evaluation.paired", f"not an evaluation report: it has no {e}")
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
