import math

import numpy as np
import pytest
import torch

from colorizer.bins import (
    AB_RANGE,
    UV_SCALE,
    rgb_to_chroma,
    PriorCounter,
    annealed_mean,
    annealed_probabilities,
    compute_gamut_bins,
    entropy,
    gamut_bins,
    nearest_bin,
    rebalance_weights,
    smooth_prior,
    soft_encode,
    to_dense,
)
from colorizer.color import rgb_to_lab


@pytest.fixture(scope="module")
def centres():
    return gamut_bins(10)


def _image_of(ab_values, h=1):
    """(1, 2, h, n) ab image from a list of (a, b)."""
    ab = torch.tensor(ab_values, dtype=torch.float32).T  # (2, n)
    return ab[None, :, None, :].expand(1, 2, h, ab.shape[1]).contiguous()


@pytest.mark.parametrize("grid,q", [(10, 261), (20, 77)])
def test_stored_bins_regenerate_identically(grid, q):
    stored = gamut_bins(grid)
    assert stored.shape == (q, 2)
    assert torch.equal(compute_gamut_bins(grid), stored)


def test_stored_uv_bins_regenerate_identically_and_hold_every_srgb_colour():
    """Champati et al.'s uv bins: the stored grid-20 set (Q = 81, their best Q) is what
    ``compute_gamut_bins`` derives, and every 8-bit colour's uv rounds to a kept centre."""
    stored = gamut_bins(20, space="yuv")
    assert stored.shape == (81, 2) and gamut_bins(10, space="yuv").shape == (283, 2)
    assert torch.equal(compute_gamut_bins(20, space="yuv"), stored)
    rng = np.random.default_rng(1)
    rgb = torch.from_numpy(rng.integers(0, 256, (1, 3, 64, 64), dtype=np.uint8)).float() / 255
    uv = rgb_to_chroma(rgb, "yuv")
    idx = nearest_bin(uv, stored)
    assert torch.equal(stored[idx].permute(0, 3, 1, 2), torch.round(uv / 20) * 20)
    assert uv.abs().max() <= AB_RANGE + 1e-4  # V's extent is stretched to the ab range


def test_rgb_to_chroma_matches_skimage():
    from skimage.color import rgb2lab, rgb2yuv

    rgb = np.random.default_rng(2).random((16, 16, 3))
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    np.testing.assert_allclose(rgb_to_chroma(t, "lab")[0].permute(1, 2, 0).numpy(), rgb2lab(rgb)[..., 1:], atol=1e-4)
    np.testing.assert_allclose(rgb_to_chroma(t, "yuv")[0].permute(1, 2, 0).numpy() / UV_SCALE,
                               rgb2yuv(rgb)[..., 1:], atol=1e-6)
    with pytest.raises(ValueError, match="chroma bins exist for lab and yuv"):
        gamut_bins(10, space="rgb")


def test_every_srgb_colour_falls_in_a_kept_bin(centres):
    rng = np.random.default_rng(0)
    rgb = torch.from_numpy(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8))
    ab = rgb_to_lab(rgb)[None, 1:]
    idx = nearest_bin(ab, centres)
    # the nearest kept centre is the grid cell the colour rounds to
    assert torch.equal(centres[idx].permute(0, 3, 1, 2), torch.round(ab / 10) * 10)


def test_grid_is_a_parameter():
    c = gamut_bins(16)
    assert 100 < len(c) < 140 and torch.all(c % 16 == 0)


def test_soft_encoding_sums_to_one_and_peaks_at_true_bin(centres):
    ab = _image_of([tuple(c) for c in centres[::7].tolist()], h=3)
    ab = ab + torch.rand_like(ab) * 4 - 2  # near, not on, the centres
    idx, w = soft_encode(ab, centres, k=5, sigma=5.0)
    assert idx.shape == w.shape == (1, 5, 3, ab.shape[-1])
    assert torch.allclose(w.sum(1), torch.ones(1, 3, ab.shape[-1]))
    dense = to_dense(idx, w, len(centres))
    assert torch.allclose(dense.sum(1), torch.ones(1, 3, ab.shape[-1]))
    assert torch.equal(dense.argmax(1), nearest_bin(ab, centres))
    assert torch.equal(idx[:, 0], nearest_bin(ab, centres))


