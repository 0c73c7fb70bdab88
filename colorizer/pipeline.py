"""The photo pipeline around the network: a photo in, a full-resolution colour photo out.

``Colorizer`` (``colorizer.model``) is the network and what it knows of itself (its
settings, decoding, loss, Hub I/O); this module serves the API (``Colorizer.analyze``,
``colorize``, ``colorize_batch`` call it), the CLI, the app and the evaluation alike:

- ``network_size`` / ``network_input``: the photo's L at the network's input area, aspect kept;
- ``run_network``: a batch through torch, or ONNX Runtime after ``Colorizer.use_onnxruntime``;
- ``analyze_batch``: photos read, batched by network size, into ``Prediction`` objects;
- ``Prediction``: one photo's network output, rendered at any temperature at full resolution
  (``colorizer.render``: ab upsampled, chroma kept in gamut, the photo's own L);
- ``colorize_batch``, ``gray_rgb``, ``compose``.

Full-resolution inference: the photo's L is resized, keeping its aspect ratio, so its area is
about ``input_size``^2 (both sides multiples of 8), the network predicts ab at a quarter of
that, ab is upsampled bilinearly to the photo's full resolution, chroma is shrunk where (L,
a, b) would leave the sRGB gamut, and the result is recombined with the photo's own
full-resolution L. The original release instead squashed every photo into a 256x256
square, which distorts shapes the network sees; keeping the aspect ratio avoids that.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorizer.bins import check_temperature, entropy
from colorizer.errors import check_count
from colorizer.images import (DEFAULT_MAX_PIXELS, ImageError, ImageInput, Lightness, check_max_pixels, read_image,
                              split_lightness)
from colorizer.render import render

__all__ = ["network_size", "network_input", "run_network", "analyze_batch", "colorize_batch", "check_batch_size",
           "Prediction", "gray_rgb", "compose"]


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


def network_input(model, lightness: Lightness | torch.Tensor) -> torch.Tensor:
    """The photo's L resized, for ``model``, (antialiased bilinear) to ``network_size``: ``(1, 1, h, w)``.
    A ``Lightness`` is resized across a strip of rows at a time, then down (what
    ``F.interpolate`` does in one call, to the bit), so no full-size float L is made."""
    if isinstance(lightness, torch.Tensor):
        h, w = network_size(*lightness.shape[-2:], model.input_size)
        return F.interpolate(lightness, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    width, height = lightness.size
    h, w = network_size(height, width, model.input_size)
    rows = lightness.strip_rows
    across = torch.cat([
        F.interpolate(lightness.rows(top, rows).view(1, 1, -1, width), size=(min(rows, height - top), w),
                      mode="bilinear", align_corners=False, antialias=True)
        for top in range(0, height, rows)], dim=2)  # (1, 1, H, w)
    out = F.interpolate(across, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out.contiguous(memory_format=torch.contiguous_format)  # (not channels-last: a slower convolution)


def run_network(model, lightness: torch.Tensor, global_features: torch.Tensor | None = None) -> torch.Tensor:
    """The network's output for a batch of network inputs: ONNX Runtime after
    ``use_onnxruntime()`` while the model is on the CPU (and no reference), else torch."""
    onnx = model.onnx_network
    if onnx is not None and model.device.type == "cpu" and global_features is None:
        if model.weights_version() == model.onnx_version:
            return onnx(lightness, model.trunk_input(lightness))
        warnings.warn("the weights changed since use_onnxruntime(): back to torch (call it again to re-export)")
        model.onnx_network = None
    return model(lightness.to(model.device), global_features)


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

    model: torch.nn.Module  # a colorizer.model.Colorizer (not imported here: it imports this module)
    lightness: Lightness
    output: torch.Tensor
    network_l: torch.Tensor | None = None  # (1, 1, h, w) L at the output's resolution (YUV and RGB models)

    @property
    def size(self) -> tuple[int, int]:
        return self.lightness.size

    def ab(self, temperature: float | None = None) -> torch.Tensor:
        """``(1, 2, h, w)`` ab at the network's output resolution."""
        if self.model.needs_lightness and self.network_l is None:
            self.network_l = self.model.lightness_for(network_input(self.model, self.lightness), self.output)
        return self.model.decode(self.output, temperature, self.network_l)

    def render(self, temperature: float | None = None) -> Image.Image:
        """The full-resolution colour photo at ``temperature`` (None: the model's own), RGB,
        or RGBA when the input had alpha. ``Colorizer.colorize`` is ``analyze`` then this."""
        return render(self.lightness, self.ab(temperature))

    def colorize(self, temperature: float | None = None) -> Image.Image:
        """Deprecated name of ``render`` (``Colorizer.colorize`` takes a photo; this takes a
        temperature): kept so that code written for it still runs."""
        warnings.warn("Prediction.colorize(temperature) is now Prediction.render(temperature)", DeprecationWarning,
                      stacklevel=2)
        return self.render(temperature)

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


