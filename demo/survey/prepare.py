"""Prepare a survey folder: real photos, their colorizations, and attention checks.

``prepare_survey(photos, out, models, temperatures)`` writes, for every colour
photo in ``photos``::

    out/real/<photo>.png                        the photo, resized so its longer side is ``size``
    out/fake/<model>/T<temperature>/<photo>.png  the colorization of its grayscale
    out/check/hue/<photo>.png                   attention check: hue turned by 180 degrees
    out/check/swap/<photo>.png                  attention check: red and blue swapped
    out/survey.json                             the manifest ``load_survey`` reads

Real and colorized photos have the same size and the same lightness (the
colorization keeps the real photo's L exactly), and both are lossless PNG, so
nothing but the colours tells them apart. Each model runs once per photo; every
temperature is rendered from that one prediction. Files already there are kept
(delete them, or pass ``force=True``, to redo them), except a model's
colorizations when its weights changed: the manifest records a digest of each
model's ``model.safetensors``, a new digest remakes that model's images, and the
digest is part of every pair id, so votes on different weights never share a pair.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from colorizer import Colorizer, ImageError
from colorizer.color import clip_chroma, lab_to_rgb, rgb_to_lab
from colorizer.bins import check_temperature
from colorizer.images import IMAGE_SUFFIXES, is_grayscale, list_images, read_image
from colorizer.hub import DEFAULT_MODEL, weights_file
from demo.survey.sampling import Pair

__all__ = [
    "prepare_survey",
    "load_survey",
    "Survey",
    "ModelSpec",
    "parse_model_spec",
    "weights_digest",
    "CHECKS",
    "MANIFEST",
]

MANIFEST = "survey.json"
CHECKS = ("hue", "swap")


@dataclass(frozen=True)
class ModelSpec:
    """A model for the survey: ``label`` names it in folders, votes and results;
    ``source`` is what ``colorizer.load_model`` takes (shipped name, folder, Hub id)."""

    label: str
    source: str


def parse_model_spec(text: str) -> ModelSpec:
    """"default" -> (default, default); "tiny=/models/tiny" -> (tiny, /models/tiny);
    "/models/tiny" -> (tiny, /models/tiny); "user/repo" -> (user-repo, user/repo)."""
    if "=" in text:
        label, source = text.split("=", 1)
    else:
        source = text
        label = Path(text).name if Path(text).is_dir() else text.replace("/", "-")
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.")
    if not label or not source:
        raise ValueError(f"model must be NAME, PATH or LABEL=SOURCE, got {text!r}")
    return ModelSpec(label, source)


def _t_dir(t: float | None) -> str:
    return "T-" if t is None else f"T{t:g}"


def _resize(img: Image.Image, size: int) -> Image.Image:
    rgb = img.convert("RGB")
    w, h = rgb.size
    scale = size / max(w, h)
    if scale < 1:
        rgb = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return rgb


def weights_digest(source: str) -> str:
    """First 12 hex digits of the SHA-256 of a model's ``model.safetensors`` (shipped name,
    folder or Hub repo id, found as ``Colorizer.from_pretrained`` finds it)."""
    with open(weights_file(source), "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:12]


def _load(spec: ModelSpec) -> Colorizer:
    """The model, freshly loaded (not the per-process cache: its weights must be the ones just hashed)."""
    try:
        return Colorizer.from_pretrained(spec.source).eval()
    except (OSError, RuntimeError, TypeError, ValueError) as e:  # RuntimeError: weights that do not fit the config
        raise ValueError(f"model {spec.source}: {' '.join(str(e).split())[:300]}") from None


def _recorded_weights(out: Path) -> dict[str, str]:
    """label -> weights digest, from the manifest already in ``out`` ({} if none or unreadable)."""
    try:
        return dict(json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("weights", {}))
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def attention_image(real: Image.Image, kind: str) -> Image.Image:
    """An obviously wrongly coloured version of a real RGB photo with the same L.

    ``hue``: a and b negated (hue turned 180 degrees: skies orange, grass purple), L kept;
    ``swap``: red and blue channels exchanged.
    """
    rgb = torch.from_numpy(np.asarray(real.convert("RGB")).copy()).permute(2, 0, 1)[None]  # (1, 3, H, W)
    if kind == "hue":
        lab = rgb_to_lab(rgb)
        lab[:, 1:] = -lab[:, 1:]
        out = lab_to_rgb(clip_chroma(lab))[0]  # (3, H, W) in [0, 1]; L kept, chroma shrunk into gamut
        return Image.fromarray((out * 255 + 0.5).clamp(0, 255).byte().permute(1, 2, 0).numpy())
    if kind == "swap":
        return Image.fromarray(np.asarray(real.convert("RGB"))[:, :, ::-1].copy())
    raise ValueError(f"attention check must be one of {CHECKS}, got {kind!r}")


def prepare_survey(
    photos: str | Path,
    out: str | Path,
    models: Sequence[str | ModelSpec] = (DEFAULT_MODEL,),
    temperatures: Sequence[float | None] = (None,),
    size: int = 256,
    checks: Sequence[str] = CHECKS,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Colorize every colour photo in a folder once and write the survey folder.

    Args:
        photos: folder of real colour photos (searched recursively; grayscale ones skipped).
        out: survey folder to write (created).
        models: model names/folders/Hub ids, or "LABEL=SOURCE".
        temperatures: annealed-mean temperatures in [0, 1]; None: each model's own
            (``Colorizer.temperature``). Regression models ignore them.
        size: longer side of the images shown, in pixels (the published study used 256).
        checks: attention checks to make ("hue", "swap"); () for none.
    Returns:
        the path of the manifest.
    """
    photos, out = Path(photos), Path(out)
    if not photos.is_dir():
        raise ValueError(f"photos: not a folder: {photos}")
    if not temperatures:
        raise ValueError("give at least one temperature")
    for t in temperatures:
        if t is not None:
            check_temperature(t)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    for c in checks:
        if c not in CHECKS:
            raise ValueError(f"attention check must be one of {CHECKS}, got {c!r}")
    specs = [m if isinstance(m, ModelSpec) else parse_model_spec(m) for m in models]
    if len({s.label for s in specs}) != len(specs):
        raise ValueError(f"model labels must differ, got {[s.label for s in specs]}")
    files = list_images([photos])
    if not files:
        raise ValueError(f"photos: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {photos}")

    # 1. Real photos at display size.
    entries: dict[str, dict] = {}
    skipped: list[str] = []
    for path in tqdm(files, desc="real photos", disable=not progress):
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(path.relative_to(photos).with_suffix("")))
        if name in entries:
            skipped.append(f"{path.name} (duplicate name)")
            continue
        real_path = out / "real" / f"{name}.png"
        try:
            if force or not real_path.exists():
                rgb = _resize(read_image(path), size)
                if is_grayscale(rgb):
                    skipped.append(f"{path.name} (grayscale)")
                    continue
                real_path.parent.mkdir(parents=True, exist_ok=True)
                rgb.save(real_path)
        except ImageError as e:
            skipped.append(str(e))
            continue
        entries[name] = {"name": name, "source": str(path), "real": f"real/{name}.png", "fakes": [], "checks": []}
    if not entries:
        raise ValueError(f"photos: no usable colour photos in {photos} (skipped: {'; '.join(skipped)})")

    # 2. Attention checks.
    for name, entry in entries.items():
        for kind in checks:
            rel = f"check/{kind}/{name}.png"
            if force or not (out / rel).exists():
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                attention_image(read_image(out / entry["real"]), kind).save(out / rel)
            entry["checks"].append({"kind": kind, "path": rel})

    # 3. Colorizations: one network run per (model, photo), every temperature from it.
    #    A model whose weights differ from those recorded has all its images remade.
    recorded = _recorded_weights(out)
    digests = {spec.label: weights_digest(spec.source) for spec in specs}
    stale = {s.label for s in specs if recorded.get(s.label) != digests[s.label] and (out / "fake" / s.label).is_dir()}
    if stale:
        (out / MANIFEST).unlink(missing_ok=True)  # until the remake is done, no manifest mixes old and new images
    for spec in specs:
        redo = force or spec.label in stale
        if spec.label in stale:
            tqdm.write(
                f"survey: model {spec.label}: weights changed ({recorded.get(spec.label, 'unrecorded')} -> "
                f"{digests[spec.label]}), remaking its colorizations",
                file=sys.stderr,
            )
        model: Colorizer | None = None
        for name, entry in tqdm(entries.items(), desc=f"colorizing with {spec.label}", disable=not progress):
            temps: list[float | None] = list(temperatures)
            if model is None:
                model = _load(spec)
            if not model.uses_temperature:
                temps = [None]
            else:  # None: the model's own temperature, recorded as the number it is
                temps = list(dict.fromkeys(model.temperature if t is None else t for t in temps))
            rels = [f"fake/{spec.label}/{_t_dir(t)}/{name}.png" for t in temps]
            todo = [(t, rel) for t, rel in zip(temps, rels) if redo or not (out / rel).exists()]
            if todo:
                pred = model.analyze(out / entry["real"])
                for t, rel in todo:
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    pred.render(t).save(out / rel)
            entry["fakes"] += [
                {"model": spec.label, "temperature": t, "weights": digests[spec.label], "path": rel}
                for t, rel in zip(temps, rels)
            ]

    manifest = {
        "version": 2,
        "size": size,
        "models": {s.label: s.source for s in specs},
        "weights": digests,
        "temperatures": list(temperatures),
        "checks": list(checks),
        "photos": list(entries.values()),
        "skipped": skipped,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


@dataclass
class Survey:
    """A prepared survey: its folder, colorized pairs and attention-check pairs."""

    folder: Path
    pairs: list[Pair] = field(default_factory=list)
    checks: list[Pair] = field(default_factory=list)
    size: int = 256

    @property
    def photos(self) -> list[str]:
        return sorted({p.photo for p in self.pairs})


def load_survey(folder: str | Path) -> Survey:
    """Read a survey folder written by ``prepare_survey``.

    Raises:
        ValueError: no manifest, or a listed image is missing.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{folder}: no {MANIFEST}; run `python -m demo.survey prepare --photos DIR --out {folder}` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    survey = Survey(folder=folder, size=int(manifest.get("size", 256)))
    for entry in manifest["photos"]:
        real = folder / entry["real"]
        for f in entry["fakes"]:
            t = f["temperature"]
            pair_id = f"{entry['name']}|{f['model']}|{_t_dir(t)}"
            if f.get("weights"):  # version 1 manifests have none: their pair ids stay as they were
                pair_id += f"|{f['weights']}"
            survey.pairs.append(Pair(pair_id, entry["name"], real, folder / f["path"], f["model"], t, "trial"))
        for c in entry["checks"]:
            pair_id = f"{entry['name']}|check:{c['kind']}"
            survey.checks.append(Pair(pair_id, entry["name"], real, folder / c["path"], c["kind"], None, "attention"))
    missing = [str(p) for pair in survey.pairs + survey.checks for p in (pair.real, pair.fake) if not p.is_file()]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} listed images are missing, e.g. {missing[0]}; run prepare again")
    return survey
