import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from colorizer.bins import PriorCounter, gamut_bins
from colorizer.metrics import AucMeter, auc, colorfulness, evaluation_prior, psnr, rebalanced_pixel_weights, ssim


def integer_ab(shape=(2, 2, 6, 5), seed=0):
    """Whole-number ab, so that shifted errors are exact (no threshold rounding)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-60, 61, shape, generator=g).float()


def shifted(ab, da, db):
    return ab + torch.tensor([da, db], dtype=ab.dtype).view(1, 2, 1, 1)


# ---------------------------------------------------------------- AuC
def test_auc_perfect_prediction_is_one():
    ab = integer_ab()
    assert auc(ab, ab) == 1.0


@pytest.mark.parametrize("da,db,d", [(18.0, 24.0, 30), (0.0, -1.0, 1), (90.0, 120.0, 150), (-5.0, 12.0, 13)])
def test_auc_constant_shift_matches_hand_value(da, db, d):
    # acc(t) = 0 for t < d, 1 for t >= d: trapezoids give (150 - d) full steps and a half step.
    ab = integer_ab()
    expected = (150 - d + 0.5) / 150
    assert auc(shifted(ab, da, db), ab) == pytest.approx(expected, abs=1e-12)


def test_auc_shift_beyond_range_is_zero():
    ab = integer_ab()
    assert auc(shifted(ab, 151.0, 0.0), ab) == 0.0


def test_auc_curve_steps_at_the_shift():
    ab = integer_ab()
    meter = AucMeter()
    meter.update(shifted(ab, 30.0, 40.0), ab)  # error exactly 50
    acc = meter.curve()
    assert acc.shape == (151,)
    assert acc[49] == 0.0 and acc[50] == 1.0 and acc[150] == 1.0


def test_auc_mixes_pixels_and_weights():
    ab = integer_ab((1, 2, 4, 4))
    pred = ab.clone()
    pred[..., 2:, :] += torch.tensor([30.0, 0.0]).view(1, 2, 1, 1)  # bottom half off by 30
    off = (150 - 30 + 0.5) / 150
    assert auc(pred, ab) == pytest.approx(0.5 * 1.0 + 0.5 * off)
    weights = torch.ones(1, 4, 4)
    weights[:, :2] = 3.0  # the perfect half counts three times
    assert auc(pred, ab, weights) == pytest.approx((3 * 1.0 + 1 * off) / 4)
    only_bad = torch.zeros(1, 4, 4)
    only_bad[:, 2:] = 1.0
    assert auc(pred, ab, only_bad) == pytest.approx(off)


def test_auc_meter_pools_pixels_of_images_of_different_sizes():
    a, b = integer_ab((1, 2, 3, 4), 1), integer_ab((1, 2, 5, 2), 2)
    pa, pb = shifted(a, 10.0, 0.0), shifted(b, 0.0, 70.0)
    meter = AucMeter()
    meter.update(pa, a)
    meter.update(pb, b)
    # 12 pixels off by 10 and 10 pixels off by 70
    expected = (12 * (140.5 / 150) + 10 * (80.5 / 150)) / 22
    assert meter.value() == pytest.approx(expected)
    assert meter.total == 22


def test_auc_smaller_max_distance():
    ab = integer_ab()
    assert auc(shifted(ab, 0.0, 5.0), ab, max_distance=10) == pytest.approx((10 - 5 + 0.5) / 10)


@pytest.mark.parametrize(
    "pred,true,weights,match",
    [
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), None, "expected pred_ab of shape"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5), None, "differ in shape"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 5), "weights of shape"),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), -torch.ones(1, 4, 4), "non-negative"),
    ],
)
def test_auc_rejects_bad_input(pred, true, weights, match):
    with pytest.raises(ValueError, match=match):
        auc(pred, true, weights)


def test_auc_meter_without_pixels_raises():
    with pytest.raises(ValueError, match="no pixels"):
        AucMeter().value()


# ---------------------------------------------------------------- rebalancing
def test_rebalanced_weights_are_inverse_prior_of_true_bin():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    prior = torch.tensor([0.5, 0.25, 0.25])
    ab = torch.tensor([[[0.0, 48.0], [2.0, 1.0]], [[1.0, 3.0], [52.0, -2.0]]]).unsqueeze(0)  # (1, 2, 2, 2)
    # pixels: (0, 1) -> bin 0, (48, 3) -> bin 1, (2, 52) -> bin 2, (1, -2) -> bin 0
    w = rebalanced_pixel_weights(ab, centres, prior)
    assert w.shape == (1, 2, 2)
    assert torch.equal(w, torch.tensor([[[2.0, 4.0], [4.0, 2.0]]], dtype=torch.float64))


def test_rebalanced_weights_zero_prior_gets_rarest_weight():
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    prior = torch.tensor([0.8, 0.2, 0.0])
    ab = torch.tensor([[0.0], [50.0]]).view(1, 2, 1, 1)  # bin 2, never seen in the prior
    assert rebalanced_pixel_weights(ab, centres, prior).item() == pytest.approx(5.0)


def test_rebalanced_auc_with_own_prior_is_mean_of_per_bin_accuracy():
    centres = gamut_bins(10)
    true = torch.zeros(1, 2, 1, 10)
    true[0, 0, 0, :8] = 0.0  # 8 gray pixels, predicted perfectly
    true[0, :, 0, 8:] = torch.tensor([40.0, 40.0]).view(2, 1)  # 2 orange-ish pixels, missed by 40 * sqrt(2)
    pred = torch.zeros_like(true)
    counter = PriorCounter(centres)
    counter.update(true)
    w = rebalanced_pixel_weights(true, centres, counter.prior())
    raw = auc(pred, true)
    rebal = auc(pred, true, w)
    miss = auc(pred[..., 8:], true[..., 8:])
    assert raw == pytest.approx(0.8 * 1.0 + 0.2 * miss)
    assert rebal == pytest.approx(0.5 * 1.0 + 0.5 * miss)  # each colour bin counts the same
    assert rebal < raw


def test_evaluation_prior_pools_every_photo_of_the_set():
    torch.manual_seed(0)
    photos = [torch.randn(1, 2, 5, 7) * 30, torch.randn(2, 2, 3, 4) * 30, torch.zeros(1, 2, 2, 2)]
    set_prior = evaluation_prior(iter(photos))
    assert set_prior.centres.shape == (261, 2) and set_prior.pixels == 35 + 24 + 4  # grid 10
    counter = PriorCounter(gamut_bins(10))
    for ab in photos:
        counter.update(ab)
    torch.testing.assert_close(set_prior.prior, counter.prior())
    assert float(set_prior.prior.sum()) == pytest.approx(1.0)
    ab = photos[1]
    torch.testing.assert_close(set_prior.pixel_weights(ab), rebalanced_pixel_weights(ab, counter.centres, counter.prior()))
    gray = set_prior.pixel_weights(photos[2])  # ab = 0: the gray bin, counted 4 times or more
    assert torch.all(gray == gray.flatten()[0]) and 1.0 < float(gray.flatten()[0]) <= 63 / 4


def test_evaluation_prior_rejects_bad_input():
    with pytest.raises(ValueError, match="no pixels"):
        evaluation_prior([])
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\), got \(2, 3, 3\)"):
        evaluation_prior([torch.zeros(2, 3, 3)])


def test_rebalanced_weights_reject_bad_prior():
    centres = gamut_bins(10)
    ab = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="entries"):
        rebalanced_pixel_weights(ab, centres, torch.ones(5))
    with pytest.raises(ValueError, match="positive"):
        rebalanced_pixel_weights(ab, centres, torch.zeros(len(centres)))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        rebalanced_pixel_weights(torch.zeros(2, 2, 2), centres, torch.ones(len(centres)))


# ---------------------------------------------------------------- PSNR and SSIM
def test_psnr_identical_is_inf():
    img = data.astronaut()[::8, ::8]
    assert psnr(img, img) == math.inf


def test_psnr_constant_offset_matches_hand_value():
    true = np.full((8, 9, 3), 100, dtype=np.uint8)
    pred = true + 10  # MSE = 100
    assert psnr(pred, true) == pytest.approx(10 * math.log10(255**2 / 100))


def test_ssim_identical_is_one_and_matches_skimage():
    true = data.astronaut()[::8, ::8]
    assert ssim(true, true) == pytest.approx(1.0)
    noisy = np.clip(true.astype(int) + np.random.default_rng(0).integers(-40, 41, true.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(true, noisy, data_range=255, channel_axis=2)
    assert ssim(noisy, true) == pytest.approx(expected)
    assert ssim(noisy, true) < 0.9


def test_ssim_small_images_use_a_smaller_window():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(structural_similarity(b, a, data_range=255, channel_axis=2, win_size=5))
    with pytest.raises(ValueError, match="at least 3x3"):
        ssim(a[:2], a[:2])


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_rgb_metrics_reject_bad_input(fn):
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        fn(img, np.zeros((8, 9, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        fn(img.astype(np.float32), img)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        fn(img[..., 0], img[..., 0])


# ---------------------------------------------------------------- colourfulness
def test_colorfulness_of_gray_is_zero():
    gray = np.repeat(data.camera()[::8, ::8, None], 3, axis=2)
    assert colorfulness(gray) == 0.0
    assert colorfulness(gray, absolute=True) == 0.0


def test_colorfulness_hand_values():
    # half red (255, 0, 0), half black: rg in {255, 0}, yb in {127.5, 0}
    img = np.zeros((4, 4, 3), dtype=np.uint8)
    img[:2, :, 0] = 255
    r = math.hypot(127.5, 63.75)
    assert colorfulness(img) == pytest.approx(r + 0.3 * r)  # std and mean have the same norm here
    # a single colour has no spread: M = 0.3 * |mean|
    blue = np.zeros((3, 3, 3), dtype=np.uint8)
    blue[..., 2] = 255
    assert colorfulness(blue) == pytest.approx(0.3 * 255)


def test_colorfulness_signed_and_absolute_variants_differ():
    # half red, half green: signed rg = +-255 (mean 0, std 255); |rg| = 255 everywhere.
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, :, 0] = 255
    img[1, :, 1] = 255
    assert colorfulness(img) == pytest.approx(255 + 0.3 * 127.5)
    assert colorfulness(img, absolute=True) == pytest.approx(0.3 * math.hypot(255, 127.5))


def test_colorfulness_ranks_saturation():
    photo = data.astronaut()[::4, ::4]
    faded = (photo.astype(np.float64) * 0.3 + photo.mean(axis=2, keepdims=True) * 0.7).round().astype(np.uint8)
    assert colorfulness(photo) > colorfulness(faded) > 0


def test_colorfulness_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        colorfulness(np.zeros((4, 4), dtype=np.uint8))


def test_threshold_accuracy_is_the_auc_construction_on_rgb_distances():
    from colorizer.metrics import threshold_accuracy, threshold_meter

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert threshold_accuracy(truth, truth) == 1.0
    shifted = truth.astype(int)
    shifted[..., 1] = np.clip(shifted[..., 1], 0, 255 - 40) + 0  # room to add 40 to green
    base = shifted.astype(np.uint8)
    assert threshold_accuracy(base + np.array([0, 40, 0], np.uint8), base) == pytest.approx((150 - 40 + 0.5) / 150)
    # against a direct computation on random errors: acc(t) on t = 0..150, trapezoid / 150
    pred = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    d = np.linalg.norm(pred.astype(float) - truth.astype(float), axis=-1).ravel()
    acc = np.array([(d <= t).mean() for t in range(151)])
    assert threshold_accuracy(pred, truth) == pytest.approx(np.trapezoid(acc) / 150, abs=1e-12)
    # pooled over photos: the meters add
    a, b = threshold_meter(pred, truth), threshold_meter(truth, truth)
    a.mass += b.mass
    both = np.concatenate([d, np.zeros_like(d)])
    assert a.value() == pytest.approx(np.trapezoid([(both <= t).mean() for t in range(151)]) / 150, abs=1e-12)
    with pytest.raises(ValueError, match="differ in shape"):
        threshold_accuracy(pred, truth[:10])
