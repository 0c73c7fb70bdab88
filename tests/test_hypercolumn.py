"""The hypercolumn colorizer (Ciugurean): a frozen trained trunk, hypercolumns from four
depths, a small residual decoder, with L2 or per-channel 64-class heads."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from colorizer import Colorizer
from colorizer.networks import Hypercolumn
from tests.training_helpers import folder, losses, tiny  # noqa: F401 - the fixture
from train.loop import init_weights, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_per_channel_classes_decode_by_each_channels_annealed_mean():
    m = Colorizer(width=0.125, input_size=64, network="hypercolumn", objective="channel_classification")
    centres = m.channel_centers
    assert len(centres) == 64 and centres[0] == pytest.approx(-110 + 220 / 128) and centres[-1] == pytest.approx(110 - 220 / 128)
    logits = torch.full((1, 128, 2, 2), -30.0)
    logits[0, 10], logits[0, 64 + 50] = 30.0, 30.0  # a certain: class 10, b: class 50
    ab = m.decode(logits, 0)
    assert torch.allclose(ab[0, 0], centres[10]) and torch.allclose(ab[0, 1], centres[50])
    logits[0, 64 + 51] = 30.0  # b split between 50 and 51: the mean sits between at T = 1
    assert torch.allclose(m.decode(logits, 1.0)[0, 1], (centres[50] + centres[51]) / 2)
    # the loss: cross-entropy of a's class plus b's, low for the right classes
    truth = torch.stack([centres[10].expand(1, 8, 8), centres[50].expand(1, 8, 8)], dim=1)
    right = torch.full((1, 128, 2, 2), -30.0)
    right[0, 10], right[0, 64 + 50] = 30.0, 30.0
    assert float(m.loss(right, truth)) < 1e-6 < float(m.loss(logits, truth))
    pred = m.analyze(skimage.data.coffee())
    assert pred.uncertainty().shape == (400, 600) and pred.render(0.2).size == (600, 400)


@pytest.mark.parametrize("objective", ["regression", "channel_classification"])
def test_the_trunk_is_a_trained_model_and_stays_frozen(folder, tmp_path, objective):
    source = Colorizer(width=0.125, input_size=64)
    for module in source.modules():  # batch-norm statistics of a "trained" trunk
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
    source.save_pretrained(tmp_path / "source")
    cfg = tiny(folder, tmp_path, network="hypercolumn", objective=objective, init_from=str(tmp_path / "source"))
    train(cfg)
    model = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    trunk = {k[len("net.trunk."):]: v for k, v in model.state_dict().items() if k.startswith("net.trunk.")}
    for name, value in source.state_dict().items():
        if name.startswith("net.") and not name.startswith("net.head."):
            torch.testing.assert_close(trunk[name[len("net."):]], value, msg=name)  # unchanged by training
    assert all(np.isfinite(v) for v in losses(tmp_path / "run").values())
    trainable = sum(p.numel() for p in model.net.parameters() if p.requires_grad)
    assert 0 < trainable < sum(p.numel() for p in model.net.trunk.parameters())
    assert model.colorize(skimage.data.chelsea()).size == (451, 300)
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny(folder, tmp_path / "x", network="hypercolumn", objective=objective))
    with pytest.raises(ValueError, match="cannot be the trunk"):
        init_weights(Colorizer(width=0.125, network="hypercolumn", trunk="global_local", objective=objective),
                     str(tmp_path / "source"))
    # a trained hypercolumn model (say, a shipped default) seeds another whole: trunk and decoder
    again = Colorizer(width=0.125, network="hypercolumn", objective=objective)
    init_weights(again, str(tmp_path / "run" / "model"))
    for name, value in model.state_dict().items():
        if name not in ("prior", "class_weights"):
            torch.testing.assert_close(again.state_dict()[name], value, msg=name)
    # ... and only its frozen trunk to a hypercolumn model with another head
    other = Colorizer(width=0.125, network="hypercolumn",
                      objective="regression" if objective != "regression" else "channel_classification")
    fresh = {k: v.clone() for k, v in other.state_dict().items()}
    init_weights(other, str(tmp_path / "run" / "model"))
    for name, value in other.state_dict().items():
        if name.startswith("net.trunk."):
            torch.testing.assert_close(value, model.state_dict()[name], msg=name)
        elif name.startswith("net.") and name in fresh:
            torch.testing.assert_close(value, fresh[name], msg=name)  # the decoder starts fresh
    # ... and that trunk to an ECCV16 network (the ECCV16 default inside the shipped one), head fresh
    plain = Colorizer(width=0.125, grid=20)
    head = plain.net.head.weight.clone()
    init_weights(plain, str(tmp_path / "run" / "model"))
    for name, value in plain.state_dict().items():
        if name.startswith("net.") and not name.startswith("net.head."):
            torch.testing.assert_close(value, model.state_dict()["net.trunk." + name[len("net."):]], msg=name)
    assert torch.equal(plain.net.head.weight, head)
    with pytest.raises(ValueError, match="does not fit"):
        init_weights(Colorizer(width=0.25), str(tmp_path / "run" / "model"))


def test_a_frozen_trunk_keeps_its_batch_norm_statistics_in_training_mode():
    net = Hypercolumn(4, width=0.125).train()
    assert not net.trunk.training and net.reduce.training
    before = [b.running_mean.clone() for b in net.trunk.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    after = [b.running_mean for b in net.trunk.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(torch.equal(x, y) for x, y in zip(before, after))
    assert all(p.grad is None for p in net.trunk.parameters())


def test_an_unfrozen_trunk_trains_end_to_end(folder, tmp_path):
    """--train-trunk: from a trained hypercolumn model, the trunk's weights and batch-norm
    statistics change too; without --network hypercolumn it is refused."""
    net = Hypercolumn(4, width=0.125).unfreeze().train()
    assert net.trunk.training
    net(torch.randn(2, 1, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in net.trunk.parameters())
    source = Colorizer(width=0.125, input_size=64)
    source.save_pretrained(tmp_path / "source")
    train(tiny(folder, tmp_path / "first", network="hypercolumn", objective="channel_classification",
               init_from=str(tmp_path / "source")))
    first = Colorizer.from_pretrained(str(tmp_path / "first" / "run" / "model"))
    train(tiny(folder, tmp_path, network="hypercolumn", objective="channel_classification", train_trunk=True,
               init_from=str(tmp_path / "first" / "run" / "model")))
    tuned = Colorizer.from_pretrained(str(tmp_path / "run" / "model"))
    changed = [k for k, v in tuned.state_dict().items()
               if k.startswith("net.trunk.") and v.is_floating_point() and not torch.equal(v, first.state_dict()[k])]
    assert any(k.endswith("weight") for k in changed) and any(k.endswith("running_mean") for k in changed)
    with pytest.raises(ValueError, match="--train-trunk"):
        tiny(folder, tmp_path, train_trunk=True)
