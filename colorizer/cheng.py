"""Deep Colorization (Cheng, Yang & Sheng, ICCV 2015), in this project's frame.

Per-pixel features of increasing receptive field, concatenated, and a small fully
connected network that regresses the chrominance, then a joint bilateral filter guided
by the gray image:

* low level: the 7x7 patch of lightness around the pixel (49 values);
* mid level: a DAISY descriptor (Tola et al.; ``skimage.feature.daisy``, radius 15,
  2 rings of 6 histograms of 8 orientations: 104 values), computed on the CPU;
* high level: the paper's scene-parsing label (no parser here) becomes, with
  ``semantic_width``, the mid-level features of this project's own trained ECCV16 network
  (its third block, 1/8 resolution, 256 x width channels), kept frozen and read bilinearly at
  each pixel of the output grid; without it the model works from the low and mid levels alone;
* the network: per pixel, ``features -> hidden -> hidden -> out`` with ReLUs, as 1x1
  convolutions; it runs on the output grid only (every 4th pixel each way, the
  resolution of every network of this project), which is the pixel sample it learns from;
* refinement: ``joint_bilateral`` smooths the chroma where the gray image is flat (the
  paper's fix for blotches in low-texture areas such as sky) and keeps its edges.

As in the paper it regresses U and V of YUV with L2 (``Colorizer(network="cheng15",
objective="regression", color_space="yuv")``, ``train/configs/cheng.yaml``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from colorizer.networks import WithFrozenTrunk, frozen_trunk, scaled

__all__ = ["Cheng15", "joint_bilateral", "DAISY"]

PATCH = 7  # side of the lightness patch (low-level feature)
DAISY = dict(radius=15, rings=2, histograms=6, orientations=8)  # skimage.feature.daisy settings
DAISY_SIZE = (DAISY["rings"] * DAISY["histograms"] + 1) * DAISY["orientations"]  # 104
STRIDE = 4  # the output grid: every 4th pixel


def daisy_features(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` lightness in [0, 1] -> ``(B, 104, ceil(H/4), ceil(W/4))`` DAISY
    descriptors centred on the output grid's pixels (the photo mirrored at its borders)."""
    from skimage.feature import daisy

    r = DAISY["radius"]
    out = []
    for image in x[:, 0].detach().float().cpu().numpy():
        padded = np.pad(image, r, mode="reflect")
        d = daisy(padded, step=STRIDE, **DAISY)  # (ceil(H/4), ceil(W/4), 104)
        out.append(torch.from_numpy(np.ascontiguousarray(d.transpose(2, 0, 1))))
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


class Cheng15(WithFrozenTrunk):
    """The per-pixel network of Deep Colorization on patch and DAISY features.

    Args:
        out_channels: 2 (U, V or a, b) or 3 (R, G, B).
        width: scales the hidden layers (256 units at 1.0).
        semantic_width: the width of a trained ECCV16 network (``trunk``, frozen, its weights
            copied in by ``train.loop.init_weights``) whose mid-level features are the
            semantic feature; None: no semantic feature.
    Input ``(B, 1, H, W)`` normalised lightness (L / 100 - 0.5); output
    ``(B, out_channels, ceil(H/4), ceil(W/4))``.
    """

    def __init__(self, out_channels: int, width: float = 1.0, semantic_width: float | None = None):
        super().__init__()
        hidden = max(16, int(round(256 * width)))
        n_in = PATCH * PATCH + DAISY_SIZE
        if semantic_width:
            self.trunk = frozen_trunk("eccv16", semantic_width)
            self.trunk_network = "eccv16"
            n_in += scaled(256, semantic_width)
        self.norm = nn.BatchNorm2d(n_in)  # the features' scales differ (lightness vs histogram mass)
        self.mlp = nn.Sequential(
            nn.Conv2d(n_in, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )  # fmt: skip

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, 153 [+ semantic], h, w)``: 7x7 patches, DAISY
        and, with a trunk, its mid-level features at the output grid's pixels."""
        b, _, h, w = x.shape
        oh, ow = -(-h // STRIDE), -(-w // STRIDE)
        patches = F.unfold(F.pad(x, (PATCH // 2,) * 4, mode="replicate"), PATCH, stride=STRIDE)
        parts = [patches.view(b, PATCH * PATCH, oh, ow), daisy_features(x + 0.5)]
        if hasattr(self, "trunk"):
            mid = self.trunk_features(x)[2]  # block 3, 1/8
            parts.append(F.interpolate(mid, size=(oh, ow), mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(self.features(x)))


def joint_bilateral(values: torch.Tensor, guide: torch.Tensor, radius: int = 3, sigma_space: float = 2.0,
                    sigma_range: float = 4.0) -> torch.Tensor:
    """Joint (cross) bilateral filter: each pixel of ``values`` ``(B, C, h, w)`` becomes the
    mean of its ``(2 radius + 1)^2`` neighbours weighted by their distance (Gaussian,
    ``sigma_space`` pixels) and by how close the guide ``(B, 1, h, w)`` is to its own
    (Gaussian, ``sigma_range`` in the guide's units, L here): smooth within regions of
    the gray image, sharp across its edges."""
    k = 2 * radius + 1
    b, c, h, w = values.shape
    pad = (radius,) * 4
    around = F.unfold(F.pad(values, pad, mode="replicate"), k).view(b, c, k * k, h * w)
    guides = F.unfold(F.pad(guide, pad, mode="replicate"), k).view(b, 1, k * k, h * w)
    offsets = torch.arange(k, device=values.device, dtype=values.dtype) - radius
    space = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma_space**2)).view(1, 1, k * k, 1)
    centre = guide.reshape(b, 1, 1, h * w)
    weights = space * torch.exp(-((guides - centre) ** 2) / (2 * sigma_range**2))  # (B, 1, k*k, h*w)
    return ((around * weights).sum(2) / weights.sum(2)).view(b, c, h, w)
