"""Evaluate colorization models the way the papers do: ``python -m colorizer.evaluate``.

    python -m colorizer.evaluate PHOTOS_DIR --model default --temperature 0.1 0.38 1.0 --out results/

Ground truth is each colour photo; the input is its L channel. Every model is run
once per photo (``Colorizer.analyze``) and decoded at every temperature from that
cached prediction. Beside the models, three reference rows give the numbers meaning:
**gray** (a = b = 0), **mean ab (of this set)** and **ground truth** (the photo
itself: AuC 1, PSNR inf, a sanity check). The mean-ab row is an *oracle constant*: it
paints every pixel with the mean a and b of the very photos being scored, which no
method can know in advance, so it is the best single colour for this set, not a
baseline a model has to beat fairly.

Conventions (see ``colorizer.metrics`` for each metric's formula):

* Size: photos whose short side is longer than ``--size`` (256) are downscaled
  (Lanczos) so that it is 256, keeping the aspect ratio; smaller photos are used as
  they are; ``--size 0`` keeps full resolution. Metrics are computed at that size.
* Every row is scored on the 8-bit sRGB image it produces, as a user would save it
  (models: the photo's own L with the predicted ab, upsampled and brought into
  gamut). AuC uses the ab of that image against the photo's ab.
* Class-rebalanced AuC uses one prior for every row: the evaluation set's own
  empirical prior, the distribution of its true ab over the grid-10 in-gamut bins
  (``colorizer.metrics.evaluation_prior``, the same definition training's validation
  uses), so rows of different models stay comparable. With that prior the rebalanced
  accuracy is the mean over colour bins of each bin's accuracy.
* "AuC" pools the pixels of all photos; "AuC/img" is the mean of per-photo AuCs.
  PSNR, SSIM and colourfulness are means over photos (a perfect photo has PSNR inf,
  so the ground-truth row's mean PSNR is inf).
* Photos without colour are skipped (they have no colour to score): grayscale modes,
  and RGB files holding a black-and-white photo (``colorizer.images.is_grayscale``:
  mean channel spread of at most 2 levels).

Writes to ``--out``: ``results.md`` (the table), ``results.json`` (settings, table
and per-photo figures; an infinite PSNR is written as the string "inf"),
``sweep.png`` (AuC and colourfulness against T) and ``contact_sheet.png``.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from colorizer.color import rgb_to_lab
from colorizer.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageError,
    is_grayscale,
    read_image,
    resize_short_side,
)
from colorizer.metrics import EVAL_PRIOR_GRID, AucMeter, colorfulness, evaluation_prior, psnr, ssim
from colorizer.model import Colorizer, compose

__all__ = [
    "Photo",
    "Row",
    "Report",
    "list_images",
    "gray_rgb",
    "load_photos",
    "dataset_photos",
    "evaluate",
    "write_report",
    "main",
]

DEFAULT_SIZE = 256
MEAN_AB_ROW = "mean ab (of this set)"
METRICS = ("auc", "auc_rebalanced", "psnr", "ssim", "colorfulness", "delta_colorfulness")


@dataclass
class Photo:
    """One ground-truth photo: a name and ``(H, W, 3)`` uint8 sRGB pixels."""

    name: str
    rgb: np.ndarray


@dataclass
class Row:
    """One line of the table: a baseline (``model`` None) or a model at a temperature
    (``temperature`` None for a regression model, which has none)."""

    name: str
    model: str | None = None
    temperature: float | None = None


@dataclass
class Report:
    """Everything an evaluation measured.

    Attributes:
        rows: the table's rows, in order.
        summary: row name -> aggregate metrics (see ``evaluate``).
        images: per photo: name, size, truth colourfulness and row name -> metrics.
        settings: how it was measured (sizes, prior, models, temperatures, counts).
        sheet: photo name -> column title -> ``(H, W, 3)`` uint8, for the contact sheet.
    """

    rows: list[Row]
    summary: dict[str, dict[str, float]]
    images: list[dict]
    settings: dict
    sheet: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


# ---------------------------------------------------------------------- inputs
def list_images(paths: Sequence[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """Image files from files and folders (folders searched recursively, sorted).

    ``include`` / ``exclude`` are glob patterns (``fnmatch``, case-sensitive) matched
    against each file's path relative to the folder given, with ``/`` separators
    (``food/*0.*``), or its bare name for files given directly. A file is kept when it
    matches some ``include`` pattern (or none are given) and no ``exclude`` pattern.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    found: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append((f, f.relative_to(p).as_posix()))
        elif p.is_file():
            found.append((p, p.name))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")

    def keep(rel: str) -> bool:
        if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
            return False
        return not any(fnmatch.fnmatchcase(rel, g) for g in exclude)

    return [f for f, rel in found if keep(rel)]


def _as_colour_photo(img: Image.Image, size: int) -> np.ndarray | None:
    """Normalised image -> ``(H, W, 3)`` uint8 with its short side downscaled to
    ``size`` (Lanczos; smaller photos and ``size`` 0 kept as they are), or None for a
    photo without colour (``is_grayscale``: a gray mode, or an RGB black-and-white photo)."""
    if is_grayscale(img):
        return None
    return np.asarray(resize_short_side(img.convert("RGB"), size)).copy()


def load_photos(
    files: Iterable[str | Path],
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[Photo], dict[str, int]]:
    """Read colour photos at the evaluation size.

    Returns:
        the photos (at most ``limit``) and counts of skipped files:
        ``{"unreadable": n, "grayscale": m}``.
    """
    photos: list[Photo] = []
    skipped = {"unreadable": 0, "grayscale": 0}
    files = list(files)
    bar = tqdm(files, desc="reading photos", unit="photo", disable=not progress)
    for f in bar:
        if limit is not None and len(photos) >= limit:
            break
        try:
            rgb = _as_colour_photo(read_image(f, max_pixels), size)
        except ImageError as e:
            skipped["unreadable"] += 1
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            continue
        if rgb is None:
            skipped["grayscale"] += 1
            continue
        photos.append(Photo(Path(f).name, rgb))
    bar.close()
    return photos, skipped


def dataset_photos(
    dataset: str,
    *,
    data_dir: str | None = None,
    split: str = "validation",
    image_column: str = "image",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    streaming: bool = False,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[list[Photo], dict[str, int]]:
    """Colour photos from a ``datasets`` data set (Hub id or a builder such as
    "imagefolder" with ``data_dir``), class-filtered, via ``colorizer.sources``.
    Photos are named ``<split>-<n>``, n counting readable rows; unreadable and
    grayscale rows are skipped and counted."""
    from colorizer.sources import iter_images, open_source  # datasets only when asked for

    source = open_source(
        dataset,
        data_dir=data_dir,
        split=split,
        image_column=image_column,
        label_column=label_column,
        classes=list(classes) if classes else None,
        streaming=streaming,
    )
    photos: list[Photo] = []
    unread: collections.Counter = collections.Counter()
    grayscale = 0
    bar = tqdm(desc="reading photos", unit="photo", total=limit, disable=not progress)
    rows = iter_images(source, image_column=image_column, label_column=label_column, skipped=unread)
    for i, (img, _label) in enumerate(rows):
        rgb = _as_colour_photo(img, size)
        if rgb is None:
            grayscale += 1
            continue
        photos.append(Photo(f"{split}-{i}", rgb))
        bar.update(1)
        if limit is not None and len(photos) >= limit:
            break
    bar.close()
    return photos, {"unreadable": sum(unread.values()), "grayscale": grayscale}


# ---------------------------------------------------------------------- evaluation
def _lab(rgb: np.ndarray) -> torch.Tensor:
    return rgb_to_lab(torch.tensor(rgb).permute(2, 0, 1)[None])  # (1, 3, H, W)


def gray_rgb(lightness: torch.Tensor) -> np.ndarray:
    """The gray baseline: L ``(1, 1, H, W)`` in [0, 100] with a = b = 0, as ``(H, W, 3)``
    uint8 sRGB with R = G = B (the colorizer's input, seen as a photo)."""
    rgb = compose(lightness, torch.zeros(1, 2, 1, 1))  # (H, W, 3)
    # a = b = 0 is neutral gray; averaging removes the +-1 rounding differences
    # between channels so that the row is exactly gray.
    return np.repeat(np.round(rgb.mean(axis=2, keepdims=True)).astype(np.uint8), 3, axis=2)


def _row_label(model_name: str, model: Colorizer, t: float | None) -> str:
    return f"{model_name} (regression)" if t is None else f"{model_name} T={t:g}"


def _sheet_temperature(model: Colorizer, temps: list[float | None]) -> float | None:
    if temps == [None]:
        return None
    return min(temps, key=lambda t: abs(t - model.temperature))  # type: ignore[operator]


def evaluate(
    photos: Sequence[Photo],
    models: dict[str, Colorizer] | None = None,
    temperatures: Sequence[float] | None = None,
    sheet_size: int = 4,
    progress: bool = False,
) -> Report:
    """Score baselines and models on ground-truth photos.

    Args:
        photos: the ground truth (at the evaluation size; see ``load_photos``).
        models: label -> model; each is run once per photo.
        temperatures: annealed-mean temperatures for every classification model
            (None: each model's own default).
        sheet_size: how many photos (evenly spaced) to keep for the contact sheet.
    Returns:
        a ``Report``; its ``summary`` holds per row: ``auc`` and ``auc_rebalanced``
        (all pixels pooled), ``auc_per_image`` and ``auc_rebalanced_per_image``
        (means over photos), and the means over photos of ``psnr`` (dB), ``ssim``,
        ``colorfulness``, ``truth_colorfulness`` and ``delta_colorfulness`` (|pred -
        truth| per photo).
    """
    if not photos:
        raise ValueError("evaluate: no photos to evaluate")
    models = dict(models or {})
    for t in temperatures or ():
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"evaluate: temperatures must be in [0, 1], got {t}")

    # Pass 1: the evaluation set's own prior over bins (for the rebalanced AuC) and its mean ab.
    ab_sum = torch.zeros(2, dtype=torch.float64)

    def photos_ab() -> Iterable[torch.Tensor]:
        for photo in photos:
            ab = _lab(photo.rgb)[:, 1:]  # (1, 2, H, W)
            ab_sum.add_(ab.double().sum(dim=(0, 2, 3)))
            yield ab

    set_prior = evaluation_prior(photos_ab())
    n_pixels = set_prior.pixels
    mean_ab = (ab_sum / n_pixels).float()  # (2,)

    model_temps: dict[str, list[float | None]] = {}
    for name, m in models.items():
        if m.objective == "regression":
            model_temps[name] = [None]
        else:
            model_temps[name] = list(temperatures) if temperatures else [m.temperature]
    rows = [Row("gray (ab = 0)"), Row(MEAN_AB_ROW)]  # the oracle constant: this set's own mean ab
    rows += [Row(_row_label(n, models[n], t), n, t) for n in models for t in model_temps[n]]
    rows.append(Row("ground truth"))

    meters = {r.name: (AucMeter(), AucMeter()) for r in rows}
    per_image: list[dict] = []
    keep = {int(round(i)) for i in np.linspace(0, len(photos) - 1, min(sheet_size, len(photos)))} if sheet_size else set()
    sheet: dict[str, dict[str, np.ndarray]] = {}

    bar = tqdm(photos, desc="evaluating", unit="photo", disable=not progress)
    for index, photo in enumerate(bar):
        lab = _lab(photo.rgb)  # (1, 3, H, W)
        lightness, true_ab = lab[:, :1], lab[:, 1:]
        weights = set_prior.pixel_weights(true_ab)  # (1, H, W)
        outputs: dict[str, np.ndarray] = {
            rows[0].name: gray_rgb(lightness),
            rows[1].name: compose(lightness, mean_ab.view(1, 2, 1, 1)),
        }
        columns = {"gray": outputs[rows[0].name]}
        for name, m in models.items():
            pred = m.analyze(Image.fromarray(photo.rgb))  # the network runs once
            for t in model_temps[name]:
                outputs[_row_label(name, m, t)] = np.asarray(pred.colorize(t))
            t_sheet = _sheet_temperature(m, model_temps[name])
            columns[_row_label(name, m, t_sheet)] = outputs[_row_label(name, m, t_sheet)]
        outputs[rows[-1].name] = photo.rgb
        columns["ground truth"] = photo.rgb
        if index in keep:
            sheet[photo.name] = columns

        truth_c = colorfulness(photo.rgb)
        figures = {}
        for row in rows:
            rgb = outputs[row.name]
            pred_ab = _lab(rgb)[:, 1:]  # (1, 2, H, W)
            plain, rebalanced = AucMeter(), AucMeter()
            plain.update(pred_ab, true_ab)
            rebalanced.update(pred_ab, true_ab, weights)
            meters[row.name][0].mass += plain.mass
            meters[row.name][1].mass += rebalanced.mass
            c = colorfulness(rgb)
            figures[row.name] = {
                "auc": plain.value(),
                "auc_rebalanced": rebalanced.value(),
                "psnr": psnr(rgb, photo.rgb),
                "ssim": ssim(rgb, photo.rgb),
                "colorfulness": c,
                "delta_colorfulness": abs(c - truth_c),
            }
        h, w = photo.rgb.shape[:2]
        per_image.append({"name": photo.name, "width": w, "height": h, "truth_colorfulness": truth_c, "rows": figures})
    bar.close()

    summary: dict[str, dict[str, float]] = {}
    for row in rows:
        def mean(key: str) -> float:
            return float(np.mean([im["rows"][row.name][key] for im in per_image]))

        summary[row.name] = {
            "auc": meters[row.name][0].value(),
            "auc_rebalanced": meters[row.name][1].value(),
            "auc_per_image": mean("auc"),
            "auc_rebalanced_per_image": mean("auc_rebalanced"),
            "psnr": mean("psnr"),
            "ssim": mean("ssim"),
            "colorfulness": mean("colorfulness"),
            "truth_colorfulness": float(np.mean([im["truth_colorfulness"] for im in per_image])),
            "delta_colorfulness": mean("delta_colorfulness"),
        }
    settings = {
        "photos": len(photos),
        "pixels": n_pixels,
        "prior": f"empirical prior of the evaluation set's true ab over the {len(set_prior.centres)} "
        f"grid-{EVAL_PRIOR_GRID:g} in-gamut bins, one prior for every row",
        "mean_ab": [float(mean_ab[0]), float(mean_ab[1])],
        "mean_ab_row": "oracle constant: every pixel gets the mean a and b of the evaluated photos themselves",
        "models": {n: {"objective": m.objective, "default_temperature": m.temperature} for n, m in models.items()},
        "temperatures": list(temperatures) if temperatures else None,
        "auc": "thresholds 0..150 step 1 on the ab L2 error, trapezoid area / 150",
        "colorfulness": "Hasler & Suesstrunk 2003, signed opponent channels, 8-bit RGB",
    }
    return Report(rows=rows, summary=summary, images=per_image, settings=settings, sheet=sheet)


# ---------------------------------------------------------------------- report
def _fmt(x: float, digits: int) -> str:
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def markdown_table(report: Report) -> str:
    """The table: one row per baseline and model x temperature."""
    head = "| method | AuC | AuC/img | rebal. AuC | PSNR (dB) | SSIM | colourfulness | \\|Δ colourfulness\\| |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report.rows:
        s = report.summary[row.name]
        lines.append(
            f"| {row.name} | {_fmt(s['auc'], 3)} | {_fmt(s['auc_per_image'], 3)} | {_fmt(s['auc_rebalanced'], 3)} "
            f"| {_fmt(s['psnr'], 2)} | {_fmt(s['ssim'], 3)} | {_fmt(s['colorfulness'], 1)} "
            f"| {_fmt(s['delta_colorfulness'], 1)} |"
        )
    return "\n".join(lines)


def _markdown(report: Report, command: str | None) -> str:
    s = report.settings
    lines = [
        "# Colorization evaluation",
        "",
        f"{s['photos']} photos ({s['pixels']:,} pixels)"
        + {None: ".", 0: ", at full resolution."}.get(s.get("size"), f", short side at most {s.get('size')} px."),
        "",
        markdown_table(report),
        "",
        "AuC: share of pixels whose ab is within t of the truth, t = 0..150, area / 150 "
        "(AuC pools all pixels, AuC/img averages photos). Rebal. AuC weights each pixel by "
        "1 / prior of its true colour bin, the empirical prior of this evaluation set over the "
        "grid-10 ab bins (the mean over colour bins of each bin's accuracy). PSNR and SSIM on 8-bit "
        "RGB; colourfulness after Hasler & Suesstrunk (2003), signed opponent channels; the photos' own is "
        f"{report.summary[report.rows[-1].name]['truth_colorfulness']:.1f}. "
        f"\"{MEAN_AB_ROW}\" is an oracle constant, not a method: every pixel gets the mean ab of these "
        "very photos"
        + (f" ({s['mean_ab'][0]:.1f}, {s['mean_ab'][1]:.1f})" if "mean_ab" in s else "")
        + ", which nothing could know in advance.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def sweep_plot(report: Report, path: Path) -> None:
    """AuC, rebalanced AuC and colourfulness against temperature, one line per
    classification model, the baselines and the truth as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_auc, ax_col) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    models: dict[str, list[Row]] = {}
    for row in report.rows:
        if row.model is not None:
            models.setdefault(row.model, []).append(row)
    for i, (name, rows) in enumerate(models.items()):
        colour = f"C{i}"
        rows = sorted((r for r in rows if r.temperature is not None), key=lambda r: r.temperature)
        if not rows:
            continue
        ts = [r.temperature for r in rows]
        ax_auc.plot(ts, [report.summary[r.name]["auc"] for r in rows], "o-", color=colour, label=f"{name} AuC")
        ax_auc.plot(ts, [report.summary[r.name]["auc_rebalanced"] for r in rows], "s--", color=colour,
                    label=f"{name} rebal. AuC")
        ax_col.plot(ts, [report.summary[r.name]["colorfulness"] for r in rows], "o-", color=colour, label=name)
    gray, mean = report.rows[0].name, report.rows[1].name
    for name, style in ((gray, ":"), (mean, "-.")):
        ax_auc.axhline(report.summary[name]["auc"], color="gray", linestyle=style, label=f"{name} AuC")
    truth = report.summary[report.rows[-1].name]["truth_colorfulness"]
    ax_col.axhline(truth, color="black", linestyle="--", label="ground truth")
    ax_col.axhline(report.summary[gray]["colorfulness"], color="gray", linestyle=":", label=gray)
    ax_auc.set(xlabel="temperature T", ylabel="AuC", title="Accuracy against temperature")
    ax_col.set(xlabel="temperature T", ylabel="colourfulness (Hasler & Suesstrunk)",
               title="Colourfulness against temperature")
    for ax in (ax_auc, ax_col):
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contact_sheet(report: Report, path: Path, tile_height: int = 160) -> None:
    """A grid of a few photos: gray | each model | ground truth, titled columns."""
    if not report.sheet:
        raise ValueError("contact_sheet: the report kept no photos (sheet_size 0)")
    names = list(report.sheet)
    titles = list(report.sheet[names[0]])
    font = ImageFont.load_default(size=14)
    widths = []
    for name in names:
        h, w = report.sheet[name][titles[0]].shape[:2]
        widths.append(max(1, round(w * tile_height / h)))
    col_w = max(max(widths), 120)
    pad, head = 6, 22
    sheet = Image.new("RGB", (len(titles) * (col_w + pad) + pad, head + len(names) * (tile_height + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(titles):
        draw.text((pad + j * (col_w + pad), 4), title, fill="black", font=font)
    for i, name in enumerate(names):
        for j, title in enumerate(titles):
            tile = Image.fromarray(report.sheet[name][title]).resize((widths[i], tile_height), Image.Resampling.LANCZOS)
            sheet.paste(tile, (pad + j * (col_w + pad), head + i * (tile_height + pad)))
    sheet.save(path)


def write_report(report: Report, out_dir: str | Path, command: str | None = None) -> dict[str, Path]:
    """Write ``results.md``, ``results.json``, ``sweep.png`` and (when photos were
    kept) ``contact_sheet.png`` into ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "sweep": out / "sweep.png"}
    paths["markdown"].write_text(_markdown(report, command))
    data = {
        "settings": report.settings,
        "command": command,
        "table": [
            {"name": r.name, "model": r.model, "temperature": r.temperature, **report.summary[r.name]}
            for r in report.rows
        ],
        "images": report.images,
    }
    paths["json"].write_text(json.dumps(_jsonable(data), indent=1, allow_nan=False) + "\n")
    sweep_plot(report, paths["sweep"])
    if report.sheet:
        paths["contact_sheet"] = out / "contact_sheet.png"
        contact_sheet(report, paths["contact_sheet"])
    return paths


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m colorizer.evaluate",
        description="Evaluate colorization models against baselines: AuC, class-rebalanced AuC, "
        "PSNR, SSIM and colourfulness, written as Markdown, JSON and plots.",
    )
    p.add_argument("photos", nargs="*", type=Path, help="colour photos, or folders of them (searched recursively)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="keep only files whose path relative to the folder matches (repeatable), e.g. 'food/*0.*'")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="drop files that match (repeatable)")
    p.add_argument("--dataset", help="a datasets data set instead of folders: Hub id, or a builder like imagefolder")
    p.add_argument("--data-dir", help="data_dir for --dataset builders")
    p.add_argument("--split", default="validation", help="data set split (default: validation)")
    p.add_argument("--classes", nargs="+", help="keep only these classes (ids, names, WordNet ids)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--streaming", action="store_true", help="stream the data set instead of downloading it")
    p.add_argument("-m", "--model", action="append", default=[],
                   help="shipped model name, model folder or Hub id (repeatable; default: 'default')")
    p.add_argument("-t", "--temperature", type=float, nargs="+",
                   help="annealed-mean temperatures in [0, 1] (default: each model's own)")
    p.add_argument("--baselines-only", action="store_true", help="evaluate no model, only the baselines")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"downscale photos so the short side is at most this (default {DEFAULT_SIZE}; 0: full size)")
    p.add_argument("-n", "--limit", type=int, help="evaluate at most N photos")
    p.add_argument("--sheet", type=int, default=4, help="photos on the contact sheet (default 4)")
    p.add_argument("-o", "--out", type=Path, required=True, help="folder for the report (created)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "colorizer.evaluate"

    def error(msg: str) -> int:
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2

    if bool(args.photos) == bool(args.dataset):
        return error("give photo folders or --dataset (exactly one of them)")
    if args.limit is not None and args.limit < 1:
        return error(f"--limit must be at least 1, got {args.limit}")
    if args.size < 0:
        return error(f"--size must be >= 0, got {args.size}")
    for t in args.temperature or ():
        if not 0.0 <= t <= 1.0:
            return error(f"--temperature must be in [0, 1], got {t}")
    names = [] if args.baselines_only else (args.model or ["default"])

    models: dict[str, Colorizer] = {}
    for name in names:
        try:
            models[name] = Colorizer.from_pretrained(name).to(args.device).eval()
        except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
            return error(f"cannot load model {name!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")

    progress = not args.quiet
    try:
        if args.dataset:
            photos, skipped = dataset_photos(
                args.dataset, data_dir=args.data_dir, split=args.split, image_column=args.image_column,
                label_column=args.label_column, classes=args.classes, streaming=args.streaming,
                size=args.size, limit=args.limit, progress=progress,
            )
        else:
            files = list_images(args.photos, args.include, args.exclude)
            if not files:
                return error(f"no image files found in {', '.join(map(str, args.photos))} (check --include/--exclude)")
            photos, skipped = load_photos(files, args.size, args.limit, progress)
        if not photos:
            return error(f"no colour photos to evaluate (skipped: {skipped})")
        report = evaluate(photos, models, args.temperature, sheet_size=args.sheet, progress=progress)
        report.settings.update(size=args.size, skipped=skipped)
        command = "python -m colorizer.evaluate " + " ".join(_quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        paths = write_report(report, args.out, command)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        return error(str(e).splitlines()[0] if str(e) else type(e).__name__)
    print(markdown_table(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


if __name__ == "__main__":
    sys.exit(main())
