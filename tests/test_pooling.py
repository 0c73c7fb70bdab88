import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from colorizer.model import Colorizer
from evaluation.evaluate import main
from evaluation.pooling import PooledModel, Shared, parse_pool, pool_log_probabilities

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return Colorizer(**{"width": 0.125, "input_size": 32, **kw}).eval()


PHOTO = Image.fromarray(data.chelsea()).resize((48, 32))


def test_parse_pool():
    assert parse_pool("p=a,b") == ("p", ["a", "b"], "geometric")
    assert parse_pool(" both = default , runs/x/model :mixture") == ("both", ["default", "runs/x/model"], "mixture")
    assert parse_pool("p=C:/models/a,C:/models/b") == ("p", ["C:/models/a", "C:/models/b"], "geometric")
    for bad in ("p=a", "=a,b", "a,b", "p=a,b:", "p=a,b:median"):
        with pytest.raises(ValueError, match="LABEL=MODEL,MODEL"):
            parse_pool(bad)


@pytest.mark.parametrize("objective", ["classification", "channel_classification"])
@pytest.mark.parametrize("rule", ["geometric", "mixture"])
def test_a_model_pooled_with_itself_is_the_model(objective, rule):
    m = tiny(objective=objective)
    pooled = PooledModel([m, m], rule)
    for t in (0.38, 1.0):
        assert torch.allclose(pooled.analyze(PHOTO).ab(t), m.analyze(PHOTO).ab(t), atol=1e-4)
    assert pooled.objective == objective and pooled.temperature == m.temperature


def test_pools_by_hand_across_output_sizes():
    """Two models with different input sizes: the second's log-probabilities are resized to
    the first's output, then averaged (geometric, renormalised per channel) or their
    probabilities averaged (mixture)."""
    a, b = tiny(0, objective="channel_classification"), tiny(1, objective="channel_classification", input_size=48)
    la, lb = a.analyze(PHOTO).output, b.analyze(PHOTO).output
    assert la.shape[-2:] != lb.shape[-2:]
    n = la.shape[1] // 2

    def logp(o):
        return torch.cat([F.log_softmax(o[:, :n], 1), F.log_softmax(o[:, n:], 1)], 1)

    lb_resized = logp(F.interpolate(lb, size=la.shape[-2:], mode="bilinear", align_corners=False))
    geo = PooledModel([a, b]).analyze(PHOTO).output
    mean = (logp(la) + lb_resized) / 2
    want = torch.cat([F.log_softmax(mean[:, :n], 1), F.log_softmax(mean[:, n:], 1)], 1)
    assert torch.allclose(geo, want, atol=1e-5)
    mix = PooledModel([a, b], "mixture").analyze(PHOTO).output
    assert torch.allclose(mix.exp(), (logp(la).exp() + lb_resized.exp()) / 2, atol=1e-5)
    for pooled in (geo, mix):  # each channel a distribution
        assert torch.allclose(pooled[:, :n].exp().sum(1), torch.ones(1), atol=1e-4)
        assert torch.allclose(pooled[:, n:].exp().sum(1), torch.ones(1), atol=1e-4)


def test_sharp_distributions_of_other_sizes_pool_to_distributions():
    """Each pooled pixel is a distribution even where a resized member's sharp classes change:
    the logits are resized, then made probabilities (resized log-probabilities would lose mass)."""
    class Fixed:  # a member whose logits are given
        objective, temperature, needs_lightness = "classification", 1.0, False

        def __init__(self, logits, centres):
            self.logits, self.bin_centers = logits, centres

        def analyze(self, image):  # a prediction's output and lightness (unused here)
            return type("P", (), {"output": self.logits, "lightness": None})()

    centres = torch.zeros(3, 2)
    sharp = torch.full((1, 3, 2, 2), -30.0)
    sharp[:, 0, :, 0] = 30.0  # class 0 on the left, class 1 on the right
    sharp[:, 1, :, 1] = 30.0
    flat = torch.zeros(1, 3, 5, 5)
    for rule in ("geometric", "mixture"):
        pooled = PooledModel([Fixed(flat, centres), Fixed(sharp, centres)], rule).analyze(None).output
        assert pooled.shape == (1, 3, 5, 5)
        assert torch.allclose(pooled.exp().sum(1), torch.ones(1, 5, 5), atol=1e-5)


