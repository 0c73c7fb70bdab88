"""The fast full-resolution renderer against the plain reference of colorizer.color."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

import colorizer.render
from colorizer import Colorizer
from colorizer.color import lab_to_rgb, lab_to_rgb_in_gamut
from colorizer.images import Lightness, read_image, split_lightness
from colorizer.render import _directions, gamut_table, render


def _reference(lightness: torch.Tensor, ab: torch.Tensor, steps: int, tolerance: float | None = None) -> np.ndarray:
    """What ``compose`` did before the renderer: F.interpolate, then bisection of the
    chroma (``steps`` halvings; 8 was the default; ``lab_to_rgb_in_gamut``'s own test of
    the gamut, or one that lets a channel out by ``tolerance``), then rounding."""
    h, w = lightness.shape[-2:]
    ab_full = F.interpolate(ab.float(), size=(h, w), mode="bilinear", align_corners=False).double()
    lab = torch.cat([lightness.double(), ab_full], dim=1)
    if tolerance is None:
        rgb = lab_to_rgb_in_gamut(lab, steps)
    else:
        lo, hi = torch.zeros(1, 1, h, w, dtype=torch.float64), torch.ones(1, 1, h, w, dtype=torch.float64)
        for _ in range(steps):
            mid = (lo + hi) / 2
            trial = lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] * mid], dim=1), clip=False)
            ok = ((trial >= -tolerance) & (trial <= 1 + tolerance)).all(dim=1, keepdim=True)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        rgb = lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] * lo], dim=1))
    return (rgb[0] * 255.0 + 0.5).floor().permute(1, 2, 0).numpy().astype(int)


@pytest.fixture(scope="module")
def model():
    return Colorizer.from_pretrained("default")


@pytest.fixture(params=["compiled", "torch"])
def path(request, monkeypatch):
    """Both CPU paths of ``render``: the compiled kernel (numba) and the torch operations."""
    if request.param == "compiled":
        assert colorizer.render._compiled() is not None, "numba is a requirement: the compiled path must be there"
    monkeypatch.setattr(colorizer.render, "KERNEL", request.param == "compiled")
    return request.param


def _both_paths(lightness, ab, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    assert colorizer.render._compiled() is not None
    monkeypatch.setattr(colorizer.render, "KERNEL", True)
    compiled = np.asarray(render(lightness, ab)).astype(int)
    monkeypatch.setattr(colorizer.render, "KERNEL", False)
    return compiled, np.asarray(render(lightness, ab)).astype(int)


@pytest.mark.parametrize("photo", [data.coffee, data.chelsea, data.rocket])
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_render_matches_the_exact_gamut_clip_within_one_level(model, photo, temperature, monkeypatch):
    """Both CPU paths (compiled and torch) against the bisection of the chroma."""
    lightness = split_lightness(read_image(np.asarray(Image.fromarray(photo()).convert("L"))))
    pred = model.analyze(photo())
    ab = pred.ab(temperature)
    exact, today = _reference(lightness.l, ab, 30), _reference(lightness.l, ab, 8)
    for ours in _both_paths(lightness.l, ab, monkeypatch):
        assert np.abs(ours - exact).max() <= 1
        # the old 8-step bisection was itself up to a few levels off the exact clip; never further than that + 1
        assert (np.abs(ours - today) <= np.abs(today - exact) + 1).all()
        assert (np.abs(ours - exact) > 0).mean() < 0.01  # and nearly everywhere the very same levels


def test_render_saturated_and_extreme_lightness(monkeypatch):
    """L from black to white under ab of every hue up to the model's range (chroma 110):
    where the renderer's Newton step has the most to do (every pixel clipped at the ends).

    Near the yellow corner of the gamut (L 90-98, b about 100) a ray from gray can leave
    the gamut through R = 1 by less than 0.003 and come back in: the bisection stops at the
    first exit, the renderer may go on to the second (B = 0), and both are in the gamut to
    within 0.003; there the renderer must match one of the two."""
    h, w = 200, 400
    lightness = torch.linspace(0, 100, w).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    angle, chroma = torch.linspace(0, 2 * np.pi, 50)[:, None], torch.linspace(10, 110, 40)
    ab = torch.stack([torch.cos(angle) * chroma, torch.sin(angle) * chroma])[None]  # (1, 2, 50, 40)
    first_exit, grazing = _reference(lightness, ab, 30), _reference(lightness, ab, 30, tolerance=3e-3)
    for ours in _both_paths(lightness, ab, monkeypatch):
        off = np.minimum(np.abs(ours - first_exit).max(-1), np.abs(ours - grazing).max(-1))
        assert off.max() <= 1
        assert (np.abs(ours - first_exit).max(-1) > 1).mean() < 1e-3
        assert (ours[:, 0] == 0).all() and (ours[:, -1] == 255).all()  # L = 0 black, L = 100 white, whatever ab


def _in_gamut(lightness: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether (L, A = a/500, B = -b/200) is in the sRGB gamut, as ``clip_chroma`` decides it."""
    rgb = lab_to_rgb(torch.stack([lightness, a * 500.0, b * -200.0]), clip=False)
    return ((rgb >= -1e-6) & (rgb <= 1 + 1e-6)).all(dim=0)


