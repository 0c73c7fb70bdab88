"""Colorization metrics, each defined once: AuC (raw and class-rebalanced), threshold
accuracy in RGB, PSNR, SSIM and colourfulness.

Conventions:

* ab images are ``(B, 2, H, W)`` torch tensors of CIE Lab a and b (about [-110, 110]);
  per-pixel weights are ``(B, H, W)``.
* RGB images are ``(H, W, 3)`` uint8 numpy arrays (8-bit sRGB), as saved to disk.

**AuC** (Zhang et al. 2016, sec. 3.1, "raw accuracy"): for each threshold
t = 0, 1, ..., 150 the accuracy acc(t) is the (weighted) share of pixels whose ab
error ||pred_ab - true_ab||_2 is at most t; the AuC is the area under acc(t) by the
trapezoid rule on that grid, divided by 150, so it lies in [0, 1]:

    AuC = (1 / 150) * sum_{t=0}^{149} (acc(t) + acc(t + 1)) / 2

A perfect prediction gives 1. A prediction off by exactly d everywhere (an integer
d in [1, 150]) gives (150 - d + 0.5) / 150: acc is 0 below d and 1 from d on.

**Class-rebalanced AuC**: the same with each pixel weighted by 1 / p(q), where q is
the bin nearest to its *true* ab and p a prior over bins (``rebalanced_pixel_weights``).
The project's one definition (``evaluation_prior``, used by ``evaluation.evaluate`` and
by training's validation) takes p = the *evaluated set's own* empirical prior over the
grid-10 in-gamut bins, counted once over all its photos, whatever model is scored: each
colour bin present then gets the same total weight, so the rebalanced accuracy is the
mean over colour bins of the per-bin accuracy (rare colours count as much as common
ones), and rows of different models stay comparable.

**Threshold accuracy** (Champati et al., in their study of colour spaces and losses for
colorization from small data): the AuC's construction on 8-bit RGB instead of ab:
acc(t) is the share of pixels whose RGB error ||pred_rgb - true_rgb||_2 (levels 0..255)
is at most t, integrated over t = 0, 1, ..., 150 by the trapezoid rule and divided by
150 (``THRESHOLD_MAX_DISTANCE``, the AuC's span; the paper leaves the span to the data set).
Unlike the AuC it also counts errors in lightness, which a Lab model never makes, so it
scores models that predict RGB or YUV alongside ours on one scale.

**PSNR / SSIM**: scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity`` on 8-bit RGB with data_range 255 (SSIM: 7x7 uniform
window, computed per channel and averaged). A perfect prediction has PSNR = inf.

**Colourfulness** (Hasler & Suesstrunk 2003, "Measuring colourfulness in natural
images", eq. 3 with the M^(3) parameters): with R, G, B in [0, 255],
rg = R - G and yb = (R + G) / 2 - B,

    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)

We use the paper's *signed* opponent channels. Some colorization papers (and a
widely copied tutorial) use |R - G| and |(R + G) / 2 - B| instead, which gives
larger values; ``absolute=True`` computes that variant. A gray image scores 0 in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorizer.bins import PriorCounter, gamut_bins, nearest_bin

__all__ = [
    "AUC_MAX_DISTANCE",
    "AucMeter",
    "auc",
    "THRESHOLD_MAX_DISTANCE",
    "threshold_accuracy",
    "threshold_meter",
    "rebalanced_pixel_weights",
    "EVAL_PRIOR_GRID",
    "EvaluationPrior",
    "evaluation_prior",
    "psnr",
    "ssim",
    "colorfulness",
    "colour_cast",
]

AUC_MAX_DISTANCE = 150.0
THRESHOLD_MAX_DISTANCE = 150.0  # in 8-bit RGB levels
EVAL_PRIOR_GRID = 10.0  # side of the ab bins of the rebalanced AuC's prior (the paper's grid)


def _check_ab_pair(pred_ab: torch.Tensor, true_ab: torch.Tensor, weights: torch.Tensor | None) -> None:
    for name, x in (("pred_ab", pred_ab), ("true_ab", true_ab)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"auc: {name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 2:
            raise ValueError(f"auc: expected {name} of shape (B, 2, H, W), got {tuple(x.shape)}")
    if pred_ab.shape != true_ab.shape:
        raise ValueError(f"auc: pred_ab {tuple(pred_ab.shape)} and true_ab {tuple(true_ab.shape)} differ in shape")
    if weights is not None:
        b, _, h, w = true_ab.shape
        if tuple(weights.shape) != (b, h, w):
            raise ValueError(f"auc: expected weights of shape ({b}, {h}, {w}), got {tuple(weights.shape)}")
        if (weights < 0).any():
            raise ValueError("auc: weights must be non-negative")


class AucMeter:
    """Accumulates the ab-error accuracy curve over many images (pixels of all images
    pooled), so that the AuC "over all pixels" of a data set needs no big tensor.

    ``update(pred_ab, true_ab, weights=None)`` adds a batch; ``value()`` is the AuC in
    [0, 1]; ``curve()`` is acc(t) for t = 0..max_distance, ``(T,)`` float64.
    """

    def __init__(self, max_distance: float = AUC_MAX_DISTANCE):
        if max_distance <= 0 or max_distance != int(max_distance):
            raise ValueError(f"AucMeter: max_distance must be a positive whole number, got {max_distance}")
        self.thresholds = torch.arange(int(max_distance) + 1, dtype=torch.float64)  # (T,) 0, 1, ..., 150
        # mass[i]: weight of pixels whose error e has thresholds[i-1] < e <= thresholds[i];
        # the last slot holds the pixels farther than max_distance.
        self.mass = torch.zeros(len(self.thresholds) + 1, dtype=torch.float64)

    def update(self, pred_ab: torch.Tensor, true_ab: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        _check_ab_pair(pred_ab, true_ab, weights)
        self.add_errors(torch.linalg.vector_norm((pred_ab.double() - true_ab.double()), dim=1), weights)  # (B, H, W)

    def add_errors(self, errors: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Count per-pixel distances (any shape; ``weights`` the same shape or None)."""
        slot = torch.bucketize(errors.flatten().double().cpu(), self.thresholds)  # first threshold >= err
        w = None if weights is None else weights.flatten().double().cpu()
        self.mass += torch.bincount(slot, weights=w, minlength=len(self.mass)).double()

    @property
    def total(self) -> float:
        return float(self.mass.sum())

    def curve(self) -> torch.Tensor:
        """acc(t) for t = 0, 1, ..., max_distance: ``(T,)`` float64 in [0, 1]."""
        if self.total <= 0:
            raise ValueError("AucMeter: no pixels (or zero total weight) counted yet")
        return torch.cumsum(self.mass[:-1], 0) / self.total

    def value(self) -> float:
        """Area under ``curve()`` by the trapezoid rule, divided by max_distance."""
        acc = self.curve()
        span = float(self.thresholds[-1])
        return float(torch.trapezoid(acc, self.thresholds)) / span