def test_geometric_pool_keeps_what_both_find_likely():
    """Classes one member rules out lose their mass; the mixture keeps half of it."""
    p = torch.tensor([0.5, 0.5, 1e-6]).log().view(1, 3, 1, 1)
    q = torch.tensor([0.5, 1e-6, 0.5]).log().view(1, 3, 1, 1)
    geo = pool_log_probabilities([p, q], "geometric").exp().view(-1)
    mix = pool_log_probabilities([p, q], "mixture").exp().view(-1)
    assert geo[0] > 0.99 and mix[0] == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="pool rule"):
        pool_log_probabilities([p, q], "median")


def test_pool_refuses_models_of_other_classes():
    with pytest.raises(ValueError, match="same colour classes"):
        PooledModel([tiny(objective="classification"), tiny(objective="channel_classification")])
    with pytest.raises(ValueError, match="same colour classes"):
        PooledModel([tiny(objective="classification"), tiny(objective="classification", grid=20.0)])
    with pytest.raises(ValueError, match="colour classes, not a regression"):
        PooledModel([tiny(objective="regression"), tiny(objective="regression")])
    with pytest.raises(ValueError, match="at least two"):
        PooledModel([tiny()])
    with pytest.raises(ValueError, match="needs the photo's lightness"):
        PooledModel([tiny(color_space="yuv"), tiny(color_space="yuv")])


def test_shared_runs_the_network_once_per_photo(monkeypatch):
    m = tiny()
    calls = []
    real = m.analyze
    monkeypatch.setattr(m, "analyze", lambda img: calls.append(1) or real(img))
    s = Shared(m)
    pooled = PooledModel([s, s])
    pooled.analyze(PHOTO)
    s.analyze(PHOTO.copy())  # the same pixels again: no new run
    assert len(calls) == 1 and s.temperature == m.temperature
    s.analyze(PHOTO.transpose(Image.FLIP_LEFT_RIGHT))
    assert len(calls) == 2


def test_main_adds_a_row_per_pool(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, img in [("a", data.coffee()), ("b", data.astronaut())]:
        Image.fromarray(img).resize((48, 32)).save(folder / f"{name}.png")
    one, two = tmp_path / "one", tmp_path / "two"
    tiny(0).save_pretrained(one)
    tiny(1).save_pretrained(two)
    runs = []
    real = Colorizer.analyze
    monkeypatch.setattr(Colorizer, "analyze", lambda self, img, *a, **k: runs.append(1) or real(self, img, *a, **k))
    out = tmp_path / "r"
    assert main([str(folder), "--model", f"one={one}", "--pool", f"both={one},{two}", "--pool",
                 f"mix={one},{two}:mixture", "-t", "1", "-o", str(out), "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    for row in ("| one T=1 |", "| both T=1 |", "| mix T=1 |"):
        assert row in printed
    assert len(runs) == 2 * 2  # two networks, two photos: each network once per photo
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["models"]["mix"] == {"objective": "classification", "default_temperature": 0.38,
                                                  "pool": {"rule": "mixture", "members": [str(one), str(two)]}}
    rows = saved["images"][0]["rows"]
    assert rows["both T=1"] != rows["one T=1"]


@pytest.mark.parametrize("args, message", [
    (["--pool", "p=x"], "LABEL=MODEL,MODEL"),
    (["--pool", "p=nowhere1,nowhere2"], "cannot load model 'nowhere1'"),
    (["--baselines-only", "--pool", "p=a,b"], "--baselines-only"),
    (["--model", "p={m}", "--pool", "p={m},{m}"], "two models named 'p'"),
    (["--pool", "p={m},{m}", "--pool", "p={m},{m}:mixture"], "two pools named 'p'"),
])  # fmt: skip
def test_main_pool_errors_are_one_line(tmp_path, capsys, args, message):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(data.coffee()).resize((48, 32)).save(folder / "a.png")
    m = tmp_path / "m"
    tiny().save_pretrained(m)
    args = [a.format(m=m) for a in args]
    assert main([str(folder), "-o", str(tmp_path / "r"), "-q", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
