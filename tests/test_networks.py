import pytest
import torch

from colorizer.networks import ECCV16, scaled


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
