import re

import pytest
import torch

from colorizer.networks import ECCV16, GlobalLocal, scaled

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("width", [0.125, 0.25, 1.0])
def test_output_is_quarter_resolution(width):
    net = ECCV16(out_channels=261, width=width).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 64, 96))
    assert out.shape == (2, 261, 16, 24)


def test_width_scales_parameters():
    n = lambda w: sum(p.numel() for p in ECCV16(261, w).parameters())  # noqa: E731
    assert n(1.0) > 3.5 * n(0.5) > 3.5 * 3.5 * n(0.25)
    assert 30e6 < n(1.0) < 34e6  # the paper's network: about 32 M parameters
    assert scaled(64, 0.01) == 8


def test_dilated_blocks_and_batch_norm_present():
    net = ECCV16(2, 0.25)
    dilations = [m.dilation for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert dilations.count((2, 2)) == 6
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 7
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 1


def _photos(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(64, 64), (64, 200), (200, 64), (72, 96)])
def test_global_local_output_is_quarter_resolution(size):
    h, w = size
    net = GlobalLocal(out_channels=261, width=0.125).eval()
    with torch.no_grad():
        out = net(_photos(2, h, w))
        g = net.global_features(_photos(2, h, w))
    assert out.shape == (2, 261, h // 4, w // 4)
    assert g.shape == (2, net.global_dim) == (2, scaled(256, 0.125))


def test_global_local_matches_eccv16_shapes_off_multiples_of_8():
    x = _photos(1, 50, 70)
    with torch.no_grad():
        assert GlobalLocal(2, 0.125).eval()(x).shape == ECCV16(2, 0.125).eval()(x).shape == (1, 2, 14, 18)


def test_global_local_photo_alone_equals_photo_in_batch():
    net = GlobalLocal(261, 0.125).eval()
    x = _photos(3, 64, 96)
    with torch.no_grad():
        batch, alone = net(x), net(x[1:2])
        g_batch, g_alone = net.global_features(x), net.global_features(x[1:2])
    torch.testing.assert_close(batch[1:2], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_batch[1:2], g_alone, atol=1e-5, rtol=0)


def test_own_global_features_equal_plain_forward():
    net = GlobalLocal(261, 0.125).eval()
    x = _photos(2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x, net.global_features(x)), net(x), atol=1e-6, rtol=0)


def test_global_features_of_another_photo_change_the_output():
    # Train mode: batch norm keeps an untrained net's activations at unit scale; in
    # eval mode they shrink block by block and the small initial global term with them.
    net = GlobalLocal(261, 0.125).train()
    x, other = _photos(2, 64, 64, seed=0), _photos(2, 64, 64, seed=1).cumsum(-1)
    with torch.no_grad():
        g, g_other = net.global_features(x), net.global_features(other)
        assert (g - g_other).abs().max() > 1e-3
        assert (net(x, g_other) - net(x, g)).abs().max() > 1e-4


@pytest.mark.parametrize("shape", [(2, 33), (1, 32), (3, 32), (32,), (2, 32, 1)])
def test_bad_global_feature_shape_raises(shape):
    net = GlobalLocal(2, 0.125)
    assert net.global_dim == 32
    with pytest.raises(ValueError, match=re.escape(f"expected (2, 32), got {shape}")):
        net(_photos(2, 32, 32), torch.zeros(shape))


def test_global_local_parameters_modestly_above_eccv16():
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    base, joint = n(ECCV16(261, 0.25)), n(GlobalLocal(261, 0.25))
    assert 1.05 * base < joint < 1.25 * base


def test_gradient_reaches_global_branch():
    net = GlobalLocal(261, 0.125).train()
    net(_photos(2, 64, 64)).square().mean().backward()
    for name, p in net.global_branch.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    c4 = scaled(512, 0.125)
    assert net.fusion[0].weight.grad[:, c4:].abs().max() > 0


def test_fusion_starts_as_identity_so_eccv16_weights_warm_start():
    base = ECCV16(261, 0.125).eval()
    net = GlobalLocal(261, 0.125).eval()
    missing, unexpected = net.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == []
    assert missing and all(k.startswith(("global_branch.", "fusion.")) for k in missing)
    c4 = scaled(512, 0.125)
    weight = net.fusion[0].weight  # (c4, c4 + G, 1, 1)
    assert torch.equal(weight[:, :c4, 0, 0], torch.eye(c4))
    assert 0 < weight[:, c4:].abs().max() < 0.05
    with torch.no_grad():
        weight[:, c4:] = 0
        x = _photos(2, 64, 64)
        torch.testing.assert_close(net(x), base(x), atol=1e-6, rtol=0)
