"""The quantized ab space of Zhang et al. (2016): in-gamut bins, soft-encoding,
the empirical prior with class rebalancing, and annealed-mean decoding.

Conventions: ab values are CIE Lab a and b in about [-110, 110]; bin centres are a
``(Q, 2)`` tensor of (a, b); ab images are ``(B, 2, H, W)``; distributions and logits
over bins are ``(B, Q, H, W)``.

How the bins are chosen (``gamut_bins``): the ab plane is cut into square cells of
side ``grid`` centred on multiples of ``grid`` in [-110, 110]; a cell is kept when at
least one of the 256^3 8-bit sRGB colours falls in it (its ab rounds to that centre).
That is exactly the set of bins that a pixel of a real photo can land in. With
grid 10 it gives Q = 261, not the 313 of the paper: the paper's released set
(``pts_in_hull``) also holds cells that no sRGB colour reaches, and neither the
centres inside the convex hull of the sRGB ab gamut (233) nor the cells that touch
that hull (269) give 313, so we keep the reproducible definition. Grid 20 gives
Q = 77, close to the Q of about 81 that a small-data study preferred.

The same bins exist for the UV plane of BT.601 YUV (Champati et al. compared classification
over ab and over uv bins): ``space="yuv"`` measures chroma as U and V times ``UV_SCALE``, the
factor that stretches V's extent (+-0.615) to +-110, so that ``grid``, ``k``, ``sigma`` and
``ab_range`` mean the same share of the plane in both spaces. ``rgb_to_chroma`` gives a photo's
chroma in either space's bin units; grid 10 gives Q = 283 uv bins, grid 20 Q = 81 (the
Q Champati et al. found best).
"""

from __future__ import annotations

import functools
import json
import math
import numbers
from importlib import resources
from typing import Iterable

import torch
import torch.nn.functional as F

from colorizer.color import rgb_to_lab, rgb_to_yuv

__all__ = [
    "AB_RANGE",
    "UV_SCALE",
    "CHROMA_SPACES",
    "rgb_to_chroma",
    "bin_space",
    "gamut_bins",
    "compute_gamut_bins",
    "nearest_bin",
    "soft_encode",
    "to_dense",
    "PriorCounter",
    "smooth_prior",
    "rebalance_weights",
    "check_temperature",
    "PAPER_TEMPERATURE",
    "annealed_probabilities",
    "annealed_mean",
    "entropy",
]

AB_RANGE = 110.0
UV_SCALE = AB_RANGE / 0.615  # bin units per unit of U and V: V's extent (BT.601) -> +-110
CHROMA_SPACES = ("lab", "yuv")  # the planes that have bins: ab of CIE Lab, uv of YUV
_BINS_FILE = "gamut_bins.json"
_CHUNK = 1 << 18  # pixels per distance block: 2^18 x Q=261 floats ~ 270 MB


# Zhang et al.'s annealed-mean temperature: the default of a new model (a trained one keeps its own in
# config.json, ``Colorizer.temperature``, which every caller reads)
PAPER_TEMPERATURE = 0.38


def _check_space(space: str) -> str:
    if space not in CHROMA_SPACES:
        raise ValueError(f"chroma bins exist for {' and '.join(CHROMA_SPACES)}, got space {space!r}")
    return space


def bin_space(objective: str, color_space: str) -> str:
    """The plane of a model's bins and prior: "yuv" for a classification over uv bins, else
    "lab" (ab bins: classification, and the rebalancing of the other objectives)."""
    return "yuv" if color_space == "yuv" and objective == "classification" else "lab"