def auc(
    pred_ab: torch.Tensor,
    true_ab: torch.Tensor,
    weights: torch.Tensor | None = None,
    max_distance: float = AUC_MAX_DISTANCE,
) -> float:
    """Area under the ab-accuracy curve (Zhang et al.'s raw accuracy AuC), in [0, 1].

    Args:
        pred_ab, true_ab: ``(B, 2, H, W)`` ab; all B*H*W pixels are pooled.
        weights: optional ``(B, H, W)`` non-negative per-pixel weights (e.g.
            ``rebalanced_pixel_weights`` for the class-rebalanced AuC).
        max_distance: the largest threshold, a whole number of ab units (150).
    Returns:
        (1 / max_distance) * trapezoid area of acc(t), t = 0, 1, ..., max_distance,
        where acc(t) is the weighted share of pixels with ||pred - true||_2 <= t.
    """
    meter = AucMeter(max_distance)
    meter.update(pred_ab, true_ab, weights)
    return meter.value()


def threshold_meter(pred_rgb: np.ndarray, true_rgb: np.ndarray) -> AucMeter:
    """An ``AucMeter`` over RGB distances (span ``THRESHOLD_MAX_DISTANCE``) holding one
    photo's pixels, to pool with other photos' (``meter.mass += other.mass``)."""
    pred, true = _check_rgb_pair(pred_rgb, true_rgb, "threshold_accuracy")
    meter = AucMeter(THRESHOLD_MAX_DISTANCE)
    diff = torch.from_numpy(pred.astype(np.float64) - true.astype(np.float64))  # (H, W, 3)
    meter.add_errors(torch.linalg.vector_norm(diff, dim=-1))
    return meter


