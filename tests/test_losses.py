import pytest
import torch

from colorizer.bins import gamut_bins, soft_encode, to_dense
from colorizer.bins import nearest_bin
from colorizer.losses import channel_classification_loss, classification_loss, downsample_ab, regression_loss


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
