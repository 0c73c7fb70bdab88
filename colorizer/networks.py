"""Colorization networks: ECCV16 (Zhang et al. 2016) and a global-local variant, with a width multiplier.

``ECCV16`` has eight convolutional blocks: blocks 1-3 halve the resolution with
strided convolutions, blocks 4-7 keep it at 1/8 (5 and 6 dilated by 2 to widen
the receptive field), each block ends in batch norm; block 8 upsamples with a
transposed convolution to 1/4 resolution and a 1x1 head gives ``out_channels``
per pixel: Q logits for the classification model, 2 (a, b) for the regression
baseline. ``width`` scales every channel count (1.0 is the paper's network).

``GlobalLocal`` adds the joint global and local idea of Iizuka, Simo-Serra and
Ishikawa, "Let there be Color!" (SIGGRAPH 2016) to the same trunk: a global
branch turns the 1/8 features of blocks 1-3 into one vector per photo (strided
convolutions, global average pooling, linear layers), and a fusion layer
broadcasts that vector to every location of block 4's mid-level features before
blocks 5-8 and the head. Global features can be taken from another photo
("global feature transfer"): ``net(x_a, net.global_features(x_b))``. With
``num_labels`` it also has Iizuka et al.'s classification head on the global
features (a label per photo, e.g. its scene or source), trained jointly.

Input of both: normalised lightness ``(B, 1, H, W)``; H and W should be
multiples of 8 (other sizes run, giving ``2 * ceil(H/8)`` rows).
Output of both: ``(B, out_channels, H/4, W/4)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ECCV16", "GlobalLocal", "Hypercolumn", "DinoHypercolumn", "scaled"]


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


def _eccv16_blocks(width: float) -> nn.Sequential:
    """The eight ECCV16 blocks, ``(B, 1, H, W)`` -> ``(B, scaled(256, width), H/4, W/4)``.

    Both networks hold them as ``blocks``, so their shared weights have the same names.
    """
    c1, c2, c3, c4 = (scaled(c, width) for c in (64, 128, 256, 512))
    return nn.Sequential(
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


class ECCV16(nn.Module):
    """The ECCV16 trunk and head.

    Args:
        out_channels: channels of the 1x1 head (Q logits, or 2 for regression).
        width: channel multiplier; 1.0 is the paper's 64-128-256-512 network.
    """

    def __init__(self, out_channels: int, width: float = 1.0):
        super().__init__()
        self.blocks = _eccv16_blocks(width)
        self.head = nn.Conv2d(scaled(256, width), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, out_channels, H/4, W/4)``."""
        return self.head(self.blocks(x))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at four depths, for hypercolumns: blocks 1, 2 and 3 (1/2, 1/4, 1/8) and
        the last features before the head (1/4)."""
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in (0, 1, 2):
                out.append(x)
        return out + [x]


class GlobalLocal(nn.Module):
    """ECCV16 with a global branch and a fusion layer after Iizuka et al. (2016).

    Local path: ECCV16 blocks 1-3 (low-level features, 1/8 resolution) and block 4
    (mid-level). Global path, from the low-level features: two stride-2 3x3 convs
    (conv, batch norm, ReLU; to 1/16 then 1/32), global average pooling, so any
    photo size and aspect ratio works, then ``Linear(c4, c4)``, ReLU and
    ``Linear(c4, G)`` with ``G = scaled(256, width)``. Fusion: the global vector is
    broadcast to every location of block 4's convolution output, concatenated to
    it, and a 1x1 conv + ReLU brings the ``c4 + G`` channels back to ``c4``; block
    4's batch norm follows, then ECCV16 blocks 5-8 and the 1x1 head.
    ``c4 = scaled(512, width)``.

    Initialisation: the fusion conv starts as the identity on the local channels
    (weight ``I``, bias 0) and with small random weights on the global ones
    (normal, std ``0.01 / sqrt(G)``). Block 4's convolution output is already
    ReLU'd, so at init the fused features are the local features plus a small
    global term, and the network starts as ECCV16 while the global branch still
    receives gradients from the first step. ``blocks`` and ``head`` have the names
    and shapes of ECCV16's, so a trained ECCV16 warm-starts this network:
    ``load_state_dict(eccv16.state_dict(), strict=False)`` leaves only
    ``global_branch.*`` and ``fusion.*`` missing.

    Label head (``num_labels`` > 0, Iizuka et al.'s joint classification): ``Linear(G,
    G)``, ReLU, ``Linear(G, num_labels)`` on the global vector, so that the global
    branch learns what kind of photo it sees; ``forward(x, return_labels=True)`` also
    returns its logits.

    Args:
        out_channels: channels of the 1x1 head (Q logits, or 2 for regression).
        width: channel multiplier; 1.0 gives the paper-sized ECCV16 trunk.
        num_labels: classes of the label head (0: none).
    """

    def __init__(self, out_channels: int, width: float = 1.0, num_labels: int = 0):
        super().__init__()
        c3, c4 = scaled(256, width), scaled(512, width)
        self.global_dim = scaled(256, width)
        self.blocks = _eccv16_blocks(width)
        self.global_branch = nn.Sequential(
            nn.Conv2d(c3, c4, 3, stride=2, padding=1, bias=False),  # 1/16
            nn.BatchNorm2d(c4),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c4, 3, stride=2, padding=1, bias=False),  # 1/32
            nn.BatchNorm2d(c4),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c4, c4),
            nn.ReLU(inplace=True),
            nn.Linear(c4, self.global_dim),
        )
        self.fusion = nn.Sequential(nn.Conv2d(c4 + self.global_dim, c4, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(c3, out_channels, 1)
        self.label_head = (
            nn.Sequential(nn.Linear(self.global_dim, self.global_dim), nn.ReLU(inplace=True),
                          nn.Linear(self.global_dim, num_labels))
            if num_labels > 0 else None
        )  # fmt: skip
        with torch.no_grad():
            weight = self.fusion[0].weight  # (c4, c4 + G, 1, 1)
            weight.zero_()
            weight[:, :c4, 0, 0] = torch.eye(c4)
            weight[:, c4:].normal_(0.0, 0.01 / self.global_dim**0.5)
            self.fusion[0].bias.zero_()

    def global_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> global feature vectors ``(B, G)``, ``G = global_dim``."""
        return self.global_branch(self.blocks[:3](x))

    def forward(
        self, x: torch.Tensor, global_features: torch.Tensor | None = None, return_labels: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` normalised L -> ``(B, out_channels, H/4, W/4)``.

        Args:
            x: normalised lightness ``(B, 1, H, W)``.
            global_features: ``(B, G)`` from ``global_features`` of other photos (any
                size) to colorize ``x`` with; None uses those of ``x`` itself.
            return_labels: also return the label head's ``(B, num_labels)`` logits.

        Raises:
            ValueError: ``global_features`` is not ``(B, G)``, or labels asked of a
                network without a label head.
        """
        if return_labels and self.label_head is None:
            raise ValueError("return_labels: this network has no label head (num_labels 0)")
        if global_features is not None:
            expected = (x.shape[0], self.global_dim)
            if global_features.shape != expected:
                raise ValueError(f"global_features: expected {expected}, got {tuple(global_features.shape)}")
        low = self.blocks[:3](x)  # (B, c3, H/8, W/8)
        g = self.global_branch(low) if global_features is None else global_features  # (B, G)
        mid = self.blocks[3][:-1](low)  # (B, c4, H/8, W/8), block 4 before its batch norm
        g_map = g[:, :, None, None].expand(-1, -1, *mid.shape[2:])  # (B, G, H/8, W/8)
        fused = self.fusion(torch.cat([mid, g_map], dim=1))  # (B, c4, H/8, W/8)
        h = self.blocks[4:](self.blocks[3][-1](fused))  # (B, c3, H/4, W/4)
        out = self.head(h)  # (B, out_channels, H/4, W/4)
        return (out, self.label_head(g)) if return_labels else out

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at four depths, for hypercolumns: blocks 1, 2 and 3 (1/2, 1/4, 1/8) and
        the last features before the head (1/4, after the fusion with the global vector)."""
        b1 = self.blocks[0](x)
        b2 = self.blocks[1](b1)
        low = self.blocks[2](b2)
        mid = self.blocks[3][:-1](low)
        g = self.global_branch(low)
        fused = self.fusion(torch.cat([mid, g[:, :, None, None].expand(-1, -1, *mid.shape[2:])], dim=1))
        return [b1, b2, low, self.blocks[4:](self.blocks[3][-1](fused))]


def frozen_trunk(network: str, width: float) -> nn.Module:
    """A trained network's body to read features from (``features``): an ``ECCV16`` or
    ``GlobalLocal`` without its head and without gradients, for a ``WithFrozenTrunk``."""
    if network not in ("eccv16", "global_local"):
        raise ValueError(f"trunk must be 'eccv16' or 'global_local', got {network!r}")
    trunk = (ECCV16 if network == "eccv16" else GlobalLocal)(1, width)
    trunk.head = nn.Identity()  # its features are what is used
    return trunk.requires_grad_(False)


class WithFrozenTrunk(nn.Module):
    """A network holding a trained ``trunk`` (``frozen_trunk``, when it has one) that stays
    frozen: in eval mode whatever the network's mode, so its batch-norm statistics stay
    those it was trained with, until ``unfreeze`` (end-to-end fine-tuning)."""

    frozen = True

    def unfreeze(self):
        """Train the trunk too (end to end: its weights and batch-norm statistics), as a
        fine-tuning step after the rest has learned on the frozen features."""
        self.frozen = False
        self.trunk.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen and getattr(self, "trunk", None) is not None:
            self.trunk.eval()
        return self

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's ``features`` of ``x``, with gradients only once unfrozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.trunk.features(x)


class Hypercolumn(WithFrozenTrunk):
    """A frozen trained trunk and a small trained decoder on its hypercolumns (Ciugurean's
    colorizer, with this project's own network as the pre-trained feature extractor).

    The trunk (an ``ECCV16`` or ``GlobalLocal`` without its head, weights copied from a
    trained model and never updated, batch norm in eval mode) gives features at four
    depths (``features``: 1/2, 1/4, 1/8 and its last, 1/4); each is resized to 1/4 of the
    input (bilinear) and stacked per pixel, a hypercolumn of ``c1 + c2 + 2 c3`` values.
    The decoder: a 1x1 convolution to ``D = scaled(512, width)`` channels, three residual
    blocks (3x3 conv, batch norm, ReLU, 3x3 conv, batch norm, plus the block's input,
    ReLU) and a 1x1 head.

    Args:
        out_channels: channels of the head (2 x 64 per-channel classes, 2 for regression).
        width: the trunk's width (that of the model it comes from) and the decoder's scale.
        trunk: "eccv16" or "global_local", the trained model's network.
    """

    def __init__(self, out_channels: int, width: float = 1.0, trunk: str = "eccv16"):
        super().__init__()
        self.trunk = frozen_trunk(trunk, width)
        self.trunk_network = trunk
        c1, c2, c3 = (scaled(c, width) for c in (64, 128, 256))
        d = scaled(512, width)
        self.reduce = nn.Sequential(nn.Conv2d(c1 + c2 + 2 * c3, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True))
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True),
                          nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d))
            for _ in range(3)
        )  # fmt: skip
        self.head = nn.Conv2d(d, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, out_channels, H/4, W/4)``."""
        feats = self.trunk_features(x)
        size = feats[-1].shape[-2:]  # 1/4
        column = torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear",
                                                                          align_corners=False) for f in feats], dim=1)
        h = self.reduce(column)
        for block in self.decoder:
            h = torch.relu(block(h) + h)
        return self.head(h)


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class DinoHypercolumn(WithFrozenTrunk):
    """The pretrained DINOv2 ViT-S/14 encoder, frozen, and a decoder on its hypercolumns
    guided by the photo's own L, so that colour edges follow the photo's edges.

    Trunk (``colorizer.dinov2.DinoTrunk``): the gray photo at about ``trunk_size``^2 pixels,
    the patch tokens of ``blocks`` (14 px patches) and the final class token.
    Decoder: each block's token map through a 1x1 convolution and batch norm (their scales
    differ by depth) to ``C = scaled(128, width)`` channels, the class token projected to
    ``C`` and broadcast (the whole scene, at every patch), a 3x3 convolution to ``2 C`` and a
    residual block on the token grid (where the decoder's capacity is cheap), a 1x1 to ``D8 =
    scaled(96, width)``; that map upsampled (bilinear) to 1/8 of the network input and fused
    with an L path (three stride-2 3x3 convolutions of the input L: 1/2, 1/4, 1/8) by a 3x3
    convolution and a residual block at 1/8; upsampled to 1/4 and fused again with the L
    path's 1/4 features by two 3x3 convolutions to ``scaled(48, width)``, then the 1x1 head. Any size whose sides are
    multiples of 8 works; the encoder's input is sized apart (``trunk_size``), so the decoder's
    L path can see the photo finer than the encoder does.

    ``forward(x, trunk_features=(maps, cls))`` takes the encoder's output computed
    beforehand (cached features of training crops) instead of running it; with ``tune``
    last blocks trained (``DinoTrunk.tuned``), ``(maps, cls, start)`` runs those blocks on
    ``start``, the cached tokens of the block before them.

    Args:
        out_channels: channels of the head.
        width: the decoder's channel multiplier.
        trunk: the encoder ("dinov2-small").
        trunk_size, blocks: see ``DinoTrunk`` (blocks None: its ``DEFAULT_BLOCKS``).
        l_cent, l_norm: the normalisation of the input, undone for the encoder (which sees
            the gray photo, not normalised L).
    """

    def __init__(self, out_channels: int, width: float = 1.0, trunk: str = "dinov2-small", trunk_size: int = 224,
                 blocks: tuple[int, ...] | None = None, l_cent: float = 50.0, l_norm: float = 100.0,
                 weights: bool = True, tune: int = 0):
        super().__init__()
        from colorizer.dinov2 import DEFAULT_BLOCKS, DinoTrunk

        blocks = DEFAULT_BLOCKS if blocks is None else tuple(blocks)
        self.trunk = DinoTrunk(trunk, blocks, trunk_size, weights=weights, tune=tune).requires_grad_(False)
        for p in self.trunk.tuned():  # the last blocks trained with the decoder (trunk_tune)
            p.requires_grad_(True)
        self.trunk_network = trunk
        self.l_cent, self.l_norm = l_cent, l_norm
        dim, c = self.trunk.dim, scaled(128, width)
        self.token_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(dim, c, 1, bias=False), nn.BatchNorm2d(c))
                                        for _ in blocks)
        self.cls_proj = nn.Sequential(nn.Linear(dim, c), nn.ReLU(inplace=True))
        d8, d4 = scaled(96, width), scaled(48, width)
        # the heavy part at the token grid (16 x 16 for 224 px), light ones at 1/8 and 1/4
        self.token_mix = nn.Sequential(_conv_bn(c * (len(blocks) + 1), 2 * c), _Residual(2 * c),
                                       nn.Conv2d(2 * c, d8, 1, bias=False), nn.BatchNorm2d(d8), nn.ReLU(inplace=True))
        l1, l2, l3 = scaled(16, width), scaled(32, width), scaled(32, width)
        self.l_path = nn.ModuleList([_conv_bn(1, l1, 2), _conv_bn(l1, l2, 2), _conv_bn(l2, l3, 2)])
        self.fuse8 = nn.Sequential(_conv_bn(d8 + l3, d8), _Residual(d8))
        self.fuse4 = nn.Sequential(_conv_bn(d8 + l2, d4), _conv_bn(d4, d4))
        self.head = nn.Conv2d(d4, out_channels, 1)

    def forward(self, x: torch.Tensor, trunk_features: tuple[list[torch.Tensor], torch.Tensor] | None = None,
                trunk_lightness: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 1, H, W)`` normalised L -> ``(B, out_channels, H/4, W/4)``. ``trunk_lightness``:
        the photo's L (in [0, 100]) at the encoder's size already (``self.trunk.resize``), so
        that an exported graph needs no size arithmetic."""
        if trunk_features is None:
            # gradients reach only the tuned blocks (the rest of the trunk requires none)
            with torch.set_grad_enabled(torch.is_grad_enabled() and (not self.frozen or self.trunk.tune > 0)):
                if trunk_lightness is not None:
                    trunk_features = self.trunk(trunk_lightness, resized=True)
                else:
                    trunk_features = self.trunk(x.float() * self.l_norm + self.l_cent)
        elif len(trunk_features) == 3:  # cached features and the tokens where the tuned blocks start
            if not self.trunk.tune:
                raise ValueError("trunk_features: (maps, cls, start) is for a model with trunk_tune blocks")
            maps, _, start = trunk_features
            trunk_features = self.trunk.retune([m.float() for m in maps], start.float())
        maps, cls = trunk_features
        if len(maps) != len(self.token_proj):
            raise ValueError(f"trunk_features: expected {len(self.token_proj)} token maps, got {len(maps)}")
        tokens = [proj(m.to(x.dtype)) for proj, m in zip(self.token_proj, maps)]
        g = self.cls_proj(cls.to(x.dtype))[:, :, None, None].expand(-1, -1, *tokens[0].shape[-2:])
        t = self.token_mix(torch.cat([*tokens, g], dim=1))  # (B, D8, h14, w14)
        h2 = self.l_path[0](x)
        h4 = self.l_path[1](h2)
        h8 = self.l_path[2](h4)
        up = F.interpolate(t, size=h8.shape[-2:], mode="bilinear", align_corners=False)
        f8 = self.fuse8(torch.cat([up, h8], dim=1))
        f4 = F.interpolate(f8, size=h4.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.fuse4(torch.cat([f4, h4], dim=1)))
