"""Evaluate colorization models the way the papers do: ``python -m evaluation``.

    python -m evaluation PHOTOS_DIR --model default --temperature 0.1 0.38 1.0 --out results/

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
import glob
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from colorizer.color import rgb_to_lab
from colorizer.bins import check_temperature
from colorizer.errors import first_line, report_error
from colorizer.hub import DEFAULT_MODEL
from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, is_grayscale, list_images, read_image, resize_short_side
from colorizer.metrics import (EVAL_PRIOR_GRID, AucMeter, EvaluationPrior, colorfulness, colour_cast, evaluation_prior,
                               psnr, ssim, THRESHOLD_MAX_DISTANCE, threshold_meter)
from colorizer.model import Colorizer, compose, gray_rgb
from evaluation.pooling import PooledModel, Shared, load_pools

__all__ = [
    "Photo",
    "Row",
    "Report",
    "load_photos",
    "relative_names",
    "group_rule",
    "listed_names",
    "labelled_source",
    "markdown_table",
    "markdown_tables",
    "dataset_photos",
    "evaluate",
    "write_report",
    "main",
]

DEFAULT_SIZE = 256
MEAN_AB_ROW = "mean ab (of this set)"
METRICS = ("auc", "auc_rebalanced", "threshold_accuracy", "psnr", "ssim", "colorfulness", "delta_colorfulness", "cast")


class ScoredModel(Protocol):
    """What a row needs of a model: a ``Colorizer``, or a pool of them (``evaluation.pooling``)."""

    objective: str
    temperature: float

    @property
    def uses_temperature(self) -> bool: ...

    def analyze(self, image: Image.Image): ...


@dataclass
class Photo:
    """One ground-truth photo: a name and ``(H, W, 3)`` uint8 sRGB pixels."""

    name: str
    rgb: np.ndarray
    group: str | None = None


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
        sheet: photo name -> column title -> ``(H, W, 3)`` uint8, for the contact sheets.
        groups: group -> row name -> aggregate metrics over that group's photos (empty
            when the photos have no groups).
    """

    rows: list[Row]
    summary: dict[str, dict[str, float]]
    images: list[dict]
    settings: dict
    sheet: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    groups: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


# ---------------------------------------------------------------------- inputs
def _as_colour_photo(img: Image.Image, size: int) -> np.ndarray | None:
    """Normalised image -> ``(H, W, 3)`` uint8 with its short side downscaled to
    ``size`` (Lanczos; smaller photos and ``size`` 0 kept as they are), or None for a
    photo without colour (``is_grayscale``: a gray mode, or an RGB black-and-white photo)."""
    if is_grayscale(img):
        return None
    return np.asarray(resize_short_side(img.convert("RGB"), size)).copy()


def relative_names(files: Sequence[Path], roots: Sequence[str | Path]) -> list[str]:
    """Each file's path relative to the first of ``roots`` (folders given on the command
    line) that holds it, with ``/`` separators (``food/A010.jpeg``); its bare name otherwise."""
    folders = [Path(r) for r in roots if Path(r).is_dir()]
    names = []
    for f in files:
        for folder in folders:
            try:
                names.append(Path(f).relative_to(folder).as_posix())
                break
            except ValueError:
                continue
        else:
            names.append(Path(f).name)
    return names


def group_rule(rules: Sequence[str] = (), by_folder: bool = False, rest: str = "other") -> Callable[[str], str | None]:
    """The group of a photo from its relative name: the first ``NAME=GLOB`` rule whose glob
    (``fnmatch``) matches, else ``rest``; with ``by_folder`` its top folder (``food/A010.jpeg``
    -> "food"); no groups (None) when neither is given."""
    parsed = []
    for rule in rules:
        name, sep, pattern = rule.partition("=")
        if not sep or not name.strip() or not pattern.strip():
            raise ValueError(f"--group {rule!r}: expected NAME=GLOB, e.g. food='food/*'")
        parsed.append((name.strip(), pattern.strip()))

    def group(rel: str) -> str | None:
        for name, pattern in parsed:
            if fnmatch.fnmatchcase(rel, pattern):
                return name
        if by_folder:
            return rel.split("/", 1)[0] if "/" in rel else rest
        return rest if parsed else None

    return group


