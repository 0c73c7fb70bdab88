"""``Colorizer``: the whole colorization model, Hub-ready.

One ``nn.Module`` holds the network, its input normalisation, its head and the
quantized ab space (bin centres, prior and rebalancing weights as named buffers),
so ``config.json`` + ``model.safetensors`` describe it completely. It is a
``PyTorchModelHubMixin``: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``
work with local folders and Hub repositories, strictly, with no pickle.

Full-resolution inference (``analyze`` / ``colorize``): the photo's L is resized,
keeping its aspect ratio, so its area is about ``input_size``^2 (both sides multiples
of 8), the network predicts ab at a quarter of that, ab is upsampled bilinearly to
the photo's full resolution, chroma is shrunk where (L, a, b) would leave the sRGB
gamut, and the result is recombined with the photo's own full-resolution L. The
original release instead squashed every photo into a 256x256 square, which
distorts shapes the network sees; keeping the aspect ratio avoids that.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
from PIL import Image
from torch import nn

from colorizer.bins import UV_SCALE, annealed_mean, bin_space, check_temperature, entropy, gamut_bins, rebalance_weights, rgb_to_chroma
from colorizer.color import lab_to_rgb, rgb_to_lab, rgb_to_yuv, yuv_to_rgb
from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, Lightness, read_image, split_lightness
from colorizer.losses import channel_classification_loss, classification_loss, regression_loss
from colorizer.cheng import Cheng15, joint_bilateral
from colorizer.networks import ECCV16, GlobalLocal, Hypercolumn
from colorizer.render import render

__all__ = [
    "Colorizer",
    "Prediction",
    "network_size",
    "compose",
    "gray_rgb",
    "DEFAULT_MODEL",
    "available_models",
    "resolve_model",
    "weights_file",
    "setting_conflict",
]

DEFAULT_MODEL = "default"
NETWORKS = {"eccv16": ECCV16, "global_local": GlobalLocal, "cheng15": Cheng15, "hypercolumn": Hypercolumn}
COLOR_SPACES = {"lab": 2, "yuv": 2, "rgb": 3}  # what a regression model predicts -> its output channels
OBJECTIVES = ("classification", "regression", "channel_classification")


def setting_conflict(network: str, objective: str, color_space: str, cli: bool = False) -> str | None:
    """Why this network, objective and colour space cannot go together, or None. Option names
    as the constructor's arguments, or as training's flags with ``cli`` (``--color-space``)."""

    def opt(name: str, value: str) -> str:
        return f"--{name.replace('_', '-')} {value}" if cli else f"{name} {value!r}"

    if network == "cheng15" and objective != "regression":
        return f"{opt('network', 'cheng15')} regresses colour (Cheng et al.): use {opt('objective', 'regression')}"
    if color_space == "rgb" and objective != "regression":
        return f"{opt('color_space', 'rgb')} is regression only (classes exist over ab and uv)"
    if color_space == "yuv" and objective == "channel_classification":
        return (f"{opt('color_space', 'yuv')}: per-channel classes are over a and b; use "
                f"{opt('objective', 'classification')} (uv bins) or {opt('objective', 'regression')}")
    return None


def _per_channel_mean(output: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-channel classes ``(B, 2 n, h, w)`` (a's n logits, then b's) -> ``(B, 2, h, w)``
    ab: each channel's annealed mean over its class centres (T = 0: its most likely class)."""
    n = len(centres)
    centres = centres.to(output.device, torch.float32).view(1, n, 1, 1)
    out = []
    for logits in (output[:, :n].float(), output[:, n:].float()):
        if temperature == 0:
            out.append(centres.view(-1)[logits.argmax(1)])
        else:
            out.append((torch.softmax(logits / temperature, dim=1) * centres).sum(1))
    return torch.stack(out, dim=1)


def _space_to_ab(pred: torch.Tensor, lightness: torch.Tensor, space: str) -> torch.Tensor:
    """A YUV (UV) or RGB prediction ``(B, 2|3, h, w)`` with the photo's L ``(B, 1, h, w)`` ->
    ``(B, 2, h, w)`` ab: the predicted colour, its lightness replaced by the photo's (an RGB
    prediction's own L is dropped; UV takes the luma Y of the gray photo, whose R = G = B)."""
    if space == "rgb":
        rgb = pred.clamp(0.0, 1.0)
    else:
        zeros = torch.zeros_like(lightness)
        luma = lab_to_rgb(torch.cat([lightness, zeros, zeros], dim=1))[:, :1]  # the gray level, in [0, 1]
        rgb = yuv_to_rgb(torch.cat([luma, pred], dim=1)).clamp(0.0, 1.0)
    return rgb_to_lab(rgb)[:, 1:]


REPO_URL = "https://github.com/colorizer/colorizer"
PAPER_URL = "https://arxiv.org/abs/1603.08511"

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title | default("Colorizer", true) }}