def check_batch_size(batch_size: int) -> int:
    """The one rule for ``batch_size``: a whole number of photos >= 1 (``colorizer.errors.check_count``)."""
    return check_count(batch_size, "batch_size", "photos")


def _check_images(images, call: str) -> None:
    """``images`` must be a sequence of photos, not one photo (a path, bytes, array or PIL image)."""
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):  # paths, arrays, PIL images too
        raise TypeError(f"{call} takes a list of images, got one {type(images).__name__}: use "
                        f"{call.replace('_batch', '')}() for one photo")


@torch.no_grad()
def analyze_batch(
    model, images: Sequence[ImageInput], batch_size: int = 8, max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reference=None,
) -> list["Prediction"]:
    """``model``'s ``analyze`` for many photos; photos whose network sizes match share a batch.

    Raises:
        TypeError / ValueError: ``images`` is one photo, or ``batch_size`` or ``max_pixels``
            is not a whole number >= 1 (``max_pixels`` may be None).
    """
    _check_images(images, "analyze_batch")
    batch_size, max_pixels = check_batch_size(batch_size), check_max_pixels(max_pixels)
    g = model.global_features_of(reference, max_pixels)
    parts = [split_lightness(read_image(im, max_pixels)) for im in images]
    small = [network_input(model, p) for p in parts]
    outputs: list[torch.Tensor | None] = [None] * len(parts)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(small):
        by_size.setdefault(tuple(s.shape[-2:]), []).append(i)
    with model.evaluating():
        for idxs in by_size.values():
            for start in range(0, len(idxs), batch_size):
                chunk = idxs[start : start + batch_size]
                out = run_network(model, torch.cat([small[i] for i in chunk]),
                                        None if g is None else g.expand(len(chunk), -1))
                for i, o in zip(chunk, out):
                    outputs[i] = o[None].float()
    return [Prediction(model, p, o, model.lightness_for(s, o))  # type: ignore[arg-type]
            for p, o, s in zip(parts, outputs, small)]


def colorize_batch(
    model,
    images: Sequence[ImageInput],
    temperature: float | None = None,
    batch_size: int = 8,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    errors: str = "raise",
    reference=None,
) -> list[Image.Image | ImageError]:
    """Colorize many photos with ``model``; returns PIL images in the same order. Photos are read
    ``batch_size`` at a time, so only one batch's full-resolution L is in memory.

    Args:
        errors: "raise" (the first unreadable photo raises its ``ImageError``) or
            "return" (every readable photo is colorized, and an unreadable one's place
            in the list holds its ``ImageError``, which names the file).
        reference: one reference photo for all of them (see ``colorize``); read once.

    Raises:
        TypeError: ``images`` is one image (a path, bytes, array or PIL image), not a
            sequence of them: use ``colorize`` for one photo.
        TypeError / ValueError: ``batch_size`` or ``max_pixels`` is not a whole number >= 1
            (``max_pixels`` may be None), ``errors`` or ``temperature`` is not one it takes.
    """
    _check_images(images, "colorize_batch")
    batch_size, max_pixels = check_batch_size(batch_size), check_max_pixels(max_pixels)
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
    if temperature is not None:
        check_temperature(temperature)
    g = model.global_features_of(reference, max_pixels)  # read once, and a bad reference fails before any work
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
            done = iter(analyze_batch(model, good, batch_size, max_pixels, reference=g) if good else [])
            out += [r if isinstance(r, ImageError) else next(done).render(temperature) for r in read]
        else:
            out += [p.render(temperature) for p in analyze_batch(model, chunk, batch_size, max_pixels, reference=g)]
    return out


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