def listed_names(path: str | Path, option: str = "--files-from") -> list[str]:
    """The photo names of a list file (``VALIDATION.txt``): one relative path a line;
    blank lines and lines starting with "#" are skipped. Errors name the file as ``option``."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"{option} {str(path)!r}: {e.strerror or e}") from None
    names = [line.strip().strip("/") for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise ValueError(f"{option} {str(path)!r}: lists no photo")
    return names


def labelled_source(spec: str) -> tuple[str, str]:
    """``LABEL=SOURCE`` -> (label, source); a spec with no "=", or an existing path holding
    one, names itself."""
    if "=" in spec and not Path(spec).exists():
        name, source = spec.split("=", 1)
        return name, source
    return spec, spec


def load_photos(
    files: Iterable[str | Path],
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    progress: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    names: Sequence[str] | None = None,
    groups: Callable[[str], str | None] | None = None,
) -> tuple[list[Photo], dict[str, int]]:
    """Read colour photos at the evaluation size, named by ``names`` (default: file
    names) and grouped by ``groups(name)``.

    Returns:
        the photos (at most ``limit``) and counts of skipped files:
        ``{"unreadable": n, "grayscale": m}``.
    """
    photos: list[Photo] = []
    skipped = {"unreadable": 0, "grayscale": 0}
    files = list(files)
    names = list(names) if names is not None else [Path(f).name for f in files]
    bar = tqdm(files, desc="reading photos", unit="photo", disable=not progress)
    for f, name in zip(bar, names):
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
        photos.append(Photo(name, rgb, groups(name) if groups is not None else None))
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
    "imagefolder" with ``data_dir``), class-filtered, via ``train.sources``.
    Photos are named ``<split>-<n>``, n counting readable rows; unreadable and
    grayscale rows are skipped and counted."""
    from train.sources import iter_images, open_source  # datasets only when asked for

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


def _row_label(model_name: str, model: ScoredModel, t: float | None) -> str:
    return f"{model_name} (regression)" if t is None else f"{model_name} T={t:g}"


def _sheet_temperature(model: ScoredModel, temps: list[float | None]) -> float | None:
    if temps == [None]:
        return None
    return min(temps, key=lambda t: abs(t - model.temperature))  # type: ignore[operator]


