"""Full-resolution rendering: the photo's L and the network's low-resolution ab into an
8-bit sRGB image, in strips of rows, at memory speed, the same for every content.

``render(lightness, ab)`` upsamples ab bilinearly (as ``F.interpolate(...,
align_corners=False)`` would), shrinks the chroma of colours that would leave the sRGB
gamut (keeping L and hue, as ``colorizer.color.clip_chroma`` does by bisection), converts
Lab to sRGB and quantizes to 8 bits, a strip of rows at a time, into one interleaved
8-bit array that PIL copies once at the end. Nothing else of the photo's full size is
made, and everything runs in float32 on the device of the lightness.

On the CPU the per-pixel work runs compiled (``colorizer.render_kernel``, numba: the
same arithmetic in a few vectorized passes over a row at a time, bands of rows in
threads), 3-4x faster than the torch operations below, which are the path on a GPU
and where numba cannot be imported; the two agree to within 1 level (tested).

Three things make it fast, each checked against the plain functions of
``colorizer.color`` in the tests:

* the gamut clip in closed form rather than by a search: a table gives, for each
  lightness and hue direction, how far from gray a colour can go (``gamut_table``), and
  one Newton step on the binding RGB channel makes that exact (within a 1/1000th of the
  chroma where the table is coarse, at the corners of the gamut); it costs the same for
  every pixel, so a black photo, whose every pixel needs clipping, is no slower; the few
  pixels (a few in 1000 of a photo) whose step was long are bisected together at the end;
* the sRGB transfer curve and the 8-bit rounding as one lookup in a 65536-entry table of
  linear values;
* the Lab -> XYZ -> linear RGB chain written with in-place operations on buffers made once
  per call, so no strip allocates.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from colorizer.color import _XYZ_FROM_RGB, WHITE_D65, _shrink_chroma, lab_to_rgb_in_gamut, srgb_from_linear
from colorizer.images import Lightness, _level_tables

__all__ = ["render", "gamut_table", "STRIP_PIXELS", "KERNEL"]

KERNEL = True  # on the CPU, the compiled loop of colorizer.render_kernel (False: the torch operations)

STRIP_PIXELS = 1 << 17  # pixels per strip: buffers of a few MB, which stay in the caches
GAMUT_ROWS = 256  # lightness levels of the gamut table (0..100)
GAMUT_COLS = 512  # hue directions of the gamut table
_LUT_SIZE = 65536  # linear-light levels of the sRGB lookup
_C = 6.0 / 29.0  # where CIE's f^-1 changes from linear to cubic
_SLOPE = 3.0 * _C * _C  # slope of the linear part (= 1 / 7.787, skimage's constant, to 6 digits)
_made: dict = {}  # what _once made: tables by (name, device), the kernel module, the band pool
_lock = threading.RLock()  # reentrant: a device's table is made from the CPU's
_TINY = 1e-30  # keeps 1 / d finite where d is 0
_LONG_STEP = 0.005  # a Newton step longer than this (in |a|/500 + |b|/200) is redone by bisection
_OUTSIDE = 0.005 * (_LUT_SIZE - 1)  # so is one from a start further than this outside the gamut
_BISECTION_STEPS = 14  # halvings of the chroma for those: within 2^-14 of it, far below an 8-bit level


def _xyz_matrix() -> torch.Tensor:
    """``(3, 3)`` float64 M with linear RGB = M @ (X/Xw, Y, Z/Zw) (white folded in)."""
    m = torch.linalg.inv(torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64))
    return m * torch.tensor([WHITE_D65[0], 1.0, WHITE_D65[2]], dtype=torch.float64)


def _lookup_matrix() -> torch.Tensor:
    """``_xyz_matrix`` in lookup units: linear RGB 0 .. 65535 from (X/Xw, Y, Z/Zw)."""
    return _xyz_matrix() * (_LUT_SIZE - 1)


def _directions(cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``cols + 1`` hue directions of the table (the last repeats the first), as
    unit-L1 vectors in the scaled space (a / 500, -b / 200): column j holds
    t = -2 + 4 j / cols, where t = sign(B) (1 - A / (|A| + |B|)) runs once around."""
    t = torch.arange(cols + 1, dtype=torch.float64) * (4.0 / cols) - 2.0
    a = 1.0 - t.abs()
    return a, torch.sign(t) * (1.0 - a.abs())