def test_soft_encoding_gaussian_weights_by_hand(centres):
    ab = _image_of([(0.0, 0.0)])
    idx, w = soft_encode(ab, centres, k=5, sigma=5.0)
    # centre (0,0) at distance 0, four neighbours at distance 10: weights 1 and e^-2
    expected = torch.tensor([1.0] + [math.exp(-2.0)] * 4)
    expected /= expected.sum()
    assert torch.allclose(w[0, :, 0, 0], expected, atol=1e-6)
    got = {tuple(centres[i].tolist()) for i in idx[0, :, 0, 0]}
    assert got == {(0.0, 0.0), (10.0, 0.0), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0)}


def test_soft_encode_k_is_a_parameter_and_validated(centres):
    ab = torch.zeros(2, 2, 4, 4)
    assert soft_encode(ab, centres, k=10)[0].shape == (2, 10, 4, 4)
    with pytest.raises(ValueError, match="k must be"):
        soft_encode(ab, centres, k=0)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        soft_encode(torch.zeros(2, 3, 4, 4), centres)


def test_soft_encode_batch_of_paper_size_is_vectorised(centres):
    ab = torch.randn(4, 2, 64, 64) * 30
    idx, w = soft_encode(ab, centres, k=5)
    assert idx.dtype == torch.long and w.shape == (4, 5, 64, 64)


def test_decode_of_encoded_centres_gives_the_centres(centres):
    ab = _image_of([tuple(c) for c in centres.tolist()])
    idx, w = soft_encode(ab, centres, k=1)
    logits = torch.log(to_dense(idx, w, len(centres)).clamp(min=1e-30))
    assert torch.allclose(annealed_mean(logits, centres, 1.0), ab, atol=1e-4)


def test_prior_matches_hand_count(centres):
    counter = PriorCounter(centres)
    counter.update(_image_of([(0, 0), (0, 0), (0, 0), (31, -29)]))  # 3 x bin (0,0), 1 x bin (30,-30)
    p = counter.prior()
    assert counter.total == 4 and p.sum().item() == pytest.approx(1.0)
    i0 = int(((centres - torch.tensor([0.0, 0.0])).abs().sum(1) == 0).nonzero())
    i1 = int(((centres - torch.tensor([30.0, -30.0])).abs().sum(1) == 0).nonzero())
    assert p[i0] == pytest.approx(0.75) and p[i1] == pytest.approx(0.25)
    assert (p > 0).sum() == 2


def test_prior_mask_and_empty(centres):
    counter = PriorCounter(centres)
    with pytest.raises(ValueError, match="no pixels"):
        counter.prior()
    ab = _image_of([(0, 0), (50, 50)])
    counter.update(ab, mask=torch.tensor([[[True, False]]]))
    assert counter.total == 1


def test_smoothing_keeps_mass_and_spreads_it(centres):
    p = torch.zeros(len(centres), dtype=torch.float64)
    p[100] = 1.0
    s = smooth_prior(p, centres, sigma=5.0)
    assert s.sum().item() == pytest.approx(1.0)
    assert s[100] < 1.0 and s.argmax() == 100
    d = (centres - centres[100]).norm(dim=1)
    assert s[d == 10].min() > s[(d > 10) & (d < 15)].max() > s[d > 25].max()
    assert s[d > 25].max() < 1e-6
    assert torch.equal(smooth_prior(p, centres, sigma=0), p)


def test_rebalancing_expected_weight_is_one_and_rare_colours_count_more(centres):
    rng = torch.Generator().manual_seed(0)
    p = torch.rand(len(centres), generator=rng, dtype=torch.float64) ** 8
    p /= p.sum()
    w = rebalance_weights(p, centres, lam=0.5, sigma=5.0)
    ps = smooth_prior(p, centres, 5.0)
    assert (ps * w).sum().item() == pytest.approx(1.0)
    assert w[ps.argmin()] > w[ps.argmax()]
    uniform = torch.full((len(centres),), 1.0 / len(centres), dtype=torch.float64)
    assert torch.allclose(rebalance_weights(uniform, centres), torch.ones(len(centres), dtype=torch.float64))
    assert torch.allclose(rebalance_weights(p, centres, lam=1.0), torch.ones(len(centres), dtype=torch.float64))
    with pytest.raises(ValueError):
        rebalance_weights(p, centres, lam=1.5)