def evaluate(
    photos: Sequence[Photo],
    models: dict[str, ScoredModel] | None = None,
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
        truth| per photo), and the median (``cast``) and mean (``cast_mean``) over
        photos of the colour cast (``colorizer.metrics.colour_cast``). Photos with a
        ``group`` are also summarised per group (``Report.groups``), the rebalanced AuC
        then with the group's own prior; ``sheet_size`` photos of each group are kept.
    """
    if not photos:
        raise ValueError("evaluate: no photos to evaluate")
    models = dict(models or {})
    for t in temperatures or ():
        check_temperature(t)
    set_prior, mean_ab, group_priors = _priors(photos)
    model_temps = {name: (list(temperatures) if temperatures else [m.temperature]) if m.uses_temperature else [None]
                   for name, m in models.items()}
    rows = [Row("gray (ab = 0)"), Row(MEAN_AB_ROW)]  # the oracle constant: this set's own mean ab
    rows += [Row(_row_label(n, models[n], t), n, t) for n in models for t in model_temps[n]]
    rows.append(Row("ground truth"))

    per_image: list[dict] = []
    masses: list[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]] = []  # pooled AuCs
    keep = _sheet_photos(photos, sheet_size)
    sheet: dict[str, dict[str, np.ndarray]] = {}
    bar = tqdm(photos, desc="evaluating", unit="photo", disable=not progress)
    for index, photo in enumerate(bar):
        lab = _lab(photo.rgb)  # (1, 3, H, W)
        outputs, columns = _outputs(photo, lab[:, :1], models, model_temps, rows, mean_ab)
        if index in keep:
            sheet[photo.name] = columns
        group_prior = group_priors.get(photo.group)
        figures, mass = _figures(rows, outputs, photo.rgb, lab[:, 1:], set_prior, group_prior)
        h, w = photo.rgb.shape[:2]
        per_image.append({"name": photo.name, "group": photo.group, "width": w, "height": h,
                          "truth_colorfulness": colorfulness(photo.rgb), "rows": figures})
        masses.append(mass)
    bar.close()

    summary = _summarise(rows, per_image, masses, rebalanced_slot=1)
    by_group = {}
    for g in group_priors:
        members = [i for i, im in enumerate(per_image) if im["group"] == g]
        by_group[g] = _summarise(rows, [per_image[i] for i in members], [masses[i] for i in members], rebalanced_slot=2)
    settings = _settings(photos, set_prior, mean_ab, models, temperatures, list(group_priors))
    return Report(rows=rows, summary=summary, images=per_image, settings=settings, sheet=sheet, groups=by_group)


def _priors(photos: Sequence[Photo]) -> tuple[EvaluationPrior, torch.Tensor, dict[str, EvaluationPrior]]:
    """The evaluation set's own prior over bins (for the rebalanced AuC), its mean ab ``(2,)``
    and each group's own prior (a group's table is self-contained): one pass over the photos."""
    ab_sum = torch.zeros(2, dtype=torch.float64)

    def photos_ab(group: str | None = None) -> Iterable[torch.Tensor]:
        for photo in photos:
            if group is None or photo.group == group:
                ab = _lab(photo.rgb)[:, 1:]  # (1, 2, H, W)
                if group is None:
                    ab_sum.add_(ab.double().sum(dim=(0, 2, 3)))
                yield ab

    set_prior = evaluation_prior(photos_ab())
    mean_ab = (ab_sum / set_prior.pixels).float()
    groups = list(dict.fromkeys(p.group for p in photos if p.group is not None))
    return set_prior, mean_ab, {g: evaluation_prior(photos_ab(g)) for g in groups}


def _outputs(photo: Photo, lightness: torch.Tensor, models: dict[str, ScoredModel], model_temps: dict, rows: list,
             mean_ab: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every row's RGB of one photo (each model's network run once, rendered at each of its
    temperatures), and the contact sheet's columns (each model at its sheet temperature)."""
    outputs: dict[str, np.ndarray] = {
        rows[0].name: gray_rgb(lightness),
        rows[1].name: compose(lightness, mean_ab.view(1, 2, 1, 1)),
    }
    columns = {"gray": outputs[rows[0].name]}
    for name, m in models.items():
        pred = m.analyze(Image.fromarray(photo.rgb))  # the network runs once
        for t in model_temps[name]:
            outputs[_row_label(name, m, t)] = np.asarray(pred.render(t))
        label = _row_label(name, m, _sheet_temperature(m, model_temps[name]))
        columns[label] = outputs[label]
    outputs[rows[-1].name] = photo.rgb
    columns["ground truth"] = photo.rgb
    return outputs, columns


def _figures(rows: list, outputs: dict[str, np.ndarray], truth: np.ndarray, true_ab: torch.Tensor,
             set_prior: EvaluationPrior, group_prior: EvaluationPrior | None) -> tuple[dict, dict]:
    """Each row's figures on one photo, and the masses its pooled AuCs add up."""
    weights = set_prior.pixel_weights(true_ab)  # (1, H, W)
    group_weights = group_prior.pixel_weights(true_ab) if group_prior is not None else None
    truth_c = colorfulness(truth)
    figures, mass = {}, {}
    for row in rows:
        rgb = outputs[row.name]
        pred_ab = _lab(rgb)[:, 1:]  # (1, 2, H, W)
        plain, rebalanced, in_group = AucMeter(), AucMeter(), None
        plain.update(pred_ab, true_ab)
        rebalanced.update(pred_ab, true_ab, weights)
        if group_weights is not None:
            in_group = AucMeter()
            in_group.update(pred_ab, true_ab, group_weights)
        rgb_meter = threshold_meter(rgb, truth)
        mass[row.name] = (plain.mass, rebalanced.mass, None if in_group is None else in_group.mass, rgb_meter.mass)
        c = colorfulness(rgb)
        figures[row.name] = {
            "auc": plain.value(),
            "auc_rebalanced": rebalanced.value(),
            "threshold_accuracy": rgb_meter.value(),
            "psnr": psnr(rgb, truth),
            "ssim": ssim(rgb, truth),
            "colorfulness": c,
            "delta_colorfulness": abs(c - truth_c),
            "cast": colour_cast(pred_ab, true_ab),
        }
    return figures, mass


