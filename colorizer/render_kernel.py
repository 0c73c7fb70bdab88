"""The renderer's per-pixel work compiled (numba), for the CPU.

``colorizer.render`` does the full-resolution work as a few dozen torch operations on
strips of rows: right on a GPU, but on a CPU each operation is a dispatch and a pass
through memory, and at 12 MP they cost twice the network. Here the same arithmetic is
compiled and runs a row at a time, in a few passes over row buffers that stay in the
first-level cache and that the compiler vectorizes: the vertical half of the bilinear
upsampling, L from the gray level, the gamut table's chroma limit, Lab to linear RGB,
the Newton step to the binding channel, the sRGB lookup written straight into the
interleaved 8-bit output, and the bisection (float64, as
``colorizer.color.lab_to_rgb_in_gamut`` does it) of the few pixels that need it. It
compiles on first use (about 3 s, cached on disk by numba, so once per machine) and
releases the GIL, so ``render`` runs it on bands of rows in threads.

The arithmetic and its order are those of ``render._to_srgb8``, in float32, so both give
the same levels to within 1 (the tests check it against the torch path and against the
exact clip); the one difference is that the torch path skips the Newton step for a strip
where the table puts every pixel inside the gamut, and the kernel never does. Where numba cannot be imported, ``render`` uses the torch path.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from colorizer.color import _F_KNEE, _KAPPA, _SRGB_A, _SRGB_GAMMA, _SRGB_KNEE, _SRGB_SLOPE, _T0

__all__ = ["Picture", "Tables", "Steps", "render_rows"]


class Picture(NamedTuple):
    """What one render draws from (numpy arrays; the one of ``levels`` and ``lightness`` not
    used, and ``alpha`` when there is none, a (1, 1) dummy)."""

    alpha: np.ndarray  # (H, W) uint8, channel 3 of an RGBA ``out``
    by_level: bool  # L from ``Tables.level_l[levels]`` (an 8-bit gray photo), else from ``lightness``
    levels: np.ndarray  # (H, W) uint8
    lightness: np.ndarray  # (H, W) float32
    across: np.ndarray  # (2, h, W) float32 ab (A = a/500, B = -b/200) upsampled across
    down: np.ndarray  # (2, h, W) float32, its step to the next source row
    y0: np.ndarray  # (H,) int64, each output row's source row
    wy: np.ndarray  # (H,) float32, and its weight


class Tables(NamedTuple):
    """The renderer's tables and matrices, the same for every render."""

    level_l: np.ndarray  # (256,) float32, L of each gray level
    gamut: np.ndarray  # the gamut table, flattened: the largest chroma by lightness row and hue column
    rows: int
    cols: int
    lut: np.ndarray  # 8-bit sRGB by linear-RGB lookup code
    matrix: np.ndarray  # float32 (3, 3), linear RGB in lookup units from (fx^-1, fy^-1, fz^-1)
    kx: np.ndarray  # float32 (3,), 3 x its first column
    kz: np.ndarray  # float32 (3,), 3 x its last column
    to_rgb: np.ndarray  # float64 (3, 3), linear RGB from (X/Xw, Y, Z/Zw) (``render._xyz_matrix``), for the bisection


class Steps(NamedTuple):
    """The conversion's and the Newton step's constants, and when and how finely a pixel is
    bisected instead (``render``'s)."""

    slope: np.float32  # of the linear part of CIE's f^-1
    c: np.float32  # where f^-1 turns from linear to cubic
    tiny: np.float32  # keeps 1 / d finite where d is 0
    long_step: np.float32  # a Newton step longer than this is redone by bisection
    outside_step: np.float32  # so is one from a start further than this outside the gamut
    bisection_steps: int  # halvings of the chroma for a bisected pixel


