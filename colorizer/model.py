"""``Colorizer``: the whole colorization model, Hub-ready.

One ``nn.Module`` holds the network, its input normalisation, its head and the
quantized ab space (bin centres, prior and rebalancing weights as named buffers),
so ``config.json`` + ``model.safetensors`` describe it completely. It is a
``PyTorchModelHubMixin``: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``
work with local folders and Hub repositories, strictly, with no pickle (names and
downloads: ``colorizer.hub``).

What the model knows of itself is a property (``uses_temperature``, ``has_global_branch``,
``has_pretrained_trunk``, ``needs_lightness``, ``temperature``); the photo pipeline around
it (resizing, batching, the ONNX Runtime switch, full-resolution rendering) is
``colorizer.pipeline``, which ``analyze``, ``colorize`` and ``colorize_batch`` call.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from PIL import Image
from torch import nn

from colorizer.bins import (PAPER_TEMPERATURE, UV_SCALE, annealed_mean, annealed_probabilities, bin_space, check_temperature, gamut_bins,
                            rebalance_weights, rgb_to_chroma)
from colorizer.color import lab_to_rgb, rgb_to_lab, rgb_to_yuv, yuv_to_rgb
from colorizer.hub import (DEFAULT_MODEL, MODEL_CARD_TEMPLATE, PAPER_URL, REPO_URL, _weights_path, available_models,
                           check_config_file, first_mismatch, hub_error, resolve_model, weights_file)
from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, Lightness, read_image, split_lightness
from colorizer.losses import channel_classification_loss, classification_loss, regression_loss
from colorizer.cheng import Cheng15, joint_bilateral
from colorizer.errors import first_line
from colorizer.networks import ECCV16, DinoHypercolumn, GlobalLocal, Hypercolumn
from colorizer.pipeline import Prediction, analyze_batch, colorize_batch, compose, gray_rgb, network_input, network_size, run_network

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

NETWORKS = {"eccv16": ECCV16, "global_local": GlobalLocal, "cheng15": Cheng15, "hypercolumn": Hypercolumn}
COLOR_SPACES = {"lab": 2, "yuv": 2, "rgb": 3}  # what a regression model predicts -> its output channels
OBJECTIVES = ("classification", "regression", "channel_classification")
TRUNKS = ("eccv16", "global_local", "dinov2-small")  # a hypercolumn network's: a trained network's, or the encoder


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


# Sane bounds of the numeric settings (config.json's values), checked before anything is built:
# name -> (whole number?, low, high, low excluded?). Widths and sizes bound the memory the model
# takes (width 2: four times the paper's network, about 0.5 GB; input_size 2048: a 4 MP network
# input), the bins' settings the size of the ab grid (grid 2: about 6500 bins).
SETTING_RANGES = {
    "width": (False, 0.0, 2.0, True),
    "semantic_width": (False, 0.0, 2.0, False),  # 0: none, as None
    "input_size": (True, 16, 2048, False),
    "trunk_size": (True, 14, 1024, False),  # 14: one patch (colorizer.dinov2.check_trunk's own bound)
    "trunk_tune": (True, 0, 11, False),  # the blocks it may be is check_trunk's to say
    "grid": (False, 2.0, 110.0, False),
    "ab_range": (False, 10.0, 150.0, False),
    "channel_bins": (True, 2, 1024, False),
    "k": (True, 1, 64, False),
    "sigma": (False, 0.0, 100.0, True),
    "prior_sigma": (False, 0.0, 100.0, False),
    "lam": (False, 0.0, 1.0, False),
    "l_cent": (False, -100.0, 100.0, False),
    "l_norm": (False, 0.0, 1000.0, True),
    "ab_norm": (False, 0.0, 1000.0, True),
}


def check_settings(settings: dict, cli: bool = False) -> None:
    """Every check of a model's settings, in one place: ``Colorizer``'s constructor calls it
    before anything is built, and training calls it on its flags before any data is read
    (``train.config.TrainConfig.validate``). ``settings`` are the constructor's arguments
    (``config.json``'s values; missing ones are not checked); ``cli`` names them as
    training's flags (``--input-size``) rather than as settings (``input_size``).

    Raises:
        ValueError: one line naming the setting and what it takes (numbers out of
            ``SETTING_RANGES``, unknown choices, settings that cannot go together).
    """
    def name(key: str) -> str:
        return f"--{key.replace('_', '-')}" if cli else key

    get = settings.get
    for key, (whole, low, high, open_low) in SETTING_RANGES.items():  # bounds first: width 1000 never allocates
        value = get(key)
        if value is None:
            continue
        kind = "a whole number" if whole else "a number"
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
            raise ValueError(f"{name(key)} must be {kind} in {bounds}, got {type(value).__name__} {value!r}"[:300])
        if not (low < value <= high if open_low else low <= value <= high):  # NaN fails both
            raise ValueError(f"{name(key)} must be {kind} in {bounds}, got {value!r}")
    choices = {"color_space": tuple(COLOR_SPACES), "objective": OBJECTIVES, "network": tuple(sorted(NETWORKS)),
               "regression_loss": ("l2", "smooth_l1")}
    if get("network") == "hypercolumn":
        choices["trunk"] = TRUNKS
    for key, allowed in choices.items():
        if key in settings and get(key) not in allowed:
            raise ValueError(f"{name(key)} must be one of {', '.join(allowed)}, got {get(key)!r}")
    network, objective = get("network", "eccv16"), get("objective", "classification")
    color_space = get("color_space", "lab")
    if conflict := setting_conflict(network, objective, color_space, cli=cli):
        raise ValueError(conflict)
    if get("input_size") is not None and get("input_size") % 8:
        raise ValueError(f"{name('input_size')} must be a multiple of 8, got {get('input_size')}")
    if get("temperature") is not None:
        try:
            check_temperature(get("temperature"))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{name('temperature')}: {e}") from None
    if get("rebalance") and objective == "regression" and color_space != "lab":
        raise ValueError(f"{name('rebalance')}: the rebalancing weights are over ab bins; a {name('color_space')} "
                         f"{color_space} regression has none")
    labels = get("labels")
    if labels and network != "global_local":
        raise ValueError(f"{name('labels')} need the global branch of network 'global_local', got network {network!r}")
    if labels and len(set(labels)) != len(labels):
        raise ValueError(f"{name('labels')} must be distinct names")
    if get("semantic_width") and network != "cheng15":
        raise ValueError(f"{name('semantic_width')} is Cheng et al.'s semantic feature (network cheng15), "
                         f"got network {network!r}")
    if network == "hypercolumn" and get("trunk") == "dinov2-small":  # the encoder's own check (colorizer.dinov2)
        from colorizer.dinov2 import DEFAULT_BLOCKS, check_trunk

        try:
            check_trunk(get("trunk"), get("trunk_blocks") or DEFAULT_BLOCKS, get("trunk_size", 224),
                        get("trunk_tune") or 0)
        except ValueError as e:
            raise ValueError(f"{name('trunk_blocks')}/{name('trunk_size')}/{name('trunk_tune')}: {e}" if cli
                             else str(e)) from None
    elif get("trunk_tune"):
        raise ValueError(f"{name('trunk_tune')} trains blocks of the pretrained trunk (network hypercolumn, trunk "
                         f"dinov2-small), got network {network!r}, trunk {get('trunk')!r}")


WEIGHT_LIMIT = 1e6  # the largest |value| a tensor of a usable model holds (the shipped models': 2.3e3)
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names of the floating-point types


def check_weights_file(path: Path, model: nn.Module) -> None:
    """A weights file's tensor types against ``model``'s, read from the header before any
    weight is loaded: a floating tensor must be stored as floating point and a counter
    (batch norm's ``num_batches_tracked``) as an integer; int8 or bool weights of the right
    names and shapes would load, cast, and colour every photo gray. One line naming the
    file and the tensor."""
    from safetensors import SafetensorError, safe_open

    expected = model.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                if name not in expected:
                    continue  # the strict load names it
                stored, floating = f.get_slice(name).get_dtype(), expected[name].is_floating_point()
                if (stored in _FLOAT_DTYPES) != floating:
                    raise ValueError(f"{path}: tensor {name} is stored as {stored}, expected "
                                     f"{'floating point (F32, F16, BF16 or F64)' if floating else 'an integer'}: "
                                     "not a model's weights")
    except SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({first_line(e)})") from None


def check_weight_values(path: Path, model: nn.Module) -> None:
    """The loaded weights' values: finite, and within +-``WEIGHT_LIMIT`` (weights of 3e38
    overflow the network to NaN: every photo gray). ``class_weights``, training's loss
    weights, which a rare bin makes large, are only checked to be finite."""
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        if not torch.isfinite(t).all():
            raise ValueError(f"{path}: tensor {name} holds NaN or infinite values: a diverged or damaged model, "
                             "which would colour every photo black")
        if name != "class_weights" and t.numel() and (peak := float(t.abs().max())) > WEIGHT_LIMIT:
            raise ValueError(f"{path}: tensor {name} holds values up to {peak:.3g}, beyond the {WEIGHT_LIMIT:g} "
                             "of a usable model: a diverged or damaged model, which would colour every photo gray")


# tensors saved under another name by earlier versions -> today's name (read from older weight files)
RENAMED_TENSORS = {"channel_centres": "channel_centers"}


def _renamed_tensors(module, state_dict, prefix, *args) -> None:
    """A load-state-dict pre-hook: an older file's tensor names (``RENAMED_TENSORS``) as today's."""
    for old, new in RENAMED_TENSORS.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


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
            out.append((annealed_probabilities(logits, temperature) * centres).sum(1))
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
        trunk: the frozen trunk of a "hypercolumn" network (Ciugurean's colorizer: a
            trunk's features at several depths, stacked per pixel, and a small trained
            decoder): a trained model's network, "eccv16" or "global_local", or the
            pretrained DINOv2 ViT-S/14 encoder shipped with the package, "dinov2-small"
            (``colorizer.networks.DinoHypercolumn``; its weights are the package's file,
            not part of the model's).
        trunk_size: "dinov2-small": the encoder sees the photo at about trunk_size^2
            pixels (sides multiples of 14), apart from ``input_size``, the decoder's.
        trunk_blocks: "dinov2-small": the encoder blocks (1-12) whose tokens the decoder reads.
        trunk_tune: "dinov2-small": the encoder's last blocks (with its final norm) that were
            trained with the decoder, whose weights are then the model's own (0: the whole
            encoder frozen, the package's file); they must start after a read block
            (4 with the default blocks: 9-12).
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
        temperature: float = PAPER_TEMPERATURE,
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
        trunk_size: int = 224,
        trunk_blocks: list[int] | None = None,
        trunk_tune: int = 0,
    ):
        super().__init__()
        if rebalance and objective == "regression" and color_space != "lab":
            # the weights are over ab bins, which a yuv or rgb regression has not: said, not silently dropped
            # (models saved before training refused it hold rebalance: true and still load)
            warnings.warn(f"rebalance: a {color_space} regression has no ab bins to rebalance over; its loss is "
                          "plain L2 (rebalance set to False)", stacklevel=2)
            rebalance = False
        check_settings(locals())
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
        self.color_space = color_space
        if objective == "channel_classification":  # a and b each in channel_bins classes (Ciugurean)
            edges = torch.linspace(-ab_range, ab_range, channel_bins + 1)
            self.register_buffer("channel_centers", (edges[:-1] + edges[1:]) / 2)
            out = 2 * channel_bins
        else:
            out = q if objective == "classification" else COLOR_SPACES[color_space]
        self.ab_range = ab_range
        options = {"trunk": trunk} if network == "hypercolumn" else {}
        network_class = NETWORKS[network]
        if network == "hypercolumn" and trunk == "dinov2-small":  # the trunk checks its own settings
            network_class = DinoHypercolumn
            options.update(trunk_size=trunk_size, l_cent=l_cent, l_norm=l_norm, tune=trunk_tune)
            if trunk_blocks is not None:
                options["blocks"] = tuple(trunk_blocks)
        if semantic_width:
            options["semantic_width"] = semantic_width
        if self.labels:
            options["num_labels"] = len(self.labels)
        self.net = network_class(out, width, **options)
        self.register_load_state_dict_pre_hook(_renamed_tensors)

    @property
    def settings(self) -> dict:
        """The constructor's settings of this model (what ``config.json`` holds):
        ``Colorizer(**model.settings)`` builds the same network."""
        return dict(self._hub_mixin_config or {})

    @property
    def uses_temperature(self) -> bool:
        """Whether the annealed-mean temperature changes this model's colours: the
        classification objectives decode a distribution, a regression gives one colour."""
        return self.objective != "regression"

    @property
    def has_global_branch(self) -> bool:
        """Whether the network reads the whole photo into global features that a reference
        photo can replace (``global_local``, Iizuka et al.)."""
        return self.network == "global_local"

    @property
    def has_pretrained_trunk(self) -> bool:
        """Whether the network reads the pretrained DINOv2 encoder (``trunk="dinov2-small"``)."""
        return isinstance(self.net, DinoHypercolumn)

    def trunk_input(self, lightness: torch.Tensor) -> torch.Tensor | None:
        """The L ``(B, 1, h, w)`` that the pretrained trunk reads for a network input
        ``lightness`` (resized to its size), or None for a model without one."""
        return self.net.trunk.resize(lightness) if self.has_pretrained_trunk else None

    @property
    def num_bins(self) -> int:
        return len(self.bin_centers)

    @property
    def device(self) -> torch.device:
        return self.bin_centers.device

    # ------------------------------------------------------------------ network
    def forward(
        self, lightness: torch.Tensor, global_features: torch.Tensor | None = None, return_labels: bool = False,
        trunk_features: tuple[list[torch.Tensor], torch.Tensor] | None = None,
        trunk_lightness: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` L in [0, 100] -> ``(B, Q, H/4, W/4)`` logits (classification;
        ``2 channel_bins`` for channel_classification) or the regression's colour at H/4 x
        W/4 in ``color_space`` (ab; U, V; or R, G, B). ``global_features`` ``(B, G)`` (from
        ``reference_features``, global_local networks only) replace the photos' own;
        ``return_labels`` also returns the label head's ``(B, len(labels))`` logits;
        ``trunk_features`` (the DINOv2 trunk's ``(maps, cls)`` of these photos, e.g. cached for
        training, or ``(maps, cls, start)`` for a model with ``trunk_tune`` blocks, ``start``
        the tokens they take on: ``DinoTrunk.retune``) stand in for running the trunk; ``trunk_lightness`` is the L the trunk reads,
        at its size already (``trunk_input``)."""
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
        for name, value in (("trunk_features", trunk_features), ("trunk_lightness", trunk_lightness)):
            if value is not None:
                if not self.has_pretrained_trunk:
                    raise ValueError(f"{name}: this model has no pretrained trunk (trunk dinov2-small)")
                options[name] = value
        out = self.net(x, **options)
        if return_labels:
            out, label_logits = out
        if self.objective == "regression":  # to the colour space's own units
            out = out * self.ab_norm if self.color_space == "lab" else out + (0.5 if self.color_space == "rgb" else 0.0)
        return (out, label_logits) if return_labels else out

    @contextlib.contextmanager
    def evaluating(self):
        """Eval mode (batch-norm statistics, no dropout) for the block, then the mode it was in."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def network_input(self, lightness: Lightness | torch.Tensor) -> torch.Tensor:
        """The photo's L (a ``Lightness``, or an L tensor) at this model's input size:
        ``(1, 1, h, w)`` (``colorizer.pipeline.network_input``)."""
        return network_input(self, lightness)

    def _photo_input(self, image: ImageInput, max_pixels: int | None) -> torch.Tensor:
        """A photo's network input ``(1, 1, h, w)`` L on the model's device."""
        return network_input(self, split_lightness(read_image(image, max_pixels))).to(self.device)

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
        with self.evaluating():
            probs = self(small, return_labels=True)[1].float().softmax(dim=1)[0].tolist()
        return dict(sorted(zip(self.labels, probs), key=lambda kv: -kv[1]))

    def _require_global_branch(self) -> None:
        if not self.has_global_branch:
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
        with self.evaluating():
            return self.net.global_features((small - self.l_cent) / self.l_norm)

    def global_features_of(self, reference, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor | None:
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
            return _per_channel_mean(output, self.channel_centers, t)
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
        return analyze_batch(self, [image], max_pixels=max_pixels, reference=reference)[0]

    @torch.no_grad()
    def analyze_batch(
        self, images: Sequence[ImageInput], batch_size: int = 8, max_pixels: int | None = DEFAULT_MAX_PIXELS,
        reference=None,
    ) -> list[Prediction]:
        """``analyze`` for many photos; photos whose network sizes match share a batch."""
        return analyze_batch(self, images, batch_size, max_pixels, reference)

    def run_network(self, lightness: torch.Tensor, global_features: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for a batch of network inputs: ONNX Runtime after
        ``use_onnxruntime()`` while the model is on the CPU (and no reference), else torch."""
        return run_network(self, lightness, global_features)

    onnx_network = None  # the ONNX Runtime session of use_onnxruntime(), or None
    onnx_version: tuple[int, ...] = ()  # weights_version() when it was made

    def weights_version(self) -> tuple[int, ...]:
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
            self.onnx_network = None
            return self
        if self.device.type != "cpu":
            raise ValueError(f"use_onnxruntime: ONNX Runtime runs the network on the CPU; this model is on {self.device}")
        from colorizer.onnx_runtime import OnnxRuntimeNetwork, cached_onnx

        self.onnx_network = OnnxRuntimeNetwork(path if path is not None else cached_onnx(self), threads)
        self.onnx_version = self.weights_version()
        return self

    @property
    def backend(self) -> str:
        """What runs the network in ``analyze``: "onnxruntime" or "torch"."""
        return "onnxruntime" if self.onnx_network is not None and self.device.type == "cpu" else "torch"

    def export_onnx(self, path: str | Path) -> Path:
        """Write the network as ONNX to ``path`` (dynamic batch and sizes that are multiples of
        8; input ``lightness`` (B, 1, H, W) L in [0, 100], output what ``forward`` gives: (B, Q,
        H/4, W/4) logits, or a regression's colour in the model's ``color_space``), checked
        against torch to 1e-4. The model itself is not changed. See ``colorizer.onnx_runtime``."""
        from colorizer.onnx_runtime import export_onnx

        return export_onnx(self, path)

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
            image: path, bytes, binary file object, PIL image or numpy array; any mode
                (colour photos are colorized from their L channel).
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
        out = pred.render(temperature)
        return (out, pred.uncertainty()) if return_uncertainty else out

    def colorize_batch(self, images: Sequence[ImageInput], temperature: float | None = None, batch_size: int = 8,
                       max_pixels: int | None = DEFAULT_MAX_PIXELS, errors: str = "raise",
                       reference=None) -> list[Image.Image | ImageError]:
        """Colorize many photos, ``batch_size`` at a time (``colorizer.pipeline.colorize_batch``:
        ``errors="return"`` puts an unreadable photo's ``ImageError`` in its place)."""
        return colorize_batch(self, images, temperature, batch_size, max_pixels, errors, reference)

    # ------------------------------------------------------------------ hub
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path | None = None, *, strict: bool = True, **kwargs):
        """Load a model: no argument or a shipped name ("default", see
        ``available_models()``) loads a model shipped in the package; otherwise a
        local folder or a Hub repository id. Loading is strict: a missing or
        unexpected tensor is an error."""
        source = resolve_model(pretrained_model_name_or_path)
        if os.path.isdir(source):
            check_config_file(Path(source) / "config.json", cls)
            return super().from_pretrained(source, strict=strict, **kwargs)
        try:
            return super().from_pretrained(source, strict=strict, **kwargs)
        except Exception as e:  # the Hub's many error types (HTTP, DNS, offline mode, missing repo): one line
            raise hub_error(e, f"{source}: could not load it from the Hugging Face Hub", "check the repository id "
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
        weights = _weights_path(  # model_id is resolve_model's answer already (from_pretrained)
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        check_weights_file(weights, model)
        try:
            missing, unexpected = safetensors.torch.load_model(model, str(weights), strict=strict, device=map_location)
        except RuntimeError as e:  # the weights are another network's: say which setting disagrees
            raise ValueError(f"{weights}: the weights do not fit config.json ({first_mismatch(e)})") from None
        if missing or unexpected:  # only reachable with strict=False
            warnings.warn(f"{model_id}: missing tensors {missing}, unexpected tensors {unexpected}")
        if os.path.isdir(model_id) and (Path(model_id) / "README.md").is_file():
            model._loaded_from = Path(model_id)  # its card travels with it when saved elsewhere
        check_weight_values(weights, model)
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
            raise hub_error(e, f"{repo_id}: could not upload to the Hugging Face Hub", "check the network, and a "
                             "token with write access (`hf auth login`, or the HF_TOKEN variable)") from None

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        """The Hub model card: metadata (library, tags, pipeline, licence, metrics),
        usage, the configuration as a table, and ``results`` Markdown if given."""
        config = self.settings
        config.pop("prior", None)
        n_params = sum(p.numel() for p in self.parameters())
        rows = [("parameters", f"{n_params:,}"), ("bins Q", self.num_bins)] + sorted(config.items())
        kwargs.setdefault(
            "config_table", "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        )
        card = super().generate_model_card(*args, **kwargs)
        card.data.metrics = ["auc", "psnr", "ssim", "colorfulness"]
        return card