def _settings(photos, set_prior: EvaluationPrior, mean_ab: torch.Tensor, models: dict, temperatures,
              groups: list[str]) -> dict:
    """What the report's figures were computed with (its JSON's ``settings``)."""
    settings = {
        "photos": len(photos),
        "pixels": set_prior.pixels,
        "prior": f"empirical prior of the evaluation set's true ab over the {len(set_prior.centres)} "
        f"grid-{EVAL_PRIOR_GRID:g} in-gamut bins, one prior for every row",
        "mean_ab": [float(mean_ab[0]), float(mean_ab[1])],
        "mean_ab_row": "oracle constant: every pixel gets the mean a and b of the evaluated photos themselves",
        "models": {n: {"objective": m.objective, "default_temperature": m.temperature,
                       **({"pool": m.description} if isinstance(m, PooledModel) else {})} for n, m in models.items()},
        "temperatures": list(temperatures) if temperatures else None,
        "auc": "thresholds 0..150 step 1 on the ab L2 error, trapezoid area / 150",
        "threshold_accuracy": "Champati et al.: thresholds 0..150 step 1 on the 8-bit RGB L2 error, trapezoid area / 150",
        "colorfulness": "Hasler & Suesstrunk 2003, signed opponent channels, 8-bit RGB",
    }
    if groups:
        settings["groups"] = {g: sum(p.group == g for p in photos) for g in groups}
        settings["group_prior"] = "each group's table: the rebalanced AuC uses that group's own empirical prior"
    return settings


def _sheet_photos(photos: Sequence[Photo], per_group: int) -> set[int]:
    """Indices of the photos kept for contact sheets: ``per_group`` evenly spaced photos
    of every group (of all photos when there are no groups)."""
    if per_group <= 0:
        return set()
    keep: set[int] = set()
    for g in dict.fromkeys(p.group for p in photos):
        members = [i for i, p in enumerate(photos) if p.group == g]
        keep |= {members[int(round(j))] for j in np.linspace(0, len(members) - 1, min(per_group, len(members)))}
    return keep


def _summarise(
    rows: Sequence[Row], images: Sequence[dict], masses: Sequence[dict], rebalanced_slot: int
) -> dict[str, dict[str, float]]:
    """Row name -> aggregate figures over ``images``: pooled AuCs from the per-photo
    histograms (``rebalanced_slot`` picks the set's or the group's prior), means over
    photos, and the median colour cast."""
    summary: dict[str, dict[str, float]] = {}
    for row in rows:
        def mean(key: str) -> float:
            return float(np.mean([im["rows"][row.name][key] for im in images]))

        plain, rebalanced, rgb = AucMeter(), AucMeter(), AucMeter(THRESHOLD_MAX_DISTANCE)
        for mass in masses:
            plain.mass += mass[row.name][0]
            rebalanced.mass += mass[row.name][rebalanced_slot]
            rgb.mass += mass[row.name][3]
        summary[row.name] = {
            "auc": plain.value(),
            "auc_rebalanced": rebalanced.value(),
            "threshold_accuracy": rgb.value(),
            "auc_per_image": mean("auc"),
            "auc_rebalanced_per_image": mean("auc_rebalanced"),
            "psnr": mean("psnr"),
            "ssim": mean("ssim"),
            "colorfulness": mean("colorfulness"),
            "truth_colorfulness": float(np.mean([im["truth_colorfulness"] for im in images])),
            "delta_colorfulness": mean("delta_colorfulness"),
            "cast": float(np.median([im["rows"][row.name]["cast"] for im in images])),
            "cast_mean": mean("cast"),
        }
    return summary


