"""Global-feature transfer (Iizuka et al. 2016): colour a photo with the global features of
another, in the API (``reference=``) and the CLI (``--reference``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from colorizer import Colorizer, ImageError
from colorizer.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    """A tiny global_local model whose global features carry real weight (at initialisation
    the fusion only nudges the local features, and the layers after it damp the signal)."""
    torch.manual_seed(0)
    m = Colorizer(width=0.125, input_size=64, network="global_local").eval()
    with torch.no_grad():
        for module in m.net.blocks.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.mul_(1.7)  # keep the signal's scale through the layers
        c4 = m.net.fusion[0].out_channels
        m.net.fusion[0].weight[:, c4:].normal_(0.0, 1.0)
        m.net.head.weight.mul_(10.0)  # logits far from uniform: colours, not the prior's mean
    return m


def _arr(image) -> np.ndarray:
    return np.asarray(image, dtype=int)


def test_a_reference_changes_the_colours_and_the_photo_itself_changes_nothing(model):
    photo, other = data.coffee(), data.astronaut()
    own = _arr(model.colorize(photo, 1.0))
    assert (_arr(model.colorize(photo, 1.0, reference=photo)) == own).all()
    # a reference photo is its features (an untrained global branch reads every photo alike,
    # so the features of a very different scene are made by hand here)
    features = model.reference_features(other)
    assert features.shape == (1, model.net.global_dim)
    assert (_arr(model.colorize(photo, 1.0, reference=other)) == _arr(model.colorize(photo, 1.0, reference=features))).all()
    elsewhere = features + 50.0 * torch.randn(features.shape, generator=torch.Generator().manual_seed(1))
    transferred = _arr(model.colorize(photo, 1.0, reference=elsewhere))
    assert transferred.shape == own.shape and np.abs(transferred - own).mean() > 1.0
    # the lightness stays the photo's own
    from colorizer.color import rgb_to_l

    def lightness(a):
        return rgb_to_l(torch.from_numpy(a.astype(np.float64) / 255).permute(2, 0, 1)).numpy()

    assert np.abs(lightness(transferred) - lightness(own)).max() < 1.0


def test_batches_take_one_reference_for_all(model):
    photos = [data.coffee(), data.chelsea()]
    other = model.reference_features(data.rocket()) + 50.0 * torch.randn(1, model.net.global_dim)
    batch = model.colorize_batch(photos, 1.0, reference=other)
    for photo, out in zip(photos, batch):
        assert np.abs(_arr(out) - _arr(model.colorize(photo, 1.0, reference=other))).max() <= 1  # float noise
        assert (_arr(out) != _arr(model.colorize(photo, 1.0))).any()


def test_reference_errors_are_clear(model, tmp_path):
    with pytest.raises(ValueError, match="needs a model with a global branch"):
        Colorizer(width=0.125, input_size=64).colorize(data.coffee(), reference=data.astronaut())
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg"):
        model.colorize(data.coffee(), reference=tmp_path / "empty.jpg")
    with pytest.raises(ValueError, match="expected 32 values"):
        model.colorize(data.coffee(), reference=torch.zeros(7))


def test_cli_reference(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "gl")
    Colorizer(width=0.125, input_size=64).save_pretrained(tmp_path / "plain")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    assert main([str(tmp_path / "coffee.png"), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "gl"), "-t", "1",
                 "--reference", str(tmp_path / "astronaut.png"), "-q"]) == 0  # fmt: skip
    expected = Colorizer.from_pretrained(tmp_path / "gl").colorize(data.coffee(), 1.0, reference=data.astronaut())
    assert np.abs(_arr(Image.open(tmp_path / "out" / "coffee.png")) - _arr(expected)).max() == 0
    capsys.readouterr()
    for model_dir, reference, message in [
        ("plain", "astronaut.png", "needs a model with a global branch"),
        ("gl", "missing.png", "missing.png"),
    ]:
        assert main([str(tmp_path / "coffee.png"), "-o", str(tmp_path / "out2"), "-m", str(tmp_path / model_dir),
                     "--reference", str(tmp_path / reference)]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("colorizer: error: --reference:") and message in err[0]
        assert not (tmp_path / "out2").exists()  # nothing made
