"""sRGB <-> CIE Lab (D65, 2 degree observer) in torch.

Batched, device-agnostic and differentiable; the constants are those of
``skimage.color.rgb2lab`` / ``lab2rgb`` so that results agree with scikit-image to
within 1e-3. Channels come first: tensors are ``(*, 3, H, W)``.

Ranges: sRGB in [0, 1] (float) or [0, 255] (uint8); L in [0, 100]; a and b roughly
in [-110, 110] for colours inside the sRGB gamut.
"""

from __future__ import annotations

import torch

__all__ = ["rgb_to_lab", "lab_to_rgb", "lab_to_rgb_in_gamut", "srgb_from_linear", "rgb_to_l", "y_to_l", "clip_chroma", "rgb_to_yuv",
           "yuv_to_rgb", "WHITE_D65"]

# Linear sRGB -> XYZ, as in skimage.color.colorconv.xyz_from_rgb.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
WHITE_D65 = (0.95047, 1.0, 1.08883)
# sRGB (gamma-encoded, [0, 1]) -> YUV of BT.601, as in skimage.color.colorconv.yuv_from_rgb.
_YUV_FROM_RGB = (
    (0.299, 0.587, 0.114),
    (-0.14714119, -0.28886916, 0.43601035),
    (0.61497538, -0.51496512, -0.10001026),
)
_EPS = 0.008856  # (6/29)^3, the CIE threshold of the cube-root segment
_KAPPA = 7.787  # slope of the linear segment, as skimage writes it
_T0 = 16.0 / 116.0
_F_KNEE = 0.2068966  # 6/29: f above it is on the cube segment of f^-1
# the sRGB transfer curve (IEC 61966-2-1): code = (1 + A) linear^(1/GAMMA) - A above the knee, SLOPE x linear below.
# colorizer.render_kernel compiles these (and the constants above) into numba's on-disk cache, which only
# notices changes to render_kernel.py: after changing one here, touch that file.
_SRGB_KNEE = 0.0031308  # linear values above it are on the sRGB power segment
_SRGB_CODE_KNEE = 0.04045  # the same knee in code values (SLOPE x _SRGB_KNEE, as the standard rounds it)
_SRGB_A = 0.055
_SRGB_GAMMA = 2.4
_SRGB_SLOPE = 12.92


