"""The ECCV16 colorization network of Zhang et al. (2016), with a width multiplier.

Eight convolutional blocks: blocks 1-3 halve the resolution with strided
convolutions, blocks 4-7 keep it at 1/8 (5 and 6 dilated by 2 to widen the
receptive field), each block ends in batch norm; block 8 upsamples with a
transposed convolution to 1/4 resolution and a 1x1 head gives ``out_channels``
per pixel: Q logits for the classification model, 2 (a, b) for the regression
baseline. ``width`` scales every channel count (1.0 is the paper's network).

Input: normalised lightness ``(B, 1, H, W)``; H and W should be multiples of 8.
Output: ``(B, out_channels, H/4, W/4)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ECCV16", "scaled"]


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier, at least 8 and a multiple of 4."""
    return max(8, int(round(channels * width / 4)) * 4)


def _convs(c_in: int, c_out: int, n: int, stride_last: int = 1, dilation: int = 1) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n):
        stride = stride_last if i == n - 1 else 1
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=stride, padding=dilation, dilation=dilation),
            nn.ReLU(inplace=True),
        ]
    return layers


class ECCV16(nn.Module):
    """The ECCV16 trunk and head.

    Args:
        out_channels: channels of the 1x1 head (Q logits, or 2 for regression).
        width: channel multiplier; 1.0 is the paper's 64-128-256-512 network.
    """

    def __init__(self, out_channels: int, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = (scaled(c, width) for c in (64, 128, 256, 512))
        self.blocks = nn.Sequential(
            nn.Sequential(*_convs(1, c1, 2, stride_last=2), nn.BatchNorm2d(c1)),  # 1/2
            nn.Sequential(*_convs(c1, c2, 2, stride_last=2), nn.BatchNorm2d(c2)),  # 1/4
            nn.Sequential(*_convs(c2, c3, 3, stride_last=2), nn.BatchNorm2d(c3)),  # 1/8
            nn.Sequential(*_convs(c3, c4, 3), nn.BatchNorm2d(c4)),
            nn.Sequential(*_convs(c4, c4, 3, dilation=2), nn.BatchNorm2d(c4)),
            nn.Sequential(*_convs(c4, c4, 3, dilation=2), nn.BatchNorm2d(c4)),
            nn.Sequential(*_convs(c4, c4, 3), nn.BatchNorm2d(c4)),
            nn.Sequential(
                nn.ConvTranspose2d(c4, c3, 4, stride=2, padding=1),  # back to 1/4
                nn.ReLU(inplace=True),
                *_convs(c3, c3, 2),
            ),
        )
        self.head = nn.Conv2d(c3, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, out_channels, H/4, W/4)``."""
        return self.head(self.blocks(x))