def gamut_table(rows: int = GAMUT_ROWS, cols: int = GAMUT_COLS, steps: int = 20) -> torch.Tensor:
    """How far from gray each lightness and hue can go inside the sRGB gamut.

    Returns ``(rows, cols + 1)`` float64: entry (i, j) is the largest r such that
    L = 100 i / (rows - 1) with (A, B) = r * direction j (see ``_directions``; A = a/500,
    B = -b/200) is in the gamut, as ``colorizer.color.clip_chroma`` finds it (bisection
    of the chroma from r = 1.5, far outside at any L, to 1.5 * 2^-steps). The gamut is
    star-shaped around gray at almost every lightness and hue, so beyond r the colour is out.
    """
    far = 1.5
    lightness = torch.linspace(0.0, 100.0, rows, dtype=torch.float64)[:, None].expand(rows, cols + 1)
    a, b = (d[None].expand(rows, cols + 1) * far for d in _directions(cols))
    lab = torch.stack([lightness, a * 500.0, b * -200.0], dim=-1).reshape(-1, 3)
    shrunk = _shrink_chroma(lab, steps)
    return (shrunk[:, 1].abs() / 500.0 + shrunk[:, 2].abs() / 200.0).view(rows, cols + 1)  # |A| + |B|


def _srgb_lut(size: int = _LUT_SIZE) -> torch.Tensor:
    """uint8 sRGB level, rounded to nearest, of the linear values v with floor(v (size - 1)) = i,
    taken at the middle of that interval, (i + 0.5) / (size - 1)."""
    x = ((torch.arange(size, dtype=torch.float64) + 0.5) / (size - 1)).clamp(max=1.0)
    return (srgb_from_linear(x) * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8)


def _once(key, make):
    """``make()``, called once per process for ``key`` however many threads ask at once."""
    if key not in _made:
        with _lock:
            if key not in _made:
                _made[key] = make()
    return _made[key]


def _table(name: str, device: torch.device) -> torch.Tensor:
    """The gamut table (flattened float32) or the sRGB lookup, made once per process and device."""
    if device.type == "cpu":
        return _once((name, "cpu"), lambda: gamut_table(GAMUT_ROWS, GAMUT_COLS).float().reshape(-1)
                     if name == "gamut" else _srgb_lut())
    return _once((name, str(device)), lambda: _table(name, torch.device("cpu")).to(device))