def _render_rows(out, picture, tables, steps, top,
                 bottom):  # pragma: no cover - compiled by numba; run and checked through render()
    """Rows ``top`` .. ``bottom - 1`` of ``out`` ((H, W, 3 or 4) uint8) from a ``Picture``,
    with the renderer's ``Tables`` and ``Steps``.

    A row at a time, in passes over row buffers that the compiler vectorizes (no calls, no
    branches, no gathers in the arithmetic), then the scattered parts: the table and sRGB
    lookups and the bisection of the few pixels that need it."""
    p, t = picture, tables
    width = out.shape[1]
    channels = out.shape[2]
    f32 = np.float32
    a_row, b_row, l_row = np.empty(width, f32), np.empty(width, f32), np.empty(width, f32)
    norm, weight, lower, upper = np.empty(width, f32), np.empty(width, f32), np.empty(width, f32), np.empty(width, f32)
    hard = np.empty(width, f32)
    index = np.empty(width, np.int32)
    codes = np.empty((3, width), np.int32)
    for y in range(top, bottom):
        _upsampled_row(p.across, p.down, p.y0[y], p.wy[y], a_row, b_row)
        if p.by_level:
            for x in range(width):
                l_row[x] = t.level_l[p.levels[y, x]]
        else:
            for x in range(width):
                l_row[x] = p.lightness[y, x]
            _lightness_range(l_row)  # (ab was made finite by render)
        # 1. the table's chroma limit, s = min(1, r_max / r): where to look, the lookups, s
        _table_position(a_row, b_row, l_row, t.rows, t.cols, norm, weight, index)
        for x in range(width):
            lower[x] = t.gamut[index[x]]
            upper[x] = t.gamut[index[x] + t.cols + 1]
        # 2. and 3. Lab -> linear RGB at chroma s, and the Newton step
        _convert(a_row, b_row, l_row, norm, weight, lower, upper, t.matrix, t.kx, t.kz, f32(t.lut.shape[0] - 1), steps,
                 codes, hard)
        # 4. linear RGB -> 8-bit sRGB by lookup
        for x in range(width):
            out[y, x, 0] = t.lut[codes[0, x]]
            out[y, x, 1] = t.lut[codes[1, x]]
            out[y, x, 2] = t.lut[codes[2, x]]
        for x in range(width):  # the few whose step was long, or that started outside the gamut
            if hard[x] > 1.0:
                _bisect(out, y, x, l_row[x], a_row[x], b_row[x], t.to_rgb, steps.bisection_steps)
        if channels == 4:
            for x in range(width):
                out[y, x, 3] = p.alpha[y, x]


def _lightness_range(row):  # pragma: no cover - compiled by numba, without fastmath
    """L into [0, 100] and NaN to 0, as the torch path does, so that the fastmath passes,
    which assume finite numbers, never index outside their tables."""
    for x in range(row.shape[0]):
        v = row[x]
        row[x] = min(max(v, np.float32(0.0)), np.float32(100.0)) if v == v else np.float32(0.0)


def _upsampled_row(across, down, j, w, a_row, b_row):  # pragma: no cover - compiled by numba
    """The vertical half of the bilinear upsampling: source row ``j`` + ``w`` x its step."""
    for x in range(a_row.shape[0]):
        a_row[x] = across[0, j, x] + down[0, j, x] * w
        b_row[x] = across[1, j, x] + down[1, j, x] * w


def _table_position(a_row, b_row, l_row, rows, cols, norm, weight, index):  # pragma: no cover - compiled by numba
    """Where each pixel's lightness and hue fall in the gamut table: the row below L and the
    weight of the row above (linear in L), the nearest hue column; and |A| + |B|."""
    f32 = np.float32
    row_scale, row_max = f32((rows - 1) / 100.0), f32(rows - 1 - 1e-3)
    col_scale, col_offset, stride = f32(cols / 4.0), f32(cols / 2.0 + 0.5), f32(cols + 1)
    for x in range(a_row.shape[0]):
        a = a_row[x]
        b = b_row[x]
        n = max(abs(a) + abs(b), f32(1e-12))
        t = math.copysign(f32(1.0) - a / n, b)  # the hue direction, in [-2, 2]
        position = min(max(l_row[x] * row_scale, f32(0.0)), row_max)
        base = np.floor(position)
        weight[x] = position - base
        norm[x] = n
        index[x] = np.int32(base * stride + t * col_scale + col_offset)