def threshold_accuracy(pred_rgb: np.ndarray, true_rgb: np.ndarray) -> float:
    """Champati et al.'s threshold accuracy in [0, 1]: the AuC's construction on 8-bit RGB
    distances (see the module's notes). Identical photos give 1."""
    return threshold_meter(pred_rgb, true_rgb).value()


def rebalanced_pixel_weights(true_ab: torch.Tensor, centres: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights 1 / p(q) for the class-rebalanced AuC.

    Args:
        true_ab: ``(B, 2, H, W)`` ground-truth ab.
        centres: ``(Q, 2)`` bin centres; prior: ``(Q,)`` probabilities over those bins
            (need not be normalised; only ratios matter to the AuC).
    Returns:
        ``(B, H, W)`` float64: the inverse prior of each pixel's nearest true bin. A
        pixel in a bin with zero prior (possible with a model's training prior, never
        with the evaluation set's own prior) gets the weight of the rarest bin seen
        in training, 1 / min(p > 0), so that it counts and the weights stay finite.
    """
    if true_ab.dim() != 4 or true_ab.shape[1] != 2:
        raise ValueError(f"rebalanced_pixel_weights: expected true_ab (B, 2, H, W), got {tuple(true_ab.shape)}")
    prior = torch.as_tensor(prior, dtype=torch.float64).flatten()
    if prior.shape != (len(centres),):
        raise ValueError(f"rebalanced_pixel_weights: prior must have {len(centres)} entries, got {tuple(prior.shape)}")
    if (prior < 0).any() or not (prior > 0).any():
        raise ValueError("rebalanced_pixel_weights: prior must be non-negative with some positive entry")
    floor = prior[prior > 0].min()
    inverse = 1.0 / prior.clamp(min=float(floor))  # (Q,)
    idx = nearest_bin(true_ab, centres.to(true_ab.device))  # (B, H, W)
    return inverse.to(idx.device)[idx]


@dataclass(frozen=True)
class EvaluationPrior:
    """The evaluated set's own empirical prior over ab bins, for the class-rebalanced AuC.

    Attributes:
        centres: ``(Q, 2)`` in-gamut bin centres (grid ``EVAL_PRIOR_GRID`` = 10: Q = 261).
        prior: ``(Q,)`` float64, the share of the set's pixels whose true ab is nearest
            each bin (sums to 1).
        pixels: how many pixels were counted.
    """

    centres: torch.Tensor
    prior: torch.Tensor
    pixels: int

    def pixel_weights(self, true_ab: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` float64 weights 1 / p(q) of ``(B, 2, H, W)`` true ab pixels."""
        return rebalanced_pixel_weights(true_ab, self.centres, self.prior)


def evaluation_prior(true_ab: Iterable[torch.Tensor], grid: float = EVAL_PRIOR_GRID) -> EvaluationPrior:
    """The one prior of the class-rebalanced AuC: the empirical distribution of the
    evaluated set's true ab over the in-gamut bins of side ``grid`` (10), counted once
    over every photo of the set (``colorizer.bins.PriorCounter``) -- never a model's
    training prior, so every model scored on the set is weighted the same way.

    Args:
        true_ab: the set's ground-truth ab, an iterable of ``(B, 2, H, W)`` tensors
            (one per photo or batch; pixels of all of them are pooled).
        grid: side of the ab bins (ab units).
    Raises:
        ValueError: no pixels were given.
    """
    centres = gamut_bins(grid)  # (Q, 2)
    counter = PriorCounter(centres)
    for ab in true_ab:
        if not isinstance(ab, torch.Tensor) or ab.dim() != 4 or ab.shape[1] != 2:
            got = tuple(ab.shape) if isinstance(ab, torch.Tensor) else type(ab).__name__
            raise ValueError(f"evaluation_prior: expected true ab of shape (B, 2, H, W), got {got}")
        counter.update(ab.float().cpu())
    if counter.total <= 0:
        raise ValueError("evaluation_prior: no pixels to count")
    return EvaluationPrior(centres=centres, prior=counter.prior(), pixels=int(counter.total))


def _check_rgb(x: np.ndarray, name: str, fn: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{fn}: expected {name} of shape (H, W, 3), got {x.shape}")
    if x.dtype != np.uint8:
        raise TypeError(f"{fn}: expected {name} as uint8, got {x.dtype}")
    return x


def _check_rgb_pair(pred: np.ndarray, true: np.ndarray, fn: str) -> tuple[np.ndarray, np.ndarray]:
    pred, true = _check_rgb(pred, "pred_rgb", fn), _check_rgb(true, "true_rgb", fn)
    if pred.shape != true.shape:
        raise ValueError(f"{fn}: pred_rgb {pred.shape} and true_rgb {true.shape} differ in shape")
    return pred, true


def psnr(pred_rgb: np.ndarray, true_rgb: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of 8-bit RGB ``(H, W, 3)`` uint8 images
    (data range 255); ``inf`` when they are identical."""
    pred, true = _check_rgb_pair(pred_rgb, true_rgb, "psnr")
    if np.array_equal(pred, true):
        return math.inf  # skimage would divide by zero (and warn) on the way to inf
    return float(peak_signal_noise_ratio(true, pred, data_range=255))


def ssim(pred_rgb: np.ndarray, true_rgb: np.ndarray) -> float:
    """Structural similarity of 8-bit RGB ``(H, W, 3)`` uint8 images, in [-1, 1]
    (1 = identical): scikit-image's SSIM per channel, averaged, data range 255, with
    a 7x7 window (smaller, odd, for images under 7 pixels on a side; at least 3)."""
    pred, true = _check_rgb_pair(pred_rgb, true_rgb, "ssim")
    side = min(pred.shape[:2])
    if side < 3:
        raise ValueError(f"ssim: images must be at least 3x3 pixels, got {pred.shape[:2]}")
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(true, pred, data_range=255, channel_axis=2, win_size=win))


def colour_cast(pred_ab: torch.Tensor, true_ab: torch.Tensor) -> float:
    """The colour cast of a colorization: the distance in ab between its mean colour and
    the real photo's, ``|| mean(pred_ab) - mean(true_ab) ||`` over the pixels of
    ``(1, 2, H, W)`` ab. A uniform tint (every photo sepia) shows here even when the
    per-pixel errors look small; gray's cast is the distance of the photo's mean ab from 0."""
    _check_ab_pair(pred_ab, true_ab, None)
    diff = pred_ab.double().mean(dim=(0, 2, 3)) - true_ab.double().mean(dim=(0, 2, 3))  # (2,)
    return float(torch.linalg.vector_norm(diff))


def colorfulness(rgb: np.ndarray, absolute: bool = False) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of an 8-bit RGB ``(H, W, 3)`` uint8
    image, on the [0, 255] scale: 0 for gray; about 15 "slightly", 33 "moderately",
    59 "quite", 82 "highly" and 109 "extremely colourful" in the paper's scale.

    Args:
        absolute: use |R - G| and |(R + G) / 2 - B| (the variant some papers use)
            instead of the paper's signed opponent channels.
    """
    x = _check_rgb(rgb, "rgb", "colorfulness").astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    if absolute:
        rg, yb = np.abs(rg), np.abs(yb)
    sigma = math.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mu = math.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return sigma + 0.3 * mu