def _upsample_plan(n_in: int, n_out: int) -> tuple[list[int], torch.Tensor]:
    """Source index and weight of each output position for bilinear resizing with
    ``align_corners=False`` (PyTorch's rule: clamped at 0, the next index capped at the end)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    first = src.floor().clamp(max=n_in - 1)
    return first.long().tolist(), (src - first).float()


class _Strips:
    """Buffers for strips of up to ``n`` pixels (kept per thread by ``_workspace``)."""

    def __init__(self, n: int, device: torch.device):
        def f(*shape):
            return torch.empty(*shape, device=device)

        self.ab, self.f, self.m, self.m2, self.lin, self.d = f(2, n), f(3, n), f(3, n), f(3, n), f(3, n), f(3, n)
        self.norm, self.t, self.s, self.o, self.c = f(n), f(n), f(n), f(n), f(n)
        self.index = torch.empty(3 * n, dtype=torch.int32, device=device)
        self.out = torch.empty(3 * n, dtype=torch.uint8, device=device)  # interleaved RGB, when not written in place


_workspaces = threading.local()


def _workspace(n: int, device: torch.device) -> _Strips:
    """This thread's buffers for strips of ``n`` pixels on ``device``, kept between calls
    (about 100 bytes a pixel: 13 MB for the default strip)."""
    found = getattr(_workspaces, "strips", None)
    if found is None or found[0] != (n, str(device)):
        found = _workspaces.strips = ((n, str(device)), _Strips(n, device))
    return found[1]


def _to_srgb8(l: torch.Tensor, ws: _Strips, n: int, matrix: list, kx: torch.Tensor, kz: torch.Tensor,
              gamut: torch.Tensor, lut: torch.Tensor, out: torch.Tensor, pending: list) -> None:
    """One strip: ``l`` (n) lightness and ``ws.ab[:, :n]`` (A = a/500, B = -b/200) ->
    ``out`` (3 n) uint8 sRGB, R G B of each pixel in turn, chroma shrunk into the gamut. The
    few pixels whose Newton step was long are added to ``pending`` as (their indices, L, A,
    B), to be bisected."""
    a, b = ws.ab[0, :n], ws.ab[1, :n]
    norm, t, s = ws.norm[:n], ws.t[:n], ws.s[:n]
    f, m, m2, lin, d = ws.f[:, :n], ws.m[:, :n], ws.m2[:, :n], ws.lin[:, :n], ws.d[:, :n]
    rows, cols = GAMUT_ROWS, GAMUT_COLS
    # 1. the table's chroma limit for this lightness and hue: s = min(1, r_max / r)
    torch.abs(a, out=norm)
    torch.abs(b, out=t)
    norm.add_(t).clamp_(min=1e-12)
    torch.div(a, norm, out=t)
    t.neg_().add_(1.0).copysign_(b)  # the hue direction, in [-2, 2]
    # linear between the two rows around L (near white the limit falls fast with L), nearest column
    weight, upper = ws.o[:n], ws.c[:n]
    torch.mul(l, (rows - 1) / 100.0, out=weight).clamp_(0.0, rows - 1 - 1e-3)
    torch.floor(weight, out=s)
    weight.sub_(s)
    s.mul_(cols + 1).add_(t, alpha=cols / 4.0).add_(cols / 2.0 + 0.5)
    index = ws.index[:n]
    index.copy_(s)  # truncation of a positive number: the row below and the nearest column
    torch.index_select(gamut, 0, index, out=s)
    index.add_(cols + 1)
    torch.index_select(gamut, 0, index, out=upper)
    s.lerp_(upper, weight).div_(norm).clamp_(max=1.0)
    # 2. Lab -> linear RGB at chroma s: f = (fx, fy, fz), t = f^-1(f), lin = M t
    fy = f[1]
    torch.add(l, 16.0, out=fy).mul_(1.0 / 116.0)
    torch.addcmul(fy, a, s, out=f[0])
    torch.addcmul(fy, b, s, out=f[2])
    f[2].clamp_(min=0.0)
    torch.clamp(f, min=_C, out=m)
    torch.mul(m, m, out=m2)
    f.sub_(m).mul_(_SLOPE).addcmul_(m2, m)  # f^-1(f) = max(f, C)^3 + slope * min(f - C, 0)
    for c in range(3):  # lin = M t, scaled to the lookup's range (cheaper than a 3x3 matmul here)
        torch.mul(f[0], matrix[c][0], out=lin[c])
        lin[c].add_(f[1], alpha=matrix[c][1]).add_(f[2], alpha=matrix[c][2])
    # 3. one Newton step along the chroma to the channel that binds (skipped where nothing is clipped)
    if float(s.amin()) < 1.0:
        curved = ws.c[:n]  # 1 where some f is on the cube (the line below 6/29 makes Newton exact)
        torch.amax(m, dim=0, out=curved)
        curved.sub_(_C).clamp_(min=0.0).sign_()
        outside = ws.o[:n]  # how far the start is outside the gamut, in lookup units (0 inside)
        torch.amax(lin, dim=0, out=outside)
        outside.sub_(_LUT_SIZE - 1).clamp_(min=0.0).sub_(torch.amin(lin, dim=0).clamp_(max=0.0))
        dx, dz = m[0], m[2]  # d t / d s for x and z (y does not move): 3 m^2 * (A, B); the 3 is in kx, kz
        torch.mul(m2[0], a, out=dx)
        torch.mul(m2[2], b, out=dz)
        torch.mul(kx, dx.unsqueeze(0), out=d)
        d.addcmul_(kz, dz.unsqueeze(0))  # d lin / d s, per channel
        inv = m2
        torch.mul(d, d, out=inv).add_(_TINY)
        torch.div(d, inv, out=inv)  # 1 / d, and 0 (not infinite) where d is 0
        ahead = f  # minus the step to the bound ahead as lin moves: 0 when it falls, the top when it rises
        torch.mul(lin, inv, out=ahead)
        ahead.sub_(inv.clamp_(min=0.0), alpha=_LUT_SIZE - 1)
        delta = t
        torch.amax(ahead, dim=0, out=delta)
        delta.neg_()  # the nearest bound of the three channels
        bound = m[1]  # free now
        torch.neg(s, out=bound)
        delta.clamp_(min=bound)  # chroma never below 0 ...
        bound.add_(1.0)
        delta.clamp_(max=bound)  # ... nor above the prediction's
        lin.addcmul_(d, delta.unsqueeze(0))
        # bisected later: a long step (the linear guess may be off), or a start outside the gamut
        # (a ray that leaves it through a face and comes back in: the first exit is the answer)
        delta.abs_().mul_(norm).mul_(curved).div_(_LONG_STEP).add_(outside.div_(_OUTSIDE))
        if float(delta.amax()) > 1.0:
            hard = torch.nonzero(delta > 1.0).squeeze(1)
            pending.append((hard, l[hard], a[hard], b[hard]))
    # 4. linear RGB -> 8-bit sRGB by lookup (lin is already scaled to the lookup's size), pixel-interleaved
    lin.clamp_(0.0, _LUT_SIZE - 1)
    codes = ws.index[: 3 * n]
    codes.view(n, 3).copy_(lin.t())
    torch.index_select(lut, 0, codes, out=out)


def _compiled():
    """``colorizer.render_kernel``, imported on first use (numba takes a few tenths of a
    second to import), or None where numba is missing or broken (it pins the numpy versions
    it supports) or cannot cache its compiled code (no writable folder: a RuntimeError at
    import): then the torch path renders, with one warning."""
    def load():
        try:
            return importlib.import_module("colorizer.render_kernel")
        except Exception as e:  # noqa: BLE001 - missing, broken, or no place to cache its compiled code
            from colorizer.errors import first_line

            # stacklevel: load, _once, _compiled, render, then render's caller
            warnings.warn(f"numba is not usable ({first_line(e)}); colorizing on the CPU takes the slower torch path",
                          stacklevel=5)
            return None

    return _once("kernel", load)


def _render_compiled(pixels: np.ndarray, lightness: Lightness, alpha: np.ndarray | None, across: torch.Tensor,
                     down: torch.Tensor, y0: list[int], wy: torch.Tensor) -> None:
    """The CPU path: ``render_kernel`` on bands of rows, one per torch thread (it releases
    the GIL), into ``pixels``; the same arithmetic as ``_to_srgb8``, once per pixel."""
    height = pixels.shape[0]
    kernel = _compiled()
    dummy_u8, dummy_f = np.zeros((1, 1), dtype=np.uint8), np.zeros((1, 1), dtype=np.float32)
    by_level = lightness.levels is not None
    picture = kernel.Picture(
        alpha=dummy_u8 if alpha is None else np.ascontiguousarray(alpha),
        by_level=by_level,
        levels=np.ascontiguousarray(lightness.levels) if by_level else dummy_u8,
        lightness=dummy_f if by_level else np.ascontiguousarray(lightness.l[0, 0].float().cpu().numpy()),
        across=across.contiguous().numpy(),
        down=down.contiguous().numpy(),
        y0=np.asarray(y0, dtype=np.int64),
        wy=wy.float().contiguous().numpy(),
    )
    tables = _once("kernel tables", lambda: _kernel_tables(kernel))
    f32 = np.float32
    steps = kernel.Steps(slope=f32(_SLOPE), c=f32(_C), tiny=f32(_TINY), long_step=f32(_LONG_STEP),
                         outside_step=f32(_OUTSIDE), bisection_steps=_BISECTION_STEPS)
    bands = max(1, min(torch.get_num_threads(), height // 16))
    edges = [height * i // bands for i in range(bands + 1)]
    # this thread does the first band; the others go to one pool for the process, so that renders
    # running at once (an app's requests) share its threads rather than each starting their own
    draw = kernel.render_rows
    others = [_band_pool().submit(draw, pixels, picture, tables, steps, edges[i], edges[i + 1]) for i in range(1, bands)]
    draw(pixels, picture, tables, steps, edges[0], edges[1])
    for done in others:
        done.result()


def _kernel_tables(kernel):
    """``render_kernel.Tables``: the tables and matrices ``render`` uses, as numpy arrays."""
    m = _lookup_matrix()
    return kernel.Tables(
        level_l=_level_tables("cpu")[0].numpy(), gamut=_table("gamut", torch.device("cpu")).numpy(), rows=GAMUT_ROWS,
        cols=GAMUT_COLS, lut=_table("srgb", torch.device("cpu")).numpy(), matrix=m.float().numpy(),
        kx=(3.0 * m[:, 0]).float().numpy(), kz=(3.0 * m[:, 2]).float().numpy(), to_rgb=_xyz_matrix().numpy(),
    )


def _band_pool() -> ThreadPoolExecutor:
    """The process's threads for the compiled kernel's bands (one per core, made on first use)."""
    return _once("pool", lambda: ThreadPoolExecutor(max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="render"))


def render(lightness: Lightness | torch.Tensor, ab: torch.Tensor, alpha: np.ndarray | None = None,
           strip_pixels: int = STRIP_PIXELS) -> Image.Image:
    """Full-resolution L (a ``Lightness``, or L as ``(1, 1, H, W)``) + low-resolution ab
    ``(1, 2, h, w)`` -> an 8-bit sRGB PIL image, chroma shrunk where a colour would leave
    the gamut so the output keeps the input's L. RGBA when there is an alpha (``alpha``,
    ``(H, W)`` uint8, or the ``Lightness``'s own)."""
    if isinstance(lightness, torch.Tensor):
        if lightness.dim() != 4 or lightness.shape[:2] != (1, 1):
            raise ValueError(f"render: expected L of shape (1, 1, H, W), got {tuple(lightness.shape)}")
        device = lightness.device
        lightness = Lightness(l=lightness.float())
    else:
        device = ab.device
    if ab.dim() != 4 or ab.shape[:2] != (1, 2):
        raise ValueError(f"render: expected ab of shape (1, 2, h, w), got {tuple(ab.shape)}")
    alpha = lightness.alpha if alpha is None else alpha
    width, height = lightness.size
    if alpha is not None and (alpha.shape != (height, width) or alpha.dtype != np.uint8):
        raise ValueError(f"render: expected a uint8 alpha of shape {(height, width)}, got {alpha.dtype} {alpha.shape}")
    h, w = ab.shape[-2:]
    gamut, lut = _table("gamut", device), _table("srgb", device)
    m = _lookup_matrix()
    matrix = m.tolist()
    kx, kz = (3.0 * m[:, 0:1]).float().to(device), (3.0 * m[:, 2:3]).float().to(device)

    # horizontal pass once, at the network's rows, in the scaled space (a / 500, -b / 200)
    scaled = ab[0].to(device=device, dtype=torch.float64) * torch.tensor(
        [1 / 500.0, -1 / 200.0], dtype=torch.float64, device=device).view(2, 1, 1)
    # NaN (a broken model) to gray and infinities far outside any colour, so no table is read outside
    scaled = torch.nan_to_num(scaled, nan=0.0).clamp_(-4.0, 4.0)
    x0, wx = _upsample_plan(w, width)
    x0t = torch.tensor(x0, device=device)
    x1t = (x0t + 1).clamp(max=w - 1)
    across = torch.lerp(scaled[:, :, x0t], scaled[:, :, x1t], wx.to(device, torch.float64)).float()  # (2, h, W)
    down = torch.zeros_like(across)
    down[:, :-1] = across[:, 1:] - across[:, :-1]  # to the next row (0 after the last, as F.interpolate)
    y0, wy = _upsample_plan(h, height)
    wy = wy.to(device)

    mode = "RGB" if alpha is None else "RGBA"
    channels = len(mode)
    # the output, pixel-interleaved, filled a strip at a time; PIL copies it once at the end
    pixels = np.empty((height, width, channels), dtype=np.uint8)
    if device.type == "cpu" and KERNEL and _compiled() is not None:
        _render_compiled(pixels, lightness, alpha, across, down, y0, wy)
        return Image.fromarray(pixels)
    flat = torch.from_numpy(pixels).view(-1, channels)
    rows = max(1, min(height, strip_pixels // width))

    ws = _workspace(rows * width, device)
    direct = channels == 3 and device.type == "cpu"  # the lookup writes straight into the output
    hard: list = []
    for top in range(0, height, rows):
        count = min(height, top + rows) - top
        n = count * width
        strip = ws.ab[:, :n].view(2, count, width)
        start = 0
        while start < count:  # the vertical pass: rows sharing a source row in one operation
            j, end = y0[top + start], start + 1
            while end < count and y0[top + end] == j:
                end += 1
            torch.addcmul(across[:, j : j + 1], down[:, j : j + 1], wy[top + start : top + end].view(1, -1, 1),
                          out=strip[:, start:end])
            start = end
        l = lightness.rows(top, count, device)
        if lightness.levels is None:  # (gray levels are in range already) NaN to 0, the rest into [0, 100]
            l = torch.nan_to_num(l, nan=0.0).clamp_(0.0, 100.0)
        pending: list = []
        here = flat[top * width : top * width + n]
        out = here.view(-1) if direct else ws.out[: 3 * n]
        _to_srgb8(l, ws, n, matrix, kx, kz, gamut, lut, out, pending)
        if not direct:
            here[:, :3] = out.view(n, 3).cpu()
        if alpha is not None:
            here[:, 3] = torch.from_numpy(np.ascontiguousarray(alpha[top : top + count])).view(-1)
        hard += [(top * width + index, *rest) for index, *rest in pending]
    if hard:  # the pixels the Newton step could not settle (a few in 1000): bisected
        index, l, a, b = (torch.cat(x) for x in zip(*hard))
        lab = torch.stack([l, a * 500.0, b * -200.0]).double()[:, :, None]  # (3, N, 1)
        srgb = lab_to_rgb_in_gamut(lab, steps=_BISECTION_STEPS)[:, :, 0]
        flat[index.cpu(), :3] = (srgb * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).T.cpu()
    return Image.fromarray(pixels)  # RGB, or RGBA with the alpha