# ---------------------------------------------------------------------- report
def _fmt(x: float, digits: int) -> str:
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def markdown_table(report: Report, group: str | None = None) -> str:
    """The table of all photos (or of one ``group``): one row per baseline and model x temperature."""
    summary = report.summary if group is None else report.groups[group]
    head = ("| method | AuC | AuC/img | rebal. AuC | thr. acc. (RGB) | PSNR (dB) | SSIM | colourfulness "
            "| \\|Δ colourfulness\\| | colour cast (median) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report.rows:
        s = summary[row.name]
        lines.append(
            f"| {row.name} | {_fmt(s['auc'], 3)} | {_fmt(s['auc_per_image'], 3)} | {_fmt(s['auc_rebalanced'], 3)} "
            f"| {_fmt(s.get('threshold_accuracy', math.nan), 3)} | {_fmt(s['psnr'], 2)} | {_fmt(s['ssim'], 3)} | {_fmt(s['colorfulness'], 1)} "
            f"| {_fmt(s['delta_colorfulness'], 1)} | {_fmt(s['cast'], 1)} |"
        )
    return "\n".join(lines)


def markdown_tables(report: Report) -> str:
    """Every table: each group's (with its photo count), then all photos'; or the one table."""
    if not report.groups:
        return markdown_table(report)
    counts = report.settings.get("groups", {})
    parts = [f"**{g}** ({counts.get(g, '?')} photos)\n\n{markdown_table(report, g)}" for g in report.groups]
    parts.append(f"**all** ({report.settings['photos']} photos)\n\n{markdown_table(report)}")
    return "\n\n".join(parts)


def _markdown(report: Report, command: str | None) -> str:
    s = report.settings
    lines = [
        "# Colorization evaluation",
        "",
        f"{s['photos']} photos ({s['pixels']:,} pixels)"
        + {None: ".", 0: ", at full resolution."}.get(s.get("size"), f", short side at most {s.get('size')} px."),
        "",
        markdown_tables(report),
        "",
        "AuC: share of pixels whose ab is within t of the truth, t = 0..150, area / 150 "
        "(AuC pools all pixels, AuC/img averages photos). Rebal. AuC weights each pixel by "
        "1 / prior of its true colour bin, the empirical prior of the photos of the table over the "
        "grid-10 ab bins (the mean over colour bins of each bin's accuracy). PSNR and SSIM on 8-bit "
        "RGB; colourfulness after Hasler & Suesstrunk (2003), signed opponent channels; the photos' own is "
        f"{report.summary[report.rows[-1].name]['truth_colorfulness']:.1f} over all photos. "
        "Colour cast: the distance in ab between the mean colour of the output and that of the real photo "
        "(gray's is how far the photo's mean colour is from neutral), the median over photos. "
        f"\"{MEAN_AB_ROW}\" is an oracle constant, not a method: every pixel gets the mean ab of all the "
        "evaluated photos"
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


def sweep_plot(report: Report, path: Path, group: str | None = None) -> None:
    """AuC, rebalanced AuC and colourfulness against temperature, one line per
    classification model, the baselines and the truth as horizontal lines; over the
    photos of ``group`` (each group's own figures) or of all photos."""
    summary = report.summary if group is None else report.groups[group]
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
        ax_auc.plot(ts, [summary[r.name]["auc"] for r in rows], "o-", color=colour, label=f"{name} AuC")
        ax_auc.plot(ts, [summary[r.name]["auc_rebalanced"] for r in rows], "s--", color=colour,
                    label=f"{name} rebal. AuC")
        ax_col.plot(ts, [summary[r.name]["colorfulness"] for r in rows], "o-", color=colour, label=name)
    gray, mean = report.rows[0].name, report.rows[1].name
    for name, style in ((gray, ":"), (mean, "-.")):
        ax_auc.axhline(summary[name]["auc"], color="gray", linestyle=style, label=f"{name} AuC")
    truth = summary[report.rows[-1].name]["truth_colorfulness"]
    ax_col.axhline(truth, color="black", linestyle="--", label="ground truth")
    ax_col.axhline(summary[gray]["colorfulness"], color="gray", linestyle=":", label=gray)
    of = f" ({group})" if group else ""
    ax_auc.set(xlabel="temperature T", ylabel="AuC", title=f"Accuracy against temperature{of}")
    ax_col.set(xlabel="temperature T", ylabel="colourfulness (Hasler & Suesstrunk)",
               title=f"Colourfulness against temperature{of}")
    for ax in (ax_auc, ax_col):
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def contact_sheet(report: Report, path: Path, tile_height: int = 160, group: str | None = None,
                  columns: Sequence[str] | None = None) -> None:
    """A grid of the kept photos (of one ``group``, or all): gray | each model | ground
    truth, titled columns (only ``columns``, by title, when given)."""
    members = {im["name"] for im in report.images if group is None or im.get("group") == group}
    names = [n for n in report.sheet if n in members]
    if not names:
        raise ValueError("contact_sheet: the report kept no photos" + (f" of group {group!r}" if group else ""))
    titles = [t for t in report.sheet[names[0]] if columns is None or t in columns]
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


def write_report(report: Report, out_dir: str | Path, command: str | None = None,
                 sheet_each: bool = False) -> dict[str, Path]:
    """Write ``results.md``, ``results.json``, ``sweep.png`` and (when photos were
    kept) ``contact_sheet.png``, plus ``sweep_<group>.png`` and ``contact_sheet_<group>.png``
    per group, into ``out_dir`` (created); with ``sheet_each``, also one sheet per model
    column (gray | that model | ground truth) per group, ``sheets/<group>/<model label>.png``
    (``sheets/<model label>.png`` without groups).
    Returns their paths."""
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
        "groups": {
            g: [{"name": r.name, "model": r.model, "temperature": r.temperature, **summary[r.name]} for r in report.rows]
            for g, summary in report.groups.items()
        },
        "images": report.images,
    }
    paths["json"].write_text(json.dumps(_jsonable(data), indent=1, allow_nan=False) + "\n")
    sweep_plot(report, paths["sweep"])
    for g in report.groups:
        paths[f"sweep {g}"] = out / f"sweep_{_slug(g)}.png"
        sweep_plot(report, paths[f"sweep {g}"], group=g)
    if report.sheet:
        paths["contact_sheet"] = out / "contact_sheet.png"
        contact_sheet(report, paths["contact_sheet"])
        for g in report.groups:
            paths[f"contact_sheet {g}"] = out / f"contact_sheet_{_slug(g)}.png"
            contact_sheet(report, paths[f"contact_sheet {g}"], group=g)
        if sheet_each:
            paths.update(_sheet_each(report, out / "sheets"))
    return paths


def _sheet_each(report: Report, folder: Path) -> dict[str, Path]:
    """One contact sheet per model column (gray | that model | truth) and group, in ``folder``
    (replaced, so no sheet of an earlier evaluation stays), named after its --model label."""
    titles = list(next(iter(report.sheet.values())))
    label = {r.name: r.model for r in report.rows if r.model}
    names: dict[str, str] = {}
    for title in titles[1:-1]:  # between gray and the ground truth
        name = _slug(label.get(title) or title)
        while name in names.values():
            name += "-2"
        names[title] = name
    shutil.rmtree(folder, ignore_errors=True)
    paths = {}
    for g in list(report.groups) or [None]:
        (folder / (_slug(g) if g else "")).mkdir(parents=True, exist_ok=True)
        for title in titles[1:-1]:
            paths[f"sheet {g} {title}"] = folder / (_slug(g) if g else "") / f"{names[title]}.png"
            contact_sheet(report, paths[f"sheet {g} {title}"], group=g, columns=[titles[0], title, titles[-1]])
    return paths


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Evaluate colorization models against baselines: AuC, class-rebalanced AuC, "
        "PSNR, SSIM and colourfulness, written as Markdown, JSON and plots.",
    )
    p.add_argument("photos", nargs="*", type=Path, help="colour photos, or folders of them (searched recursively)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="keep only files whose path relative to the folder matches (repeatable), e.g. 'food/*0.*'")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="drop files that match (repeatable)")
    p.add_argument("--files-from", metavar="LIST",
                   help="evaluate only the photos this file lists, one path relative to the folder a line "
                        "(e.g. ../shared/data/VALIDATION.txt)")
    p.add_argument("--group", action="append", default=[], metavar="NAME=GLOB",
                   help="report the photos whose relative path matches GLOB as group NAME (repeatable, first match "
                        "wins; the rest go to --other-group), e.g. --group food='food/*'")
    p.add_argument("--other-group", default="other", metavar="NAME",
                   help="group of the photos no --group matches (default: other)")
    p.add_argument("--group-by-folder", action="store_true", help="one group per top folder")
    p.add_argument("--dataset", help="a datasets data set instead of folders: Hub id, or a builder like imagefolder")
    p.add_argument("--data-dir", help="data_dir for --dataset builders")
    p.add_argument("--split", default="validation", help="data set split (default: validation)")
    p.add_argument("--classes", nargs="+", help="keep only these classes (ids, names, WordNet ids)")
    p.add_argument("--image-column", default="image")
    p.add_argument("--label-column", default="label")
    p.add_argument("--streaming", action="store_true", help="stream the data set instead of downloading it")
    p.add_argument("-m", "--model", action="append", default=[],
                   help="shipped model name, model folder or Hub id, or LABEL=THAT to name its rows "
                        "(repeatable; default: 'default', unless --pool names the models)")
    p.add_argument("--pool", action="append", default=[], metavar="LABEL=MODEL,MODEL[:RULE]",
                   help="also evaluate the models' predicted distributions pooled per pixel, as row LABEL "
                        "(repeatable; RULE geometric, the default, or mixture; see evaluation.pooling), e.g. "
                        "--pool pooled=default,hypercolumn-eccv16")
    p.add_argument("-t", "--temperature", type=float, nargs="+",
                   help="annealed-mean temperatures in [0, 1] (default: each model's own)")
    p.add_argument("--baselines-only", action="store_true", help="evaluate no model, only the baselines")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"downscale photos so the short side is at most this (default {DEFAULT_SIZE}; 0: full size)")
    p.add_argument("-n", "--limit", type=int, help="evaluate at most N photos")
    p.add_argument("--sheet", type=int, default=4, help="photos on the contact sheet, per group (default 4)")
    p.add_argument("--sheet-each", action="store_true",
                   help="also one contact sheet per model (gray | model | truth) and group, in OUT/sheets/[GROUP/]")
    p.add_argument("-o", "--out", type=Path, required=True, help="folder for the report (created)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluation"

    def error(msg: str) -> int:
        return report_error(prog, msg)

    if bool(args.photos) == bool(args.dataset):
        return error("give photo folders or --dataset (exactly one of them)")
    if args.limit is not None and args.limit < 1:
        return error(f"--limit must be at least 1, got {args.limit}")
    if args.size < 0:
        return error(f"--size must be >= 0, got {args.size}")
    try:
        for t in args.temperature or ():
            check_temperature(t)
    except ValueError as e:
        return error(f"--{e}")
    names = [] if args.baselines_only else (args.model or ([] if args.pool else [DEFAULT_MODEL]))
    if args.baselines_only and args.pool:
        return error("--pool evaluates models; --baselines-only evaluates none")

    loaded: dict[str, Shared] = {}  # one network per source, however many rows use it

    def load(source: str) -> Shared:
        if source not in loaded:
            try:
                loaded[source] = Shared(Colorizer.from_pretrained(source).to(args.device).eval(), source)
            except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
                raise _LoadError(f"cannot load model {source!r}: {first_line(e)}") from None
        return loaded[source]

    models: dict[str, ScoredModel] = {}
    try:
        for spec in names:
            name, source = labelled_source(spec)  # LABEL=SOURCE names its rows
            if name in models:
                return error(f"--model {spec!r}: two models named {name!r}")
            models[name] = load(source)
        for name, pool in load_pools(args.pool, load).items():
            if name in models:
                return error(f"--pool: two models named {name!r}")
            models[name] = pool
    except _LoadError as e:
        return error(str(e))
    except ValueError as e:
        return error(first_line(e))

    progress = not args.quiet
    try:
        if args.dataset:
            photos, skipped = dataset_photos(
                args.dataset, data_dir=args.data_dir, split=args.split, image_column=args.image_column,
                label_column=args.label_column, classes=args.classes, streaming=args.streaming,
                size=args.size, limit=args.limit, progress=progress,
            )
        else:
            include = list(args.include)
            if args.files_from:
                include += [glob.escape(name) for name in listed_names(args.files_from)]
            files = list_images(args.photos, include, args.exclude)
            if not files:
                return error(f"no image files found in {', '.join(map(str, args.photos))} "
                             "(check --include/--exclude/--files-from)")
            groups = group_rule(args.group, args.group_by_folder, args.other_group)
            photos, skipped = load_photos(files, args.size, args.limit, progress,
                                          names=relative_names(files, args.photos), groups=groups)
        if not photos:
            return error(f"no colour photos to evaluate (skipped: {skipped})")
        report = evaluate(photos, models, args.temperature, sheet_size=args.sheet, progress=progress)
        report.settings.update(size=args.size, skipped=skipped)
        command = "python -m evaluation " + " ".join(_quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        paths = write_report(report, args.out, command, sheet_each=args.sheet_each)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        return error(first_line(e))
    print(markdown_tables(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


class _LoadError(Exception):
    """A model that cannot be loaded (its message is the user's one line)."""


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(str(arg))


if __name__ == "__main__":
    sys.exit(main())
