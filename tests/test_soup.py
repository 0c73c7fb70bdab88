"""train.soup: the mean of the weights of runs of one recipe, as a model of its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from colorizer.bins import rebalance_weights
from colorizer.model import Colorizer
from train.soup import main, soup

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int, prior_seed: int | None = None, **settings) -> Colorizer:
    torch.manual_seed(seed)
    q = len(Colorizer(width=0.125).bin_centers)
    prior = None if prior_seed is None else np.random.default_rng(prior_seed).uniform(0.1, 1, q).tolist()
    model = Colorizer(width=0.125, input_size=64, prior=prior, **settings)
    with torch.no_grad():  # batch-norm statistics of their own, as after training
        for name, buf in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buf.uniform_(0.5, 1.5)
    return model.eval()


def test_every_floating_tensor_is_the_mean_and_the_prior_too():
    a, b, c = _model(0, 1), _model(1, 2), _model(2, 3)
    s = soup([a, b, c])
    states = [m.state_dict() for m in (a, b, c)]
    for name, value in s.state_dict().items():
        if name in ("prior", "class_weights"):
            continue
        if value.is_floating_point():
            expected = torch.stack([st[name].double() for st in states]).mean(0).float()
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(value, states[0][name]), name
    priors = torch.stack([m.prior.double() / m.prior.double().sum() for m in (a, b, c)])
    torch.testing.assert_close(s.prior.double(), priors.mean(0), rtol=0, atol=1e-6)
    # the rebalancing weights are the averaged prior's, not the mean of the three weight vectors
    torch.testing.assert_close(s.class_weights, rebalance_weights(priors.mean(0), s.bin_centers, 0.5, 5.0).float())
    assert not torch.allclose(s.class_weights, torch.stack([m.class_weights for m in (a, b, c)]).mean(0))


def test_a_soup_of_one_model_twice_colorizes_as_that_model():
    a = _model(0, 1)
    photo = data.astronaut()[::8, ::8]
    same = soup([a, _model(0, 1)])
    assert np.array_equal(np.asarray(same.colorize(photo)), np.asarray(a.colorize(photo)))
    other = soup([a, _model(5, 1)])
    assert not np.array_equal(np.asarray(other.colorize(photo)), np.asarray(a.colorize(photo)))


def test_models_of_different_recipes_or_one_model_are_refused():
    with pytest.raises(ValueError, match="at least two models"):
        soup([_model(0)])
    with pytest.raises(ValueError, match=r"differs from model 1 in lam"):
        soup([_model(0), _model(1, lam=0.75)])
    with pytest.raises(ValueError, match=r"differs from model 1 in objective"):
        soup([_model(0), _model(1, objective="regression")])


def test_the_command_writes_a_loadable_model_with_a_card_naming_its_ingredients(tmp_path, capsys):
    for i in (0, 1):
        _model(i, i).save_pretrained(tmp_path / f"m{i}")
    out = tmp_path / "soup"
    assert main(["--model", str(tmp_path / "m0"), "--model", str(tmp_path / "m1"), "--to", str(out)]) == 0
    loaded = Colorizer.from_pretrained(out)
    expected = soup([Colorizer.from_pretrained(tmp_path / f"m{i}") for i in (0, 1)])
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0, msg=name)
    card = (out / "README.md").read_text()
    assert "uniform model soup" in card and str(tmp_path / "m1") in card

    # a second time into the same folder, a missing model, models that differ: one line, exit 2
    capsys.readouterr()
    assert main(["--model", str(tmp_path / "m0"), "--model", str(tmp_path / "m1"), "--to", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "m0"), "--model", str(tmp_path / "nope"), "--to", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    _model(2, lam=0.9).save_pretrained(tmp_path / "m2")
    assert main(["--model", str(tmp_path / "m0"), "--model", str(tmp_path / "m2"), "--to", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "lam" in err and err.count("\n") == 1
    assert not (tmp_path / "y").exists()