def rgb_to_chroma(rgb: torch.Tensor, space: str = "lab") -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] -> its chroma ``(B, 2, H, W)`` in bin units of
    ``space``: a and b of CIE Lab ("lab"), or U and V of YUV times ``UV_SCALE`` ("yuv")."""
    if _check_space(space) == "lab":
        return rgb_to_lab(rgb)[:, 1:]
    return rgb_to_yuv(rgb)[:, 1:] * UV_SCALE


def compute_gamut_bins(grid: float = 10.0, ab_range: float = AB_RANGE, space: str = "lab") -> torch.Tensor:
    """Derive the in-gamut bin centres from every 8-bit sRGB colour.

    Args:
        grid: side of a bin in ab units (10 in the paper); in ``space`` "yuv", in the
            scaled uv units of ``rgb_to_chroma``.
        ab_range: the grid covers [-ab_range, ab_range] on each axis.
        space: "lab" (ab bins) or "yuv" (uv bins).
    Returns:
        ``(Q, 2)`` float32 centres (a, b) or (u, v) in bin units, sorted by the first then the second.
    """
    _check_space(space)
    if grid <= 0 or ab_range <= 0:
        raise ValueError(f"grid and ab_range must be positive, got {grid}, {ab_range}")
    n = int(math.floor(ab_range / grid))
    side = 2 * n + 1
    hit = torch.zeros(side * side, dtype=torch.bool)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    g, b = torch.meshgrid(levels, levels, indexing="ij")
    for r in range(0, 256, 16):
        reds = levels[r : r + 16].view(-1, 1, 1).expand(-1, 256, 256)
        rgb = torch.stack([reds, g.expand_as(reds), b.expand_as(reds)], dim=1)  # (16, 3, 256, 256)
        ab = rgb_to_chroma(rgb, space)  # (16, 2, 256, 256)
        idx = torch.round(ab / grid).long().clamp(-n, n) + n
        hit[(idx[:, 0] * side + idx[:, 1]).flatten()] = True
    cells = hit.nonzero().squeeze(1)
    centres = torch.stack([cells // side - n, cells % side - n], dim=1).float() * grid
    return centres


_STORED_KEY = {"lab": "grids", "yuv": "yuv_grids"}


@functools.lru_cache(maxsize=8)
def _gamut_bins_cached(grid: float, ab_range: float, space: str) -> torch.Tensor:
    stored = json.loads(resources.files("colorizer").joinpath("data", _BINS_FILE).read_text())
    grids = stored.get(_STORED_KEY[space], {})
    same = stored["ab_range"] == ab_range and (space == "lab" or stored.get("uv_scale") == UV_SCALE)
    if f"{grid:g}" in grids and same:
        return torch.tensor(grids[f"{grid:g}"], dtype=torch.float32)
    return compute_gamut_bins(grid, ab_range, space)


def gamut_bins(grid: float = 10.0, ab_range: float = AB_RANGE, space: str = "lab") -> torch.Tensor:
    """In-gamut bin centres ``(Q, 2)`` of ``space`` ("lab": ab, "yuv": scaled uv): read
    from the stored file when this grid is in it (10 and 20 are, for both), else derived
    with ``compute_gamut_bins`` (about 2 s)."""
    return _gamut_bins_cached(float(grid), float(ab_range), _check_space(space)).clone()


def _check_ab(ab: torch.Tensor, name: str) -> None:
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"{name}: expected ab of shape (B, 2, H, W), got {tuple(ab.shape)}")


def _nearest_k(ab: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices of the k nearest centres, ``(N, k)`` each, for
    ``ab`` flattened to ``(N, 2)``; computed in blocks to bound memory."""
    centres = centres.to(device=ab.device, dtype=torch.float32)
    c2 = (centres**2).sum(1)  # (Q,)
    dists, idxs = [], []
    # float32 even under autocast: a bf16 matmul would pick the wrong bins
    with torch.autocast(ab.device.type, enabled=False):
        for block in ab.float().split(_CHUNK):
            # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, as one matmul
            d2 = (block**2).sum(1, keepdim=True) - 2.0 * block @ centres.T + c2  # (n, Q)
            d, i = d2.topk(k, dim=1, largest=False)
            dists.append(d.clamp(min=0.0))
            idxs.append(i)
    return torch.cat(dists), torch.cat(idxs)


def _pixels(ab: torch.Tensor) -> torch.Tensor:
    return ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (B*H*W, 2)


def _unpixels(x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    return x.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, k, H, W)


