import pytest
import torch

from colorizer.bins import gamut_bins, soft_encode, to_dense
from colorizer.bins import nearest_bin
from colorizer.losses import cast_loss, channel_classification_loss, classification_loss, downsample_ab, regression_loss


@pytest.fixture(scope="module")
def centres():
    return gamut_bins(10)


def test_classification_loss_is_lowest_at_the_soft_target(centres):
    ab = torch.randn(2, 2, 8, 8) * 30
    idx, w = soft_encode(ab, centres)
    target = to_dense(idx, w, len(centres))
    best = classification_loss(torch.log(target.clamp(min=1e-12)), ab, centres)
    other = classification_loss(torch.randn(2, len(centres), 8, 8), ab, centres)
    # cross-entropy at the target equals its entropy, the minimum
    ent = -(target * torch.log(target.clamp(min=1e-12))).sum(1).mean()
    assert best.item() == pytest.approx(ent.item(), rel=1e-4)
    assert other > best


def test_classification_loss_rebalancing_weights_by_true_bin(centres):
    ab = torch.zeros(1, 2, 4, 4)  # every pixel in bin (0, 0)
    logits = torch.randn(1, len(centres), 4, 4)
    plain = classification_loss(logits, ab, centres)
    weights = torch.ones(len(centres))
    i0 = int(((centres == 0).all(1)).nonzero())
    weights[i0] = 3.0
    assert classification_loss(logits, ab, centres, weights).item() == pytest.approx(3 * plain.item(), rel=1e-5)


def test_channel_classification_loss_by_hand_and_rebalanced_by_the_joint_bin(centres):
    ab = torch.tensor([[-30.0, 5.0], [40.0, 60.0]]).T.reshape(1, 2, 1, 2)  # two pixels
    logits = torch.randn(1, 2 * 64, 1, 2, requires_grad=True)
    classes = ((ab + 110) * (64 / 220)).floor().long()  # each channel's class of 64 over [-110, 110]
    by_hand = torch.stack([torch.nn.functional.cross_entropy(logits[0, :64, 0].T, classes[0, 0, 0], reduction="none")
                           + torch.nn.functional.cross_entropy(logits[0, 64:, 0].T, classes[0, 1, 0], reduction="none")])
    plain = channel_classification_loss(logits, ab, 110.0)
    assert plain.item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
    # rebalanced: each pixel weighted by its colour's bin (a and b together), 3 for the second pixel's
    weights = torch.ones(len(centres))
    weights[nearest_bin(ab, centres)[0, 0, 1]] = 3.0
    rebalanced = channel_classification_loss(logits, ab, 110.0, weights, centres)
    assert rebalanced.item() == pytest.approx(((by_hand[0, 0] + 3 * by_hand[0, 1]) / 2).item(), rel=1e-5)
    with pytest.raises(ValueError, match="need centres"):
        channel_classification_loss(logits, ab, 110.0, weights)


def test_classification_loss_downsamples_and_masks(centres):
    ab = torch.randn(2, 2, 16, 16) * 20
    logits = torch.randn(2, len(centres), 4, 4, requires_grad=True)
    loss = classification_loss(logits, ab, centres, mask=torch.tensor([True, False]))
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    none = classification_loss(logits, ab, centres, mask=torch.tensor([False, False]))
    assert none.item() == 0.0


def test_regression_loss_by_hand():
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0], target[:, 1] = 3.0, 4.0
    pred = torch.zeros(1, 2, 2, 2)
    assert regression_loss(pred, target, "l2").item() == pytest.approx(25.0)
    # smooth-L1 (beta 1): |x| - 0.5 per channel -> 2.5 + 3.5
    assert regression_loss(pred, target, "smooth_l1").item() == pytest.approx(6.0)
    with pytest.raises(ValueError):
        regression_loss(pred, target, "l3")


def test_cast_loss_scores_each_images_mean_colour_not_its_pixels():
    truth = torch.randn(3, 2, 16, 16) * 20
    shuffled = truth.flatten(2)[..., torch.randperm(256)].view(3, 2, 16, 16)  # every pixel wrong, the mean right
    assert cast_loss(downsample_ab(shuffled, (4, 4)), truth).item() == pytest.approx(0.0, abs=1e-4)
    tinted = truth + torch.tensor([3.0, -4.0]).view(1, 2, 1, 1)  # a cast of 5 on every image
    assert cast_loss(tinted, truth).item() == pytest.approx(25.0, rel=1e-5)
    per_image = torch.stack([truth[0] + 6.0, truth[1], truth[2] + 1.0])  # casts of sqrt(72), 0, sqrt(2)
    assert cast_loss(per_image, truth).item() == pytest.approx((72 + 0 + 2) / 3, rel=1e-5)
    assert cast_loss(per_image, truth, torch.tensor([True, False, True])).item() == pytest.approx(37.0, rel=1e-5)


def test_cast_loss_trains_the_per_channel_classes_towards_the_true_mean():
    """Through the annealed mean of the per-channel classes the loss moves the predicted mean colour."""
    from colorizer.model import _per_channel_mean

    centres = torch.linspace(-107.5, 107.5, 64)
    logits = torch.zeros(1, 128, 4, 4, requires_grad=True)  # uniform: the mean is (0, 0)
    truth = torch.tensor([20.0, -10.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8)
    before = cast_loss(_per_channel_mean(logits, centres, 1.0), truth)
    before.backward()
    with torch.no_grad():
        after = cast_loss(_per_channel_mean(logits - 0.01 * logits.grad, centres, 1.0), truth)
    assert before.item() == pytest.approx(500.0, rel=1e-4) and after < before


def test_downsample_ab_is_area_average():
    ab = torch.arange(32, dtype=torch.float32).view(1, 2, 4, 4)
    out = downsample_ab(ab, (1, 1))
    assert torch.allclose(out.flatten(), ab.mean((2, 3)).flatten())


def test_soft_encoding_is_exact_under_bf16_autocast(centres):
    ab = torch.randn(2, 2, 16, 16) * 40
    logits = torch.randn(2, len(centres), 4, 4)
    ref = classification_loss(logits, ab, centres)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx, w = soft_encode(ab, centres)
        got = classification_loss(logits, ab, centres)
    ref_idx, ref_w = soft_encode(ab, centres)
    assert torch.equal(idx, ref_idx) and torch.allclose(w, ref_w)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