Automatic colorization of photos after Zhang, Isola & Efros (2016),
"[Colorful Image Colorization]({{ paper_url }})", made with
[colorizer]({{ repo_url }}).

## Use

```python
from colorizer import Colorizer

model = Colorizer.from_pretrained("{{ repo_id | default("path/to/this/folder", true) }}")
model.colorize("photo.jpg").save("photo-color.png")
```

## Model

{{ config_table }}

{{ description | default("", true) }}

## Results

{{ results | default("No evaluation results are attached to this card yet.", true) }}

{{ extra | default("", true) }}
"""


def network_size(height: int, width: int, input_size: int, multiple: int = 8, max_aspect: float = 4.0) -> tuple[int, int]:
    """Size at which the network sees a ``height`` x ``width`` photo.

    The aspect ratio is kept (clamped to ``max_aspect``, so a 3x5000 strip is not a
    sliver of 8 pixels) and the area is about ``input_size``^2; both sides are
    multiples of ``multiple`` and at least ``multiple``.
    """
    aspect = min(max(width / height, 1.0 / max_aspect), max_aspect)
    h = input_size / math.sqrt(aspect)
    w = input_size * math.sqrt(aspect)

    def snap(x: float) -> int:
        return max(multiple, int(round(x / multiple)) * multiple)

    return snap(h), snap(w)


def cache_folder() -> Path:
    """Where colorizer keeps what it makes (the app's prepared survey and votes, ONNX exports):
    ``$COLORIZER_CACHE``, else ``$XDG_CACHE_HOME/colorizer``, else ``~/.cache/colorizer``."""
    if os.environ.get("COLORIZER_CACHE"):
        return Path(os.environ["COLORIZER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colorizer"


def _model_dir(name: str) -> Path:
    return Path(str(resources.files("colorizer").joinpath("pretrained", name)))


def _check_config_file(path: Path, cls) -> None:
    """A model folder's ``config.json``, checked before anything is built from it: one line
    naming the file for a missing or unreadable file, not a JSON object, or unknown settings
    (which the Hub mixin would drop silently). Values are checked by ``Colorizer`` itself."""
    import inspect
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a model folder holds config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{path}: must hold a JSON object of the model's settings, got {type(config).__name__}"
                         + (" (empty)" if isinstance(config, dict) else ""))
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _hub_error(error: Exception, what: str, advice: str) -> OSError:
    """One ``OSError`` line for a Hub failure: what failed, the error's type and first line, what to check."""
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return OSError(f"{what} ({type(error).__name__}: {first}); {advice}")


def _first_mismatch(error: RuntimeError) -> str:
    """The first line of a state-dict error that says what differs (a size mismatch)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("size mismatch")), lines[-1] if lines else "")
    return (detail[:240] + "...") if len(detail) > 240 else detail


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repository ids


def resolve_model(name: str | Path | None = None) -> str:
    """What ``Colorizer.from_pretrained(name)`` loads from: the folder of a shipped model
    for None or a shipped name, an existing folder, or a Hub repo id ("owner/name").

    Fails at once, without touching the network, for what can be neither:

    Raises:
        FileNotFoundError: a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) that is not a folder.
        ValueError: a bare name that is not shipped (a typo such as "defualt"); the
            message lists the shipped names.
    """
    name = DEFAULT_MODEL if name is None else str(name)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if "/" not in name and "\\" not in name:
        if _model_dir(name).is_dir():
            return str(_model_dir(name))
        shipped = available_models()
        close = difflib.get_close_matches(name, shipped, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"no model named {name!r}{hint}: the shipped models are {', '.join(shipped) or 'none'}; "
            "otherwise give a model folder or a Hugging Face Hub id 'owner/name'"
        )
    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"{name}: no such model folder")
    return name


def weights_file(
    model_id: str | Path | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The ``model.safetensors`` of a model (shipped name, folder or Hub repo id), downloaded
    from the Hub when needed. Raises FileNotFoundError for a folder without one."""
    model_id = resolve_model(model_id)
    if os.path.isdir(model_id):
        weights = Path(model_id) / SAFETENSORS_SINGLE_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{model_id}: no {SAFETENSORS_SINGLE_FILE} in this folder")
        return weights
    return Path(
        hf_hub_download(
            repo_id=model_id,
            filename=SAFETENSORS_SINGLE_FILE,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
    )


def available_models() -> list[str]:
    """Names of the models shipped inside the package (``from_pretrained(name)``)."""
    root = Path(str(resources.files("colorizer").joinpath("pretrained")))
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())