def nearest_bin(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin centre for each pixel.

    Args:
        ab: ``(B, 2, H, W)``; centres: ``(Q, 2)``.
    Returns:
        ``(B, H, W)`` long in [0, Q).
    """
    _check_ab(ab, "nearest_bin")
    b, _, h, w = ab.shape
    _, idx = _nearest_k(_pixels(ab), centres, 1)
    return idx.view(b, h, w)


def soft_encode(
    ab: torch.Tensor, centres: torch.Tensor, k: int = 5, sigma: float = 5.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-encode ground-truth ab over its k nearest bins (Zhang et al., sec. 2.1).

    Each pixel gets Gaussian weights exp(-d^2 / (2 sigma^2)) on its k nearest bin
    centres, normalised to sum to 1. The encoding is kept sparse, as (indices,
    weights), so a ``(B, Q, H, W)`` target need never be built; ``to_dense`` builds it.

    Args:
        ab: ``(B, 2, H, W)`` ground truth; centres: ``(Q, 2)``; k in [1, Q]; sigma > 0
            in ab units (5 in the paper).
    Returns:
        indices ``(B, k, H, W)`` long, nearest first, and weights ``(B, k, H, W)`` float32.
    """
    _check_ab(ab, "soft_encode")
    if not 1 <= k <= len(centres):
        raise ValueError(f"soft_encode: k must be in [1, {len(centres)}], got {k}")
    if sigma <= 0:
        raise ValueError(f"soft_encode: sigma must be positive, got {sigma}")
    b, _, h, w = ab.shape
    d2, idx = _nearest_k(_pixels(ab), centres, k)  # (N, k)
    # Subtracting the nearest distance changes nothing after normalising but keeps
    # exp() from underflowing for pixels far from every centre.
    weights = torch.softmax(-(d2 - d2[:, :1]) / (2.0 * sigma**2), dim=1)
    return _unpixels(idx, b, h, w), _unpixels(weights, b, h, w)


def to_dense(indices: torch.Tensor, weights: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Scatter a sparse soft encoding ``(B, k, H, W)`` into ``(B, Q, H, W)``."""
    b, _, h, w = indices.shape
    dense = torch.zeros(b, num_bins, h, w, device=weights.device, dtype=weights.dtype)
    return dense.scatter_add_(1, indices, weights)


class PriorCounter:
    """Accumulates the empirical distribution of ab over bins from a stream of images.

    Each pixel counts once for its nearest bin (the paper's prior over ImageNet).
    ``update`` takes ab batches ``(B, 2, H, W)`` and an optional ``(B, H, W)`` bool
    mask of pixels to count; ``prior()`` returns the normalised ``(Q,)`` float64.
    """

    def __init__(self, centres: torch.Tensor):
        self.centres = centres.float()
        self.counts = torch.zeros(len(centres), dtype=torch.float64)

    def update(self, ab: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        idx = nearest_bin(ab, self.centres.to(ab.device))
        if mask is not None:
            idx = idx[mask]
        self.counts += torch.bincount(idx.flatten(), minlength=len(self.centres)).double().cpu()

    @property
    def total(self) -> int:
        return int(self.counts.sum().item())

    def prior(self) -> torch.Tensor:
        if self.total == 0:
            raise ValueError("PriorCounter.prior: no pixels counted yet")
        return self.counts / self.counts.sum()



def smooth_prior(prior: torch.Tensor, centres: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian-smooth a prior over the ab plane (sigma in ab units), renormalised.

    Each bin becomes the Gaussian-weighted average, weights exp(-d^2 / (2 sigma^2)) of
    the distance between centres, of the bins around it (the paper's smoothing of the
    empirical distribution); averaging, rather than spreading mass outwards, keeps a
    uniform prior uniform at the rim of the gamut.
    """
    if prior.shape != (len(centres),):
        raise ValueError(f"smooth_prior: expected prior of shape ({len(centres)},), got {tuple(prior.shape)}")
    if sigma <= 0:
        return prior / prior.sum()
    c = centres.double()
    kernel = torch.exp(-torch.cdist(c, c) ** 2 / (2.0 * sigma**2))  # (Q, Q)
    kernel = kernel / kernel.sum(1, keepdim=True)  # row q: averaging weights around bin q
    smoothed = kernel @ prior.double()
    return smoothed / smoothed.sum()


def rebalance_weights(
    prior: torch.Tensor, centres: torch.Tensor, lam: float = 0.5, sigma: float = 5.0
) -> torch.Tensor:
    """Class-rebalancing weights (Zhang et al., eq. 3-4).

    w is proportional to 1 / ((1 - lam) p~ + lam / Q), where p~ is the prior smoothed
    with ``smooth_prior(sigma)``, normalised so that the expected weight under p~,
    sum_q p~_q w_q, is 1.

    Args:
        prior: ``(Q,)`` empirical distribution (sums to 1); centres: ``(Q, 2)``;
        lam: mix with the uniform distribution in [0, 1] (0.5 in the paper).
    Returns:
        ``(Q,)`` float64 weights.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"rebalance_weights: lam must be in [0, 1], got {lam}")
    p = smooth_prior(prior, centres, sigma)
    q = len(p)
    w = 1.0 / ((1.0 - lam) * p + lam / q)
    return w / (p * w).sum()


def check_temperature(temperature: float) -> float:
    """The one rule for an annealed-mean temperature: a finite number in [0, 1]
    (0 = the mode, 1 = the mean). Returns it as a float; raises ``ValueError`` naming
    what was received otherwise. Every entry point (API, CLI, app, survey, evaluation)
    relies on this check; a UI may only narrow its slider within it."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a number in [0, 1], got {temperature!r}")
    t = float(temperature)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"temperature must be in [0, 1], got {temperature!r}")
    return t


_TINY_T = torch.finfo(torch.float32).tiny  # the smallest normal float32: any T in (0, this] is the limit T -> 0


def annealed_probabilities(logits: torch.Tensor, temperature: float, dim: int = 1) -> torch.Tensor:
    """softmax(logits / T) along ``dim`` in float32, for T in (0, 1], finite for every such T.

    The logits are shifted by their maximum before the division, so the largest is 0 and
    the others overflow to -inf at worst (probability 0), never to +inf (NaN after the
    softmax's own shift); T is floored at the smallest normal float32, below which it
    would round to 0 and make 0 / 0. A T that small is the limit T -> 0: the mode, shared
    equally by logits that tie."""
    logits = logits.float()
    shifted = logits - logits.amax(dim, keepdim=True)  # <= 0, exactly 0 at the maximum
    return torch.softmax(shifted / max(temperature, _TINY_T), dim=dim)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float = PAPER_TEMPERATURE) -> torch.Tensor:
    """Decode a distribution over bins into ab by the annealed mean (sec. 2.2).

    ab = sum_q softmax(logits / T)_q c_q: T = 1 is the mean, T -> 0 the mode, and
    T = 0 returns the mode exactly. Computed from logits so it stays stable at small T
    (``annealed_probabilities``: any T down to 5e-324 decodes, as the mode below 1e-38).

    Args:
        logits: ``(B, Q, H, W)``; centres: ``(Q, 2)``; temperature in [0, 1] (``check_temperature``).
    Returns:
        ``(B, 2, H, W)`` ab.
    """
    if logits.dim() != 4 or logits.shape[1] != len(centres):
        raise ValueError(f"annealed_mean: expected logits (B, {len(centres)}, H, W), got {tuple(logits.shape)}")
    temperature = check_temperature(temperature)
    centres = centres.to(device=logits.device, dtype=torch.float32)
    logits = logits.float()
    if temperature == 0:
        mode = logits.argmax(1)  # (B, H, W)
        return centres[mode].permute(0, 3, 1, 2)
    with torch.autocast(logits.device.type, enabled=False):
        probs = annealed_probabilities(logits, temperature)  # (B, Q, H, W)
        return torch.einsum("bqhw,qc->bchw", probs, centres)


