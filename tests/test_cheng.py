"""Deep Colorization (Cheng et al. 2015): patch + DAISY features, a per-pixel network,
and the joint bilateral refinement."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from colorizer import Colorizer
from colorizer.cheng import DAISY_SIZE, Cheng15, daisy_features, joint_bilateral
from tests.training_helpers import folder, losses, tiny  # noqa: F401 - the fixture
from train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_features_are_patches_and_daisy_on_the_output_grid():
    x = torch.rand(2, 1, 64, 40)
    net = Cheng15(2, width=0.125)
    f = net.features(x - 0.5)
    assert f.shape == (2, 49 + DAISY_SIZE, 16, 10)
    # the centre of each 7x7 patch is the grid's pixel (every 4th, from 0)
    torch.testing.assert_close(f[:, 24], x[:, 0, ::4, ::4] - 0.5)
    from skimage.feature import daisy

    ref = daisy(np.pad(x[1, 0].numpy(), 15, mode="reflect"), step=4, radius=15, rings=2, histograms=6, orientations=8)
    torch.testing.assert_close(daisy_features(x)[1], torch.from_numpy(ref.transpose(2, 0, 1)).float())
    assert net(x - 0.5).shape == (2, 2, 16, 10)


def test_joint_bilateral_smooths_within_regions_and_keeps_edges():
    guide = torch.zeros(1, 1, 20, 20)
    guide[..., 10:] = 50.0  # an edge in the gray image
    values = torch.randn(1, 2, 20, 20, generator=torch.Generator().manual_seed(0))
    values[:, :, :, 10:] += 30.0  # the chroma steps at the same place
    out = joint_bilateral(values, guide)
    left, right = out[..., 3:17, 3:7], out[..., 3:17, 13:17]
    assert left.std() < 0.6 * values[..., 3:17, 3:7].std()  # noise smoothed ...
    assert (right.mean() - left.mean()) > 29.0  # ... and the edge kept
    flat = joint_bilateral(values, torch.zeros(1, 1, 20, 20))  # a flat guide: a plain Gaussian blur
    d = torch.arange(-3, 4, dtype=torch.float32)
    g = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * 2.0**2))
    torch.testing.assert_close(flat[0, :, 10, 5], (values[0, :, 7:14, 2:9] * g).sum((-2, -1)) / g.sum())
    assert torch.isfinite(flat).all()
    const = torch.full((1, 2, 9, 9), 7.0)
    torch.testing.assert_close(joint_bilateral(const, torch.rand(1, 1, 9, 9) * 100), const)


def test_cheng_trains_and_colorizes(folder, tmp_path):
    with pytest.raises(ValueError, match="objective regression"):
        tiny(folder, tmp_path, network="cheng15")
    figures = train(tiny(folder, tmp_path, network="cheng15", objective="regression", color_space="yuv"))
    assert 0 < figures["val_auc"] <= 1 and all(np.isfinite(v) for v in losses(tmp_path / "run").values())
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    assert model.network == "cheng15" and model.needs_lightness
    out = model.colorize(skimage.data.coffee())
    assert out.size == (600, 400)
    with pytest.raises(ValueError, match="objective 'regression'"):
        Colorizer(width=0.125, network="cheng15")


def test_the_semantic_feature_is_a_frozen_trained_network_read_at_each_pixel(folder, tmp_path):
    """--semantic-width: a trained ECCV16 network's mid-level features (block 3) join the
    patch and DAISY features; its weights come from --init-from and never change in training."""
    source = Colorizer(width=0.125, input_size=64)
    for module in source.modules():  # batch-norm statistics of a "trained" network
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    source.save_pretrained(tmp_path / "source")
    options = dict(network="cheng15", objective="regression", color_space="yuv", semantic_width=0.125)
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny(folder, tmp_path / "x", **options))
    train(tiny(folder, tmp_path, init_from=str(tmp_path / "source"), **options))
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    net = model.net
    assert net.norm.num_features == 49 + DAISY_SIZE + 32  # 256 x 0.125 channels of block 3
    for name, value in source.state_dict().items():
        if name.startswith("net.") and not name.startswith("net.head."):
            torch.testing.assert_close(net.trunk.state_dict()[name[len("net."):]], value, msg=name)
    x = torch.rand(1, 1, 64, 48) - 0.5
    feats = net.features(x)
    assert feats.shape == (1, 49 + DAISY_SIZE + 32, 16, 12)
    with torch.no_grad():
        mid = source.net.eval().features(x)[2]
    assert mid.shape == (1, 32, 8, 6) and mid.abs().max() > 0.1
    torch.testing.assert_close(feats[:, -32:], torch.nn.functional.interpolate(mid, size=(16, 12), mode="bilinear"))
    assert model.colorize(skimage.data.coffee()).size == (600, 400)
    with pytest.raises(ValueError, match="semantic_width is Cheng"):
        Colorizer(width=0.125, semantic_width=0.125)
    with pytest.raises(ValueError, match="--semantic-width"):
        tiny(folder, tmp_path, semantic_width=0.125)