def test_gamut_table_is_the_boundary():
    rows, cols = 32, 64
    table = gamut_table(rows, cols)
    lightness = torch.linspace(0, 100, rows, dtype=torch.float64)[:, None].expand(rows, cols + 1)
    a, b = (d[None].expand(rows, cols + 1) for d in _directions(cols))
    assert _in_gamut(lightness, a * table, b * table)[:-1].all()  # (L = 100: white itself is at the edge)
    beyond = _in_gamut(lightness, a * (table + 1e-4), b * (table + 1e-4))
    assert beyond.float().mean() < 0.01  # out just beyond, but where a ray grazes R = 1 and comes back in
    assert torch.allclose(table[:, 0], table[:, -1])  # the last direction is the first again


def test_gray_levels_render_like_float_lightness(model, path):
    gray = np.asarray(Image.fromarray(data.astronaut()).convert("L").resize((333, 250)))
    lightness = split_lightness(read_image(gray))
    assert lightness.levels is not None
    floats = Lightness(l=lightness.l.clone())
    assert torch.equal(model.network_input(lightness), model.network_input(floats))
    ab = model.analyze(gray).ab()
    assert np.array_equal(np.asarray(render(lightness, ab)), np.asarray(render(floats, ab)))


def test_strips_and_alpha(model, path):
    rgba = np.dstack([data.coffee(), np.linspace(0, 255, 600, dtype=np.uint8)[None].repeat(400, 0)])
    pred = model.analyze(rgba)
    whole = render(pred.lightness, pred.ab())
    assert whole.mode == "RGBA" and np.array_equal(np.asarray(whole)[..., 3], rgba[..., 3])
    thin = render(pred.lightness, pred.ab(), strip_pixels=1000)  # 1 row a strip
    assert np.array_equal(np.asarray(thin), np.asarray(whole))
    assert np.array_equal(np.asarray(pred.render()), np.asarray(whole))


def test_compiled_and_torch_paths_agree(model, monkeypatch):
    """The two CPU paths, on gray levels, on float L (a colour photo) and with alpha: the
    same levels but for float rounding, a few pixels in 100000 one level apart."""
    rgb = data.coffee()
    rgba = np.dstack([rgb, np.linspace(0, 255, rgb.shape[1], dtype=np.uint8)[None].repeat(rgb.shape[0], 0)])
    for image in (np.asarray(Image.fromarray(rgb).convert("L")), rgb, rgba):
        pred = model.analyze(image)
        for temperature in (1.0, 0.0):
            compiled, plain = _both_paths(pred.lightness, pred.ab(temperature), monkeypatch)
            assert compiled.shape == plain.shape == (*rgb.shape[:2], image.shape[-1] if image.ndim == 3 else 3)
            assert np.abs(compiled - plain).max() <= 1
            assert (compiled != plain).mean() < 1e-3


def test_compiled_bands_make_one_image(model, monkeypatch):
    """Bands of rows in threads (one per torch thread) give what one band gives, to the bit,
    also where the rows do not split evenly (301 rows in 4 bands)."""
    assert colorizer.render._compiled() is not None
    pred = model.analyze(np.asarray(Image.fromarray(data.chelsea()).resize((451, 301))))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = np.asarray(pred.render())
        torch.set_num_threads(4)
        four = np.asarray(pred.render())
    finally:
        torch.set_num_threads(threads)
    assert one.shape == (301, 451, 3) and np.array_equal(one, four)
    monkeypatch.setattr(colorizer.render, "KERNEL", False)
    assert np.abs(np.asarray(pred.render()).astype(int) - one).max() <= 1