def entropy(logits: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Entropy of the predicted distribution per pixel, ``(B, Q, H, W)`` -> ``(B, 1, H, W)``;
    divided by log Q when ``normalize`` so it lies in [0, 1] (1 = uniform, 0 = certain)."""
    logp = F.log_softmax(logits.float(), dim=1)
    h = -(logp.exp() * logp).sum(1, keepdim=True)
    return h / math.log(logits.shape[1]) if normalize else h


def write_bins_file(grids: Iterable[float] = (10.0, 20.0), ab_range: float = AB_RANGE) -> str:
    """Regenerate ``colorizer/data/gamut_bins.json`` (run ``python -m colorizer.bins``)."""
    path = resources.files("colorizer").joinpath("data", _BINS_FILE)
    grids = list(grids)
    data = {
        "method": "cells of side `grid` centred on multiples of `grid` in [-ab_range, ab_range] "
        "that at least one 8-bit sRGB colour falls in (colorizer.bins.compute_gamut_bins); "
        "yuv_grids: the same over U and V of YUV times UV_SCALE",
        "ab_range": ab_range,
        "uv_scale": UV_SCALE,
        **{key: {f"{g:g}": compute_gamut_bins(g, ab_range, space).int().tolist() for g in grids}
           for space, key in _STORED_KEY.items()},
    }
    with open(str(path), "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    return str(path)


if __name__ == "__main__":
    print(write_bins_file())