class Colorizer(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="colorizer",
    tags=["image-colorization", "colorization", "zhang2016", "pytorch"],
    pipeline_tag="image-to-image",
    license="mit",
    repo_url=REPO_URL,
    paper_url=PAPER_URL,
    model_card_template=MODEL_CARD_TEMPLATE,
):
    """Zhang et al.'s colorizer (or the regression baseline) with everything it needs.

    Args:
        objective: "classification" (Q logits per pixel, the paper), "regression"
            (ab directly, the baseline) or "channel_classification" (a and b each in
            ``channel_bins`` classes).
        width: channel multiplier of the network (1.0 = the paper's).
        network: "eccv16" (Zhang et al.'s network), "global_local" (the same with
            Iizuka et al.'s global branch fused into the mid-level features: one
            reading of the whole scene for every pixel) or "cheng15" (Cheng et al.'s
            per-pixel network on patch and DAISY features, with a joint bilateral
            refinement; regression, see ``colorizer.cheng``).
        grid: side of an ab bin (10 in the paper); ab_range: extent of the ab grid.
        k, sigma: soft-encoding neighbours and Gaussian width (ab units).
        prior: empirical prior over the Q bins (None: uniform); lam, prior_sigma: the
            rebalancing mix with uniform and the prior's smoothing.
        rebalance: weight the loss by the rebalancing weights (None: yes for
            classification and channel_classification, no for regression, so the
            regression objective is the plain L2 of the baseline papers).
        temperature: default annealed-mean temperature.
        input_size: the network sees photos at about input_size^2 pixels.
        regression_loss: "l2" or "smooth_l1" for the regression objective.
        l_cent, l_norm, ab_norm: input and output normalisation (L - l_cent) / l_norm,
            regression output times ab_norm.
        color_space: what a regression model predicts (Champati et al.'s comparison):
            "lab" (ab, the default), "yuv" (U and V of BT.601 YUV) or "rgb" (all three sRGB
            channels); the output is turned into ab with the photo's own L, so rendering
            and evaluation are the same for all. Classification is over ab bins, or with
            "yuv" over uv bins (``colorizer.bins``: U and V scaled by ``UV_SCALE``; ``grid``,
            ``k``, ``sigma``, ``prior`` and the rebalancing are then in those units).
        trunk: the network of the frozen trunk of a "hypercolumn" network (Ciugurean's
            colorizer: a trained model's features at four depths, stacked per pixel, and a
            small trained decoder): "eccv16" or "global_local".
        semantic_width: for "cheng15", the width of a trained ECCV16 network kept frozen inside
            it, whose mid-level features are Cheng et al.'s semantic (high-level) feature; its
            weights come from ``python -m train --init-from`` (None: no semantic feature).
        channel_bins: classes per channel of the "channel_classification" objective (a and
            b each quantized into ``channel_bins`` classes over [-ab_range, ab_range], two
            independent softmaxes per pixel, decoded by each one's annealed mean).
        labels: names of the photo labels the global branch also learns to predict
            (global_local only; Iizuka et al.'s joint classification); ``scene_labels``
            reads them back.
    """

    def __init__(
        self,
        objective: str = "classification",
        width: float = 1.0,
        grid: float = 10.0,
        ab_range: float = 110.0,
        k: int = 5,
        sigma: float = 5.0,
        prior: list[float] | None = None,
        lam: float = 0.5,
        prior_sigma: float = 5.0,
        rebalance: bool | None = None,
        temperature: float = 0.38,
        input_size: int = 256,
        regression_loss: str = "l2",
        network: str = "eccv16",
        l_cent: float = 50.0,
        l_norm: float = 100.0,
        ab_norm: float = 110.0,
        labels: list[str] | None = None,
        color_space: str = "lab",
        trunk: str = "eccv16",
        channel_bins: int = 64,
        semantic_width: float | None = None,
    ):
        super().__init__()
        if color_space not in COLOR_SPACES:
            raise ValueError(f"color_space must be one of {', '.join(COLOR_SPACES)}, got {color_space!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if channel_bins < 2:
            raise ValueError(f"channel_bins must be at least 2, got {channel_bins}")
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {sorted(NETWORKS)}, got {network!r}")
        if conflict := setting_conflict(network, objective, color_space):
            raise ValueError(conflict)
        if regression_loss not in ("l2", "smooth_l1"):
            raise ValueError(f"regression_loss must be 'l2' or 'smooth_l1', got {regression_loss!r}")
        if input_size < 16 or input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8 and at least 16, got {input_size}")
        temperature = check_temperature(temperature)
        self.objective = objective
        self.k, self.sigma = k, sigma
        self.temperature = temperature
        self.input_size = input_size
        self.regression_kind = regression_loss
        self.rebalance = objective in ("classification", "channel_classification") if rebalance is None else rebalance
        self.l_cent, self.l_norm, self.ab_norm = l_cent, l_norm, ab_norm

        # (Q, 2) bin centres: ab, or the scaled uv of a YUV classification (Champati et al.)
        centres = gamut_bins(grid, ab_range, bin_space(objective, color_space))
        q = len(centres)
        if prior is None:
            p = torch.full((q,), 1.0 / q, dtype=torch.float64)
        else:
            p = torch.as_tensor(prior, dtype=torch.float64)
            if p.shape != (q,) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"prior must be {q} non-negative numbers (grid {grid:g}), got shape {tuple(p.shape)}")
            p = p / p.sum()
        self.register_buffer("bin_centers", centres)
        self.register_buffer("prior", p.float())
        self.register_buffer("class_weights", rebalance_weights(p, centres, lam, prior_sigma).float())
        self.network = network
        self.labels = list(labels) if labels else None
        if self.labels and network != "global_local":
            raise ValueError(f"labels need the global branch of network 'global_local', got network {network!r}")
        if self.labels and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct names")
        self.color_space = color_space
        if objective == "channel_classification":  # a and b each in channel_bins classes (Ciugurean)
            edges = torch.linspace(-ab_range, ab_range, channel_bins + 1)
            self.register_buffer("channel_centres", (edges[:-1] + edges[1:]) / 2)
            out = 2 * channel_bins
        else:
            out = q if objective == "classification" else COLOR_SPACES[color_space]
        self.ab_range = ab_range
        if semantic_width and network != "cheng15":
            raise ValueError(f"semantic_width is Cheng et al.'s semantic feature (network cheng15), got network {network!r}")
        options = {"trunk": trunk} if network == "hypercolumn" else {}
        if semantic_width:
            options["semantic_width"] = semantic_width
        if self.labels:
            options["num_labels"] = len(self.labels)
        self.net = NETWORKS[network](out, width, **options)

    @property
    def num_bins(self) -> int:
        return len(self.bin_centers)

    @property
    def device(self) -> torch.device:
        return self.bin_centers.device

    # ------------------------------------------------------------------ network
    def forward(
        self, lightness: torch.Tensor, global_features: torch.Tensor | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` L in [0, 100] -> ``(B, Q, H/4, W/4)`` logits (classification;
        ``2 channel_bins`` for channel_classification) or the regression's colour at H/4 x
        W/4 in ``color_space`` (ab; U, V; or R, G, B). ``global_features`` ``(B, G)`` (from
        ``reference_features``, global_local networks only) replace the photos' own;
        ``return_labels`` also returns the label head's ``(B, len(labels))`` logits."""
        if lightness.dim() != 4 or lightness.shape[1] != 1:
            raise ValueError(f"Colorizer.forward: expected L of shape (B, 1, H, W), got {tuple(lightness.shape)}")
        if return_labels and not self.labels:
            raise ValueError("return_labels: this model has no labels (train it with --labels)")
        x = (lightness - self.l_cent) / self.l_norm
        options = {}  # only the global_local network takes these
        if global_features is not None:
            self._require_global_branch()
            options["global_features"] = global_features.to(x.device, x.dtype)
        if return_labels:
            options["return_labels"] = True
        out = self.net(x, **options)
        if return_labels:
            out, label_logits = out
        if self.objective == "regression":  # to the colour space's own units
            out = out * self.ab_norm if self.color_space == "lab" else out + (0.5 if self.color_space == "rgb" else 0.0)
        return (out, label_logits) if return_labels else out

    @contextlib.contextmanager
    def _evaluating(self):
        """Eval mode (batch-norm statistics, no dropout) for the block, then the mode it was in."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def _photo_input(self, image: ImageInput, max_pixels: int | None) -> torch.Tensor:
        """A photo's network input ``(1, 1, h, w)`` L on the model's device."""
        return self._network_input(split_lightness(read_image(image, max_pixels))).to(self.device)

    @torch.no_grad()
    def scene_labels(self, image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, float]:
        """The label head's reading of a photo: label -> probability, most likely first
        (models trained with labels; see ``labels``).

        Raises:
            ValueError: the model has no labels. ImageError: the photo cannot be read.
        """
        if not self.labels:
            raise ValueError("scene_labels: this model was trained without labels")
        small = self._photo_input(image, max_pixels)
        with self._evaluating():
            probs = self(small, return_labels=True)[1].float().softmax(dim=1)[0].tolist()
        return dict(sorted(zip(self.labels, probs), key=lambda kv: -kv[1]))

    def _require_global_branch(self) -> None:
        if self.network != "global_local":
            raise ValueError(f"a reference photo needs a model with a global branch (network global_local, after "
                             f"Iizuka et al.); this model's network is {self.network}")

    @torch.no_grad()
    def reference_features(self, reference: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """The global features ``(1, G)`` of a reference photo (its scene as the global
        branch reads it), for ``colorize(..., reference=...)``: Iizuka et al.'s global-feature
        transfer colours a photo as if it were the reference's kind of scene.

        Raises:
            ValueError: the model has no global branch (network eccv16).
            ImageError: the reference cannot be read.
        """
        self._require_global_branch()
        small = self._photo_input(reference, max_pixels)
        with self._evaluating():
            return self.net.global_features((small - self.l_cent) / self.l_norm)

    def _global(self, reference, max_pixels: int | None) -> torch.Tensor | None:
        """``reference`` (a photo, or features from ``reference_features``) as ``(1, G)`` features."""
        if reference is None:
            return None
        if isinstance(reference, torch.Tensor) and reference.dtype.is_floating_point and reference.dim() <= 2:
            self._require_global_branch()
            g = reference.reshape(1, -1)
            if g.shape[1] != self.net.global_dim:
                raise ValueError(f"reference features: expected {self.net.global_dim} values, got {g.shape[1]}")
            return g.to(self.device)
        return self.reference_features(reference, max_pixels)

    def decode(self, output: torch.Tensor, temperature: float | None = None,
               lightness: torch.Tensor | None = None) -> torch.Tensor:
        """Network output -> ``(B, 2, h, w)`` ab: the annealed mean at ``temperature``
        (default: the model's) for classification, the output itself for an ab regression,
        and for a YUV or RGB regression the ab of the predicted colour with the photo's L
        (``lightness``, ``(B, 1, h, w)`` L at the output's resolution, then needed)."""
        t = self.temperature if temperature is None else check_temperature(temperature)
        if self.objective == "channel_classification":
            return _per_channel_mean(output, self.channel_centres, t)
        if self.needs_lightness and lightness is None:
            raise ValueError(f"decode: a {self.network} {self.color_space} model needs the lightness at the "
                             "output's resolution")
        if self.objective == "classification" and self.color_space == "lab":
            ab = annealed_mean(output, self.bin_centers, t)
        elif self.objective == "classification":  # uv bins: their annealed mean, then ab with the photo's L
            uv = annealed_mean(output, self.bin_centers, t) / UV_SCALE
            ab = _space_to_ab(uv, lightness.to(output.device).float(), "yuv")
        elif self.color_space == "lab":
            ab = output.float()
        else:
            ab = _space_to_ab(output.float(), lightness.to(output.device).float(), self.color_space)
        if self.network == "cheng15":  # Cheng et al.'s refinement: chroma smoothed along the gray image
            ab = joint_bilateral(ab, lightness.to(ab.device).float())
        return ab

    @property
    def needs_lightness(self) -> bool:
        """Whether ``decode`` needs the photo's L at the output's resolution (YUV and RGB
        models, and Cheng et al.'s, whose joint bilateral filter it guides)."""
        return self.color_space != "lab" or self.network == "cheng15"

    def lightness_for(self, lightness: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
        """``decode``'s ``lightness`` for ``output``: the network input's L ``(B, 1, H, W)``
        area-averaged to the output's size, or None when this model does not need it."""
        return F.interpolate(lightness, size=output.shape[-2:], mode="area") if self.needs_lightness else None

    def loss(self, output: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor | None = None,
             lightness: torch.Tensor | None = None) -> torch.Tensor:
        """Training loss of ``output = self(L)`` against ground-truth ``(B, 2, H, W)`` ab
        (and, for a YUV or RGB regression, the ``(B, 1, H, W)`` L it goes with: the target
        is that colour in the model's space)."""
        weights = self.class_weights if self.rebalance else None
        if self.objective == "classification" and self.color_space == "lab":
            return classification_loss(output, ab, self.bin_centers, weights, self.k, self.sigma, mask)
        if self.objective == "channel_classification":
            return channel_classification_loss(output, ab, self.ab_range, weights, self.bin_centers, mask)
        if self.color_space == "lab":
            return regression_loss(output, ab, self.regression_kind, weights, self.bin_centers, mask)
        if lightness is None:
            raise ValueError(f"loss: a {self.color_space} model needs the lightness of the ground truth")
        with torch.autocast(ab.device.type, enabled=False):
            rgb = lab_to_rgb(torch.cat([lightness.float(), ab.float()], dim=1))  # (B, 3, H, W) in [0, 1]
            if self.objective == "classification":  # over uv bins
                uv = rgb_to_chroma(rgb, "yuv")
                return classification_loss(output, uv, self.bin_centers, weights, self.k, self.sigma, mask)
            target = rgb if self.color_space == "rgb" else rgb_to_yuv(rgb)[:, 1:]
        return regression_loss(output, target, self.regression_kind, None, None, mask)

    # ------------------------------------------------------------------ photos
    @torch.no_grad()
    def analyze(self, image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, reference=None) -> "Prediction":
        """Run the network once on a photo; the ``Prediction`` renders any temperature.
        ``reference``: see ``colorize``.

        Raises:
            ImageError / ImageTooLargeError: the input (or the reference) cannot be read.
            ValueError: a reference with a model that has no global branch.
        """
        return self.analyze_batch([image], max_pixels=max_pixels, reference=reference)[0]

    @torch.no_grad()
    def analyze_batch(
        self, images: Sequence[ImageInput], batch_size: int = 8, max_pixels: int | None = DEFAULT_MAX_PIXELS,
        reference=None,
    ) -> list["Prediction"]:
        """``analyze`` for many photos; photos whose network sizes match share a batch."""
        g = self._global(reference, max_pixels)
        parts = [split_lightness(read_image(im, max_pixels)) for im in images]
        small = [self._network_input(p) for p in parts]
        outputs: list[torch.Tensor | None] = [None] * len(parts)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(small):
            by_size.setdefault(tuple(s.shape[-2:]), []).append(i)
        with self._evaluating():
            for idxs in by_size.values():
                for start in range(0, len(idxs), batch_size):
                    chunk = idxs[start : start + batch_size]
                    out = self._run_network(torch.cat([small[i] for i in chunk]),
                                            None if g is None else g.expand(len(chunk), -1))
                    for i, o in zip(chunk, out):
                        outputs[i] = o[None].float()
        return [Prediction(self, p, o, self.lightness_for(s, o))  # type: ignore[arg-type]
                for p, o, s in zip(parts, outputs, small)]

    def _run_network(self, lightness: torch.Tensor, global_features: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for a batch of network inputs: ONNX Runtime after
        ``use_onnxruntime()`` while the model is on the CPU (and no reference), else torch."""
        onnx = getattr(self, "_onnxruntime", None)
        if onnx is not None and self.device.type == "cpu" and global_features is None:
            if self._weights_version() == self._onnxruntime_version:
                return onnx(lightness)
            warnings.warn("the weights changed since use_onnxruntime(): back to torch (call it again to re-export)")
            self._onnxruntime = None
        return self(lightness.to(self.device), global_features)

    def _weights_version(self) -> tuple[int, ...]:
        """The in-place version counters of every weight and buffer: any change moves one."""
        return tuple(t._version for t in (*self.parameters(), *self.buffers()))

    def use_onnxruntime(self, enable: bool = True, path: str | Path | None = None, threads: int | None = None) -> "Colorizer":
        """Run the network in ONNX Runtime (CPU) in ``analyze``/``colorize`` and the batch
        versions; ``enable=False`` goes back to torch. The export of these weights is made
        once and cached (``colorizer.onnx_runtime.cached_onnx``, checked against torch to
        1e-4), or ``path`` names an exported file. Call it again after changing the weights;
        training and ``forward`` always use torch. Returns the model.

        Raises:
            ImportError: onnx, onnxscript or onnxruntime is missing (``pip install 'colorizer[onnx]'``).
            ValueError: the model is not on the CPU.
        """
        if not enable:
            self._onnxruntime = None
            return self
        if self.device.type != "cpu":
            raise ValueError(f"use_onnxruntime: ONNX Runtime runs the network on the CPU; this model is on {self.device}")
        from colorizer.onnx_runtime import OnnxRuntimeNetwork, cached_onnx

        self._onnxruntime = OnnxRuntimeNetwork(path if path is not None else cached_onnx(self), threads)
        self._onnxruntime_version = self._weights_version()
        return self

    @property
    def backend(self) -> str:
        """What runs the network in ``analyze``: "onnxruntime" or "torch"."""
        onnx = getattr(self, "_onnxruntime", None)
        return "onnxruntime" if onnx is not None and self.device.type == "cpu" else "torch"

    def export_onnx(self, path: str | Path) -> Path:
        """Write the network as ONNX to ``path`` (dynamic batch and sizes that are multiples of
        8; input ``lightness`` (B, 1, H, W) L in [0, 100], output what ``forward`` gives: (B, Q,
        H/4, W/4) logits, or a regression's colour in the model's ``color_space``), checked
        against torch to 1e-4. The model itself is not changed. See ``colorizer.onnx_runtime``."""
        from colorizer.onnx_runtime import export_onnx

        return export_onnx(self, path)

    def _network_input(self, lightness: Lightness | torch.Tensor) -> torch.Tensor:
        """The photo's L resized (antialiased bilinear) to ``network_size``: ``(1, 1, h, w)``.
        A ``Lightness`` is resized across a strip of rows at a time, then down (what
        ``F.interpolate`` does in one call, to the bit), so no full-size float L is made."""
        if isinstance(lightness, torch.Tensor):
            h, w = network_size(*lightness.shape[-2:], self.input_size)
            return F.interpolate(lightness, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        width, height = lightness.size
        h, w = network_size(height, width, self.input_size)
        rows = lightness.strip_rows
        across = torch.cat([
            F.interpolate(lightness.rows(top, rows).view(1, 1, -1, width), size=(min(rows, height - top), w),
                          mode="bilinear", align_corners=False, antialias=True)
            for top in range(0, height, rows)], dim=2)  # (1, 1, H, w)
        out = F.interpolate(across, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        return out.contiguous(memory_format=torch.contiguous_format)  # (not channels-last: a slower convolution)

    def colorize(
        self,
        image: ImageInput,
        temperature: float | None = None,
        return_uncertainty: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        reference=None,
    ) -> Image.Image | tuple[Image.Image, np.ndarray]:
        """Colorize one photo at full resolution.

        Args:
            image: path, bytes, PIL image or numpy array; any mode (colour photos are
                colorized from their L channel).
            temperature: annealed-mean temperature in [0, 1] (default: the model's).
            return_uncertainty: also return the ``(H, W)`` normalised entropy in [0, 1].
            reference: another photo (or its ``reference_features``) whose global features
                replace the photo's own: Iizuka et al.'s global-feature transfer, for
                models with a global branch (network global_local).
        Returns:
            a PIL image the size of the input, RGB (RGBA if the input had alpha), and
            the uncertainty map if asked for.
        """
        pred = self.analyze(image, max_pixels=max_pixels, reference=reference)
        out = pred.colorize(temperature)
        return (out, pred.uncertainty()) if return_uncertainty else out

    def colorize_batch(
        self,
        images: Sequence[ImageInput],
        temperature: float | None = None,
        batch_size: int = 8,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        errors: str = "raise",
        reference=None,
    ) -> list[Image.Image | ImageError]:
        """Colorize many photos; returns PIL images in the same order. Photos are read
        ``batch_size`` at a time, so only one batch's full-resolution L is in memory.

        Args:
            errors: "raise" (the first unreadable photo raises its ``ImageError``) or
                "return" (every readable photo is colorized, and an unreadable one's place
                in the list holds its ``ImageError``, which names the file).
            reference: one reference photo for all of them (see ``colorize``); read once.

        Raises:
            TypeError: ``images`` is one image (a path, bytes, array or PIL image), not a
                sequence of them: use ``colorize`` for one photo.
        """
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):  # paths, arrays, PIL images too
            raise TypeError(
                f"colorize_batch takes a list of images, got one {type(images).__name__}: use colorize() for one photo"
            )
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        if temperature is not None:
            check_temperature(temperature)
        g = self._global(reference, max_pixels)  # read once, and a bad reference fails before any work
        out: list[Image.Image | ImageError] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            if errors == "return":  # read each photo alone: a bad one costs only itself
                read: list = []
                for image in chunk:
                    try:
                        read.append(read_image(image, max_pixels))
                    except ImageError as e:
                        read.append(e)
                good = [r for r in read if not isinstance(r, ImageError)]
                done = iter(self.analyze_batch(good, batch_size, max_pixels, reference=g) if good else [])
                out += [r if isinstance(r, ImageError) else next(done).colorize(temperature) for r in read]
            else:
                out += [p.colorize(temperature) for p in self.analyze_batch(chunk, batch_size, max_pixels, reference=g)]
        return out

    # ------------------------------------------------------------------ hub
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, *, strict: bool = True, **kwargs):
        """Load a model: no argument or a shipped name ("default", see
        ``available_models()``) loads a model shipped in the package; otherwise a
        local folder or a Hub repository id. Loading is strict: a missing or
        unexpected tensor is an error."""
        source = resolve_model(pretrained_model_name_or_path)
        if os.path.isdir(source):
            _check_config_file(Path(source) / "config.json", cls)
            return super().from_pretrained(source, strict=strict, **kwargs)
        try:
            return super().from_pretrained(source, strict=strict, **kwargs)
        except Exception as e:  # the Hub's many error types (HTTP, DNS, offline mode, missing repo): one line
            raise _hub_error(e, f"{source}: could not load it from the Hugging Face Hub", "check the repository id "
                             "and the network, or give a local model folder (with HF_HUB_OFFLINE=1, models already "
                             "downloaded load from the cache)") from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs,
    ) -> "Colorizer":
        """Build from the config, then load ``model.safetensors`` from the folder or the
        Hub. Only safetensors is accepted: a pickled checkpoint is never opened."""
        try:
            model = cls(**model_kwargs)
        except (TypeError, ValueError) as e:  # a setting out of its range, e.g. the temperature
            raise ValueError(f"{Path(model_id) / 'config.json'}: {e}") from None
        weights = weights_file(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        try:
            missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=strict, device=map_location)
        except RuntimeError as e:  # the weights are another network's: say which setting disagrees
            raise ValueError(f"{weights}: the weights do not fit config.json ({_first_mismatch(e)})") from None
        if missing or unexpected:  # only reachable with strict=False
            warnings.warn(f"{model_id}: missing tensors {missing}, unexpected tensors {unexpected}")
        if os.path.isdir(model_id) and (Path(model_id) / "README.md").is_file():
            model._loaded_from = Path(model_id)  # its card travels with it when saved elsewhere
        bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise ValueError(f"{weights}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]}): "
                             "a diverged or damaged model, which would colour every photo black")
        return model.to(map_location).eval()

    def save_pretrained(self, save_directory: str | Path, *, model_card_kwargs: dict | None = None, **kwargs):
        """Save the config, the weights (safetensors) and the model card into a folder, with
        the user's umask (not safetensors' private 0600). A model loaded from a folder keeps
        that folder's card and the figures and training history beside it, unless
        ``model_card_kwargs`` asks for a new card; otherwise a card is generated."""
        folder = Path(save_directory)
        card_existed = (folder / "README.md").exists()
        out = super().save_pretrained(folder, model_card_kwargs=model_card_kwargs, **kwargs)
        source = getattr(self, "_loaded_from", None)
        if model_card_kwargs is None and not card_existed and source is not None and source.resolve() != folder.resolve():
            for f in source.iterdir():
                if f.name == "README.md" or f.suffix.lower() == ".png" or f.name == "training_history.json":
                    if f.is_file() and not (f.name != "README.md" and (folder / f.name).exists()):
                        (folder / f.name).write_bytes(f.read_bytes())
        mask = os.umask(0)
        os.umask(mask)
        for f in ("model.safetensors", "config.json", "README.md"):
            if (folder / f).is_file():
                os.chmod(folder / f, 0o666 & ~mask)
        return out

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload to a Hugging Face Hub repository (``PyTorchModelHubMixin.push_to_hub``);
        a failure (no network, no or a wrong token, no write access) is one ``OSError`` line."""
        try:
            return super().push_to_hub(repo_id, **kwargs)
        except Exception as e:  # DNS, HTTP 401/403/404, offline mode: one line, with what to check
            raise _hub_error(e, f"{repo_id}: could not upload to the Hugging Face Hub", "check the network, and a "
                             "token with write access (`hf auth login`, or the HF_TOKEN variable)") from None

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The Hub model card: metadata (library, tags, pipeline, licence, metrics),
        usage, the configuration as a table, and ``results`` Markdown if given."""
        config = dict(self._hub_mixin_config or {})
        config.pop("prior", None)
        n_params = sum(p.numel() for p in self.parameters())
        rows = [("parameters", f"{n_params:,}"), ("bins Q", self.num_bins)] + sorted(config.items())
        kwargs.setdefault(
            "config_table", "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        )
        card = super().generate_model_card(*args, **kwargs)
        card.data.metrics = ["auc", "psnr", "ssim", "colorfulness"]
        return card


@dataclass
class Prediction:
    """The network's prediction for one photo, renderable at any temperature.

    Attributes:
        model: the model that made it.
        lightness: the photo's full-resolution L and alpha.
        output: ``(1, Q, h, w)`` logits (or ``(1, 2|3, h, w)`` for regression, in the
            model's colour space).
        network_l: ``(1, 1, h, w)`` L at the output's resolution, which a YUV or RGB
            model's output needs to become ab (computed from ``lightness`` when None).
    """

    model: Colorizer
    lightness: Lightness
    output: torch.Tensor
    network_l: torch.Tensor | None = None  # (1, 1, h, w) L at the output's resolution (YUV and RGB models)

    @property
    def size(self) -> tuple[int, int]:
        return self.lightness.size

    def ab(self, temperature: float | None = None) -> torch.Tensor:
        """``(1, 2, h, w)`` ab at the network's output resolution."""
        if self.model.needs_lightness and self.network_l is None:
            self.network_l = self.model.lightness_for(self.model._network_input(self.lightness), self.output)
        return self.model.decode(self.output, temperature, self.network_l)

    def colorize(self, temperature: float | None = None) -> Image.Image:
        """The full-resolution colour photo (RGB, or RGBA when the input had alpha)."""
        return render(self.lightness, self.ab(temperature))

    def uncertainty(self) -> np.ndarray:
        """``(H, W)`` float32 in [0, 1]: entropy of the predicted distribution over bins
        divided by log Q, upsampled to full resolution (zeros for regression)."""
        w, h = self.size
        if self.model.objective == "regression":
            return np.zeros((h, w), dtype=np.float32)
        if self.model.objective == "channel_classification":  # the mean of a's and b's entropies
            n = self.output.shape[1] // 2
            ent = (entropy(self.output[:, :n]) + entropy(self.output[:, n:])) / 2
        else:
            ent = entropy(self.output)  # (1, 1, h', w')
        ent = F.interpolate(ent, size=(h, w), mode="bilinear", align_corners=False)
        return ent[0, 0].clamp(0, 1).cpu().numpy()


def gray_rgb(lightness: torch.Tensor) -> np.ndarray:
    """The gray version of a photo: L ``(1, 1, H, W)`` in [0, 100] with a = b = 0, as
    ``(H, W, 3)`` uint8 sRGB with R = G = B: the colorizer's input seen as a photo, and
    the "gray" baseline of the evaluation."""
    rgb = compose(lightness, torch.zeros(1, 2, 1, 1))  # (H, W, 3)
    # a = b = 0 is neutral gray; averaging removes the +-1 rounding differences
    # between channels so that the photo is exactly gray.
    return np.repeat(np.round(rgb.mean(axis=2, keepdims=True)).astype(np.uint8), 3, axis=2)


def compose(lightness: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """Full-resolution L ``(1, 1, H, W)`` + low-resolution ab ``(1, 2, h, w)`` -> uint8
    ``(H, W, 3)`` sRGB. ab is upsampled bilinearly and its chroma shrunk where it
    would leave the gamut, so the output keeps the input's L exactly (up to 8 bits).
    ``colorizer.render.render`` gives the same as a PIL image without this copy."""
    return np.asarray(render(lightness, ab.float()))