def test_annealed_mean_limits(centres):
    logits = torch.randn(2, len(centres), 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    logits.scatter_add_(1, logits.argmax(1, keepdim=True), torch.ones(2, 1, 3, 4))  # a clear mode: no near-ties
    mode = centres[logits.argmax(1)].permute(0, 3, 1, 2)
    assert torch.allclose(annealed_mean(logits, centres, 0.0), mode)
    assert torch.allclose(annealed_mean(logits, centres, 1e-4), mode, atol=1e-3)
    mean = torch.einsum("bqhw,qc->bchw", torch.softmax(logits, 1), centres)
    assert torch.allclose(annealed_mean(logits, centres, 1.0), mean, atol=1e-4)


def test_annealed_mean_stable_at_small_temperature(centres):
    logits = torch.randn(1, len(centres), 2, 2) * 1000
    out = annealed_mean(logits, centres, 0.01)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        annealed_mean(logits, centres, -1.0)


TINY_TEMPERATURES = [1e-30, float(np.finfo(np.float32).tiny), 1e-40, float(np.finfo(np.float32).smallest_subnormal),
                     1e-300, float(np.finfo(np.float64).tiny), 5e-324]


@pytest.mark.parametrize("temperature", TINY_TEMPERATURES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_annealed_mean_at_tiny_temperatures_is_the_mode(centres, temperature, dtype):
    """Any T in (0, tiny], down to the float32 and float64 extremes, decodes as the limit
    T -> 0 (the mode; tied logits share it equally), never NaN: 1e-40 once gave NaN for 97%
    of the pixels (logits / T overflowed to inf before the softmax)."""
    logits = (torch.randn(2, len(centres), 5, 6, generator=torch.Generator().manual_seed(1)) * 8).to(dtype)
    mode = centres[logits.float().argmax(1)].permute(0, 3, 1, 2)
    out = annealed_mean(logits, centres, temperature)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, annealed_mean(logits, centres, 0.0))
    torch.testing.assert_close(out, mode)
    tied = torch.zeros(1, len(centres), 1, 1)
    tied[0, :2] = 5.0  # two bins tie for the mode: the limit is their midpoint
    torch.testing.assert_close(annealed_mean(tied, centres, temperature)[0, :, 0, 0], centres[:2].mean(0))
    probs = annealed_probabilities(logits, temperature)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(1), torch.ones(1))


def test_entropy_bounds(centres):
    q = len(centres)
    uniform = torch.zeros(1, q, 1, 1)
    certain = torch.full((1, q, 1, 1), -1e4)
    certain[0, 5] = 0
    assert entropy(uniform).item() == pytest.approx(1.0)
    assert entropy(certain).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.01, 1.01, 2, "0.3", None, True])
def test_one_temperature_rule_refuses_what_is_not_a_finite_number_in_0_1(bad):
    from colorizer.bins import check_temperature

    with pytest.raises(ValueError, match=r"temperature must be"):
        check_temperature(bad)


def test_temperature_rule_is_the_models_everywhere():
    import numpy as np

    from colorizer import Colorizer
    from colorizer.bins import check_temperature

    assert check_temperature(0) == 0.0 and check_temperature(np.float32(0.5)) == 0.5 and check_temperature(1) == 1.0
    photo = np.full((16, 16, 3), 100, np.uint8)
    for objective in ("classification", "regression"):
        model = Colorizer(objective=objective, width=0.125, input_size=32).eval()
        for bad in (float("nan"), 2.0):
            with pytest.raises(ValueError, match="temperature must be"):
                model.colorize(photo, temperature=bad)
    with pytest.raises(ValueError, match="temperature must be"):
        Colorizer(width=0.125, temperature=float("nan"))