def test_compiled_renders_at_once_share_the_band_threads(model):
    """Renders running at once (an app's requests, each in its own thread) give what each
    gives alone; their bands share one pool of threads."""
    from concurrent.futures import ThreadPoolExecutor

    preds = [model.analyze(photo()) for photo in (data.coffee, data.chelsea, data.rocket)]
    alone = [np.asarray(p.render()) for p in preds]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with ThreadPoolExecutor(3) as requests:
            together = list(requests.map(lambda p: np.asarray(p.render()), preds * 2))
    finally:
        torch.set_num_threads(threads)
    for i, image in enumerate(together):
        # the same pixels: a band drawn by another thread may round a rare pixel the other way (the
        # kernel's fastmath loops vectorize by where a row buffer lands), never more than one level
        diff = np.abs(image.astype(int) - alone[i % 3])
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_render_of_non_finite_numbers_is_an_image(path):
    """NaN or infinite ab (a broken model) renders gray there and never reads outside a
    table (the compiled passes assume finite numbers); nothing crashes."""
    lightness = torch.linspace(0, 100, 64).view(1, 1, 1, 64).expand(1, 1, 48, 64).contiguous()
    ab = torch.full((1, 2, 12, 16), 20.0)
    ab[0, :, :6] = float("nan")
    ab[0, 1, 6:, :8] = float("inf")
    ab[0, 1, 6:, 8:] = -float("inf")
    out = np.asarray(render(lightness, ab))
    assert out.shape == (48, 64, 3)
    gray = np.asarray(render(lightness, torch.zeros(1, 2, 12, 16)))
    assert np.abs(out[:20].astype(int) - gray[:20]).max() <= 1  # NaN a and b: gray, L kept
    # infinite b: the most saturated yellow (b = +inf, left) and blue (b = -inf, right) the gamut has at each L
    left, right = out[30:, 8:24].astype(int), out[30:, 40:56].astype(int)
    assert (left[..., 0] >= left[..., 2]).all() and (right[..., 2] >= right[..., 0]).all()


def test_render_of_non_finite_or_out_of_range_lightness(path):
    """NaN L (a tensor given to render) is 0 and L beyond [0, 100] is clamped, on both paths:
    black and white whatever ab, never a read outside a table."""
    lightness = torch.full((1, 1, 8, 10), 50.0)
    lightness[..., :2] = float("nan")
    lightness[..., 2:4] = float("inf")
    lightness[..., 4:6] = -float("inf")
    lightness[..., 6:8] = 250.0
    out = np.asarray(render(lightness, torch.full((1, 2, 2, 2), 30.0)))
    assert (out[:, :2] == 0).all() and (out[:, 4:6] == 0).all()
    assert (out[:, 2:4] == 255).all() and (out[:, 6:8] == 255).all()
    assert (out[:, 8:, 0] > out[:, 8:, 2]).all()  # L 50 with a warm ab: a colour


def test_render_refuses_a_wrong_alpha_or_levels():
    with pytest.raises(ValueError, match="render: expected a uint8 alpha of shape"):
        render(torch.full((1, 1, 4, 6), 50.0), torch.zeros(1, 2, 1, 1), alpha=np.zeros((1, 1), np.uint8))
    with pytest.raises(ValueError, match="Lightness: levels must be"):
        Lightness(levels=np.full((4, 6), 300, dtype=np.int64))


def test_without_numba_the_torch_path_renders(model, monkeypatch):
    """Where numba cannot be imported (missing, or pinned to other numpy versions), one
    warning and the torch path."""
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.delitem(sys.modules, "colorizer.render_kernel", raising=False)
    monkeypatch.setattr(colorizer.render, "_made", {})  # no kernel loaded yet
    pred = model.analyze(data.coffee())
    with pytest.warns(UserWarning, match="numba is not usable.*torch path"):
        out = np.asarray(pred.render()).astype(int)
    monkeypatch.setattr(colorizer.render, "KERNEL", False)
    assert np.array_equal(out, np.asarray(pred.render()))


def test_render_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="render"):
        render(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 1, 1))
    with pytest.raises(ValueError, match="render"):
        render(torch.zeros(1, 1, 4, 4), torch.zeros(2, 1, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_render_on_cuda_matches_cpu(model):
    pred = model.analyze(data.coffee())
    cpu = np.asarray(render(pred.lightness.l, pred.ab()))
    gpu = np.asarray(render(pred.lightness.l.cuda(), pred.ab().cuda()))
    assert np.abs(cpu.astype(int) - gpu).max() <= 1


def test_tiny_temperatures_render_the_mode_on_both_paths(model, monkeypatch):
    """The ab of T = 1e-40 or 5e-324 (once NaN, rendered gray) renders as T = 0's on the
    compiled and the torch path."""
    photo = data.coffee()[::2, ::2]
    lightness = split_lightness(read_image(photo))
    pred = model.analyze(photo)
    modes = _both_paths(lightness.l, pred.ab(0.0), monkeypatch)
    assert np.abs(modes[0] - modes[1]).max() <= 1
    for t in (1e-40, 5e-324):
        for ours, mode in zip(_both_paths(lightness.l, pred.ab(t), monkeypatch), modes):
            assert np.array_equal(ours, mode), t