def _convert(a_row, b_row, l_row, norm, weight, lower, upper, matrix, kx, kz, top_code, steps, codes,
             hard):  # pragma: no cover - compiled by numba
    """The chroma limit s from the table, Lab -> linear RGB (lookup units) at s, one Newton
    step along the chroma to the channel that binds; the lookup codes, and in ``hard`` a
    figure above 1 where the pixel must be bisected (a long step, or a start outside)."""
    f32 = np.float32
    zero, one = f32(0.0), f32(1.0)
    # every constant a scalar before the loop, so that the loop vectorizes
    m00, m01, m02 = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    m10, m11, m12 = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    m20, m21, m22 = matrix[2, 0], matrix[2, 1], matrix[2, 2]
    kx0, kx1, kx2, kz0, kz1, kz2 = kx[0], kx[1], kx[2], kz[0], kz[1], kz[2]
    slope, c, tiny, long_step, outside_step = steps.slope, steps.c, steps.tiny, steps.long_step, steps.outside_step
    for x in range(a_row.shape[0]):
        a = a_row[x]
        b = b_row[x]
        n = norm[x]
        s = min((lower[x] + (upper[x] - lower[x]) * weight[x]) / n, one)
        fy = (l_row[x] + f32(16.0)) * f32(1.0 / 116.0)
        fx = fy + a * s
        fz = max(fy + b * s, zero)
        mx = max(fx, c)
        my = max(fy, c)
        mz = max(fz, c)
        tx = (fx - mx) * slope + mx * mx * mx  # f^-1(f) = max(f, C)^3 + slope * min(f - C, 0)
        ty = (fy - my) * slope + my * my * my
        tz = (fz - mz) * slope + mz * mz * mz
        r = m00 * tx + m01 * ty + m02 * tz
        g = m10 * tx + m11 * ty + m12 * tz
        bl = m20 * tx + m21 * ty + m22 * tz
        curved = one if max(max(mx, my), mz) > c else zero  # on the cube somewhere: Newton is not exact
        outside = max(max(max(r, g), bl) - top_code, zero) - min(min(min(r, g), bl), zero)
        dx = mx * mx * a  # d t / d s for x and z (y does not move), the 3 in kx, kz
        dz = mz * mz * b
        dr = kx0 * dx + kz0 * dz
        dg = kx1 * dx + kz1 * dz
        db = kx2 * dx + kz2 * dz
        ir = dr / (dr * dr + tiny)  # 1 / d, and 0 where d is 0
        ig = dg / (dg * dg + tiny)
        ib = db / (db * db + tiny)
        # the nearest bound ahead of the three channels, the chroma kept in [0, the prediction's]
        ahead = max(max(r * ir - max(ir, zero) * top_code, g * ig - max(ig, zero) * top_code),
                    bl * ib - max(ib, zero) * top_code)
        delta = min(max(-ahead, -s), one - s)
        hard[x] = abs(delta) * n * curved / long_step + outside / outside_step
        codes[0, x] = np.int32(min(max(r + dr * delta, zero), top_code))
        codes[1, x] = np.int32(min(max(g + dg * delta, zero), top_code))
        codes[2, x] = np.int32(min(max(bl + db * delta, zero), top_code))


def _lab_to_rgb(l, a, b, to_rgb, rgb):  # pragma: no cover - compiled by numba
    """``colorizer.color.lab_to_rgb(clip=False)`` of one float64 pixel into ``rgb`` (3,), the
    white folded into ``to_rgb``; returns whether it is in the gamut as ``clip_chroma``
    decides it (within 1e-6)."""
    fy = (l + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = max(fy - b / 200.0, 0.0)
    t0 = fx ** 3 if fx > _F_KNEE else (fx - _T0) / _KAPPA
    t1 = fy ** 3 if fy > _F_KNEE else (fy - _T0) / _KAPPA
    t2 = fz ** 3 if fz > _F_KNEE else (fz - _T0) / _KAPPA
    inside = True
    for k in range(3):
        v = to_rgb[k, 0] * t0 + to_rgb[k, 1] * t1 + to_rgb[k, 2] * t2
        v = (1.0 + _SRGB_A) * max(v, _SRGB_KNEE) ** (1.0 / _SRGB_GAMMA) - _SRGB_A if v > _SRGB_KNEE else _SRGB_SLOPE * v
        rgb[k] = v
        if v < -1e-6 or v > 1.0 + 1e-6:
            inside = False
    return inside


def _bisect(out, y, x, l, a, b, to_rgb, halvings):  # pragma: no cover - compiled by numba
    """``lab_to_rgb_in_gamut`` of one pixel (L, A, B scaled) in float64, rounded into ``out``."""
    lab_l = np.float64(l)
    lab_a = np.float64(a * np.float32(500.0))
    lab_b = np.float64(b * np.float32(-200.0))
    rgb = np.empty(3)
    if not _lab_to_rgb(lab_l, lab_a, lab_b, to_rgb, rgb):
        lo, hi = 0.0, 1.0
        for _ in range(halvings):
            mid = (lo + hi) / 2
            if _lab_to_rgb(lab_l, lab_a * mid, lab_b * mid, to_rgb, rgb):
                lo = mid
            else:
                hi = mid
        _lab_to_rgb(lab_l, lab_a * lo, lab_b * lo, to_rgb, rgb)
    for k in range(3):
        out[y, x, k] = np.uint8(min(max(math.floor(min(max(rgb[k], 0.0), 1.0) * 255.0 + 0.5), 0.0), 255.0))


# fastmath lets the compiler vectorize the min/max of the passes (render makes ab finite,
# _lightness_range L); the numpy error model, divisions without checks. The range pass and the
# bisection must say fastmath=False: a function without the flag inherits its caller's, and "no
# NaNs" would fold the NaN test away, approximate powers move the bisection off lab_to_rgb's.
_jit = numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
_exact = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")
_lightness_range = _exact(_lightness_range)
_lab_to_rgb = _exact(_lab_to_rgb)
_bisect = _exact(_bisect)
_upsampled_row = _jit(_upsampled_row)
_table_position = _jit(_table_position)
_convert = _jit(_convert)
_render_rows = _jit(_render_rows)


render_rows = _render_rows  # compiled; see its docstring