def _check_channels(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected (*, 3, H, W), got {tuple(x.shape)}")


def _matrix(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    m = torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(device=x.device, dtype=x.dtype)


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multiply each pixel's channel vector by ``m``: (3, 3) x (*, 3, H, W), in the
    input's precision even under autocast (bf16 would cost about 0.5 in L)."""
    with torch.autocast(x.device.type, enabled=False):
        return torch.einsum("ij,...jhw->...ihw", m, x)


def _as_float_rgb(rgb: torch.Tensor) -> torch.Tensor:
    if rgb.dtype == torch.uint8:
        return rgb.float() / 255.0
    if not rgb.is_floating_point():
        raise TypeError(f"rgb_to_lab: expected uint8 or a float dtype, got {rgb.dtype}")
    return rgb


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB companding undone (IEC 61966-2-1): float sRGB in [0, 1] -> linear RGB; the
    clamp keeps pow's gradient finite."""
    knee = _SRGB_CODE_KNEE
    power = ((rgb.clamp(min=knee) + _SRGB_A) / (1.0 + _SRGB_A)) ** _SRGB_GAMMA
    return torch.where(rgb > knee, power, rgb / _SRGB_SLOPE)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert sRGB to CIE Lab.

    Args:
        rgb: ``(*, 3, H, W)``, uint8 in [0, 255] or float in [0, 1].
    Returns:
        ``(*, 3, H, W)`` float Lab: L in [0, 100], a and b in about [-110, 110].
    """
    _check_channels(rgb, "rgb_to_lab")
    rgb = _as_float_rgb(rgb)
    linear = _srgb_to_linear(rgb)
    xyz = _apply_matrix(_matrix(rgb, inverse=False), linear)  # (*, 3, H, W)
    white = torch.tensor(WHITE_D65, device=rgb.device, dtype=rgb.dtype).view(3, 1, 1)
    t = xyz / white
    f = torch.where(t > _EPS, t.clamp(min=_EPS) ** (1.0 / 3.0), _KAPPA * t + _T0)
    fx, fy, fz = f.unbind(-3)
    lightness = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return torch.stack([lightness, a, b], dim=-3)


def lab_to_rgb(lab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """Convert CIE Lab to sRGB, clipped to the gamut.

    Args:
        lab: ``(*, 3, H, W)`` float, L in [0, 100], a and b in about [-110, 110].
        clip: clip to [0, 1]; ``False`` shows how far out of gamut a colour is.
    Returns:
        ``(*, 3, H, W)`` float sRGB in [0, 1] (or beyond, unclipped).
    """
    _check_channels(lab, "lab_to_rgb")
    if not lab.is_floating_point():
        raise TypeError(f"lab_to_rgb: expected a float dtype, got {lab.dtype}")
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp(min=0.0)  # skimage clips negative z the same way
    f = torch.stack([fx, fy, fz], dim=-3)
    t = torch.where(f > _F_KNEE, f.clamp(min=_F_KNEE) ** 3, (f - _T0) / _KAPPA)
    white = torch.tensor(WHITE_D65, device=lab.device, dtype=lab.dtype).view(3, 1, 1)
    linear = _apply_matrix(_matrix(lab, inverse=True), t * white)
    rgb = srgb_from_linear(linear)
    return rgb.clamp(0.0, 1.0) if clip else rgb


def srgb_from_linear(linear: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer function: linear RGB -> gamma-encoded sRGB, elementwise, unclipped."""
    return torch.where(
        linear > _SRGB_KNEE,
        (1.0 + _SRGB_A) * linear.clamp(min=_SRGB_KNEE) ** (1.0 / _SRGB_GAMMA) - _SRGB_A,
        _SRGB_SLOPE * linear,
    )


def rgb_to_yuv(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB -> YUV (BT.601 on the gamma-encoded values, as skimage's ``rgb2yuv``): Y in
    [0, 1], U in about [-0.436, 0.436], V in about [-0.615, 0.615].

    Args:
        rgb: ``(*, 3, H, W)``, uint8 in [0, 255] or float in [0, 1].
    """
    _check_channels(rgb, "rgb_to_yuv")
    rgb = _as_float_rgb(rgb)
    return _apply_matrix(torch.tensor(_YUV_FROM_RGB, dtype=torch.float64).to(rgb.device, rgb.dtype), rgb)


def yuv_to_rgb(yuv: torch.Tensor) -> torch.Tensor:
    """YUV (BT.601) -> sRGB, not clipped: ``(*, 3, H, W)`` float."""
    _check_channels(yuv, "yuv_to_rgb")
    m = torch.linalg.inv(torch.tensor(_YUV_FROM_RGB, dtype=torch.float64))
    return _apply_matrix(m.to(yuv.device, yuv.dtype), yuv)


def rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """Lightness alone, without computing a and b (cheaper on large photos).

    Args:
        rgb: ``(*, 3, H, W)``, uint8 in [0, 255] or float in [0, 1].
    Returns:
        ``(*, 1, H, W)`` float L in [0, 100].
    """
    _check_channels(rgb, "rgb_to_l")
    rgb = _as_float_rgb(rgb)
    linear = _srgb_to_linear(rgb)
    row = _matrix(rgb, inverse=False)[1:2]  # Y only; white Y is 1
    return y_to_l(_apply_matrix(row, linear))  # (*, 1, H, W)


def y_to_l(y: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y (white 1) -> CIE L in [0, 100], any shape."""
    fy = torch.where(y > _EPS, y.clamp(min=_EPS) ** (1.0 / 3.0), _KAPPA * y + _T0)
    return 116.0 * fy - 16.0


def _shrink_chroma(pixels: torch.Tensor, steps: int) -> torch.Tensor:
    """``(N, 3)`` Lab pixels -> the same L and hue with the largest in-gamut chroma
    factor found by bisection (the lower bound, so the result is always in gamut)."""
    lo = torch.zeros(len(pixels), 1, device=pixels.device, dtype=pixels.dtype)
    hi = torch.ones_like(lo)
    for _ in range(steps):
        mid = (lo + hi) / 2
        trial = torch.cat([pixels[:, :1], pixels[:, 1:] * mid], dim=1)  # (N, 3)
        rgb = lab_to_rgb(trial.T[:, :, None], clip=False)[:, :, 0].T  # (N, 3)
        ok = ((rgb >= -1e-6) & (rgb <= 1 + 1e-6)).all(dim=1, keepdim=True)
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    return torch.cat([pixels[:, :1], pixels[:, 1:] * lo], dim=1)


def _out_of_gamut(rgb: torch.Tensor) -> torch.Tensor:
    return ((rgb < -1e-6) | (rgb > 1 + 1e-6)).any(dim=-3)  # (*, H, W)


def clip_chroma(lab: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """Bring Lab colours into the sRGB gamut by shrinking chroma, keeping L and hue.

    Out-of-gamut pixels get (L, s a, s b) with the largest s in [0, 1] that is in
    gamut (bisection, ``steps`` halvings: within 2^-steps of the best s), so the
    lightness of a colorized photo stays exactly the input's, where plain RGB
    clipping would change it.

    Args:
        lab: ``(*, 3, H, W)`` float with L in [0, 100].
    Returns:
        ``(*, 3, H, W)`` Lab inside the gamut.
    """
    _check_channels(lab, "clip_chroma")
    out = _out_of_gamut(lab_to_rgb(lab, clip=False))
    if not out.any():
        return lab
    result = lab.movedim(-3, -1).clone()  # (*, H, W, 3)
    result[out] = _shrink_chroma(result[out], steps)
    return result.movedim(-1, -3)


def lab_to_rgb_in_gamut(lab: torch.Tensor, steps: int = 8) -> torch.Tensor:
    """``lab_to_rgb(clip_chroma(lab))`` converting each pixel once: in-gamut pixels are
    converted directly and only the out-of-gamut ones are solved again.

    Args:
        lab: ``(*, 3, H, W)`` float with L in [0, 100].
    Returns:
        ``(*, 3, H, W)`` sRGB in [0, 1] whose L is the input's.
    """
    _check_channels(lab, "lab_to_rgb_in_gamut")
    rgb = lab_to_rgb(lab, clip=False)
    out = _out_of_gamut(rgb)
    if out.any():
        fixed = _shrink_chroma(lab.movedim(-3, -1)[out], steps)  # (N, 3)
        rgb = rgb.movedim(-3, -1).clone()
        rgb[out] = lab_to_rgb(fixed.T[:, :, None], clip=False)[:, :, 0].T
        rgb = rgb.movedim(-1, -3)
    return rgb.clamp(0.0, 1.0)
