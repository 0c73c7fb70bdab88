import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from PIL import Image
from skimage import color, data

from colorizer.metrics import colour_cast  # noqa: E402
from colorizer.model import Colorizer  # noqa: E402
from evaluation import cast_readout as cr  # noqa: E402
from evaluation.evaluate import Photo, _lab

pytestmark = pytest.mark.usefixtures("one_thread")


def striped(vertical: bool, tint: tuple[int, int, int], seed: int, size: int = 24) -> np.ndarray:
    """A photo whose stripes run one way or the other and whose colour is ``tint`` (+ noise)."""
    rng = np.random.default_rng(seed)
    stripes = (np.arange(size) // 3 % 2).astype(np.float32)
    light = np.tile(stripes, (size, 1)) if vertical else np.tile(stripes[:, None], (1, size))
    rgb = np.asarray(tint, np.float32) * (0.6 + 0.4 * light[..., None]) + rng.normal(0, 4, (size, size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """The photo's gray version, as the study feeds its encoders."""
    return cr._truth_and_gray([Photo("x", rgb)])[1][0]


def orientation(gray: np.ndarray) -> dict[str, np.ndarray]:
    """A hand-made encoder: how much the gray photo changes across rows and down columns."""
    g = gray[..., 0].astype(np.float64)
    return {"edges": np.array([np.abs(np.diff(g, axis=1)).mean(), np.abs(np.diff(g, axis=0)).mean(), 1.0])}


def test_mean_ab_is_the_library_lab_mean():
    rgb = np.asarray(Image.fromarray(data.coffee()).resize((60, 40)))
    np.testing.assert_allclose(cr.mean_ab(rgb), color.rgb2lab(rgb)[..., 1:].reshape(-1, 2).mean(axis=0), atol=0.02)


def test_readouts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = x @ rng.normal(size=(5, 2)) + 3.0
    np.testing.assert_allclose(cr.ridge_readout(x, y, x[:4]), y[:4], atol=0.1)  # a linear relation is found
    np.testing.assert_allclose(cr.knn_readout(x, y, x[[7, 9]], 1), y[[7, 9]])  # each photo its own nearest
    np.testing.assert_allclose(cr.knn_readout(x, y, x, 60), np.broadcast_to(y.mean(axis=0), (60, 2)))


def test_a_readable_colour_is_read_and_an_unreadable_one_is_not():
    blue, orange = (60, 110, 200), (220, 130, 40)
    train = [Photo(f"t{i}", striped(i % 2 == 0, blue if i % 2 == 0 else orange, i)) for i in range(16)]
    test = [Photo(f"v{i}", striped(i % 2 == 0, blue if i % 2 == 0 else orange, 100 + i), "g") for i in range(6)]
    rows = {r.name: r for r in cr.cast_readout(train, test, {"orientation": orientation}, k=(1, 16))}
    assert list(rows) == ["gray (ab = 0)", "training photos' mean colour", "orientation edges: ridge",
                          "orientation edges: 1 nearest", "orientation edges: 16 nearest"]
    truth = {p.name: cr.mean_ab(p.rgb) for p in test}
    for name, ab in truth.items():
        assert rows["gray (ab = 0)"].casts[name] == pytest.approx(float(np.hypot(*ab)))
    gray = np.median(list(rows["gray (ab = 0)"].casts.values()))
    for read in ("orientation edges: ridge", "orientation edges: 1 nearest"):  # stripes tell the colour
        assert np.median(list(rows[read].casts.values())) < 0.2 * gray
    # all 16 neighbours: the training mean colour, which no photo has
    np.testing.assert_allclose(list(rows["orientation edges: 16 nearest"].casts.values()),
                               list(rows["training photos' mean colour"].casts.values()))
    assert np.median(list(rows["training photos' mean colour"].casts.values())) > 0.5 * gray
    table = cr.markdown(list(rows.values()), {p.name: p.group for p in test})
    assert "**g** (6 photos)" in table and "| orientation edges: ridge |" in table


def test_a_colorizers_trunk_and_its_own_colorization():
    torch.manual_seed(0)
    model = Colorizer(width=0.125, input_size=32).eval()
    gray = gray_of(np.asarray(Image.fromarray(data.astronaut()).resize((40, 30))))
    assert gray.shape == (30, 40, 3) and (gray[..., 0] == gray[..., 2]).all()
    vec = cr.colorizer_encoder(model)(gray)["trunk"]
    assert vec.shape == (model.net.features(torch.zeros(1, 1, 32, 32))[-1].shape[1],) and np.isfinite(vec).all()
    train = [Photo(f"t{i}", striped(i % 2 == 0, (200, 80, 60), i)) for i in range(6)]
    test = [Photo("v", striped(True, (200, 80, 60), 9))]
    rows = {r.name: r for r in cr.cast_readout(train, test, {}, {"tiny": model})}
    colorized = np.asarray(model.colorize(gray_of(test[0].rgb)).convert("RGB"))

    # the evaluation's own cast of that colorization
    expected = colour_cast(_lab(colorized)[:, 1:], _lab(test[0].rgb)[:, 1:])
    assert rows["tiny: its colorization"].casts["v"] == pytest.approx(expected, abs=1e-4)


def test_a_hypercolumn_colorizer_is_read_by_its_trunk():
    torch.manual_seed(0)
    model = Colorizer(width=0.125, input_size=32, network="hypercolumn", objective="channel_classification").eval()
    gray = gray_of(np.asarray(Image.fromarray(data.coffee()).resize((40, 30))))
    deepest = model.net.trunk.features(torch.zeros(1, 1, 32, 32))[-1].shape[1]
    vec = cr.colorizer_encoder(model)(gray)["trunk"]
    assert vec.shape == (deepest,) and np.isfinite(vec).all()  # the trunk's, not the decoder's, features


def _patch_encoder(path):
    """An ONNX 'encoder': 16 px patches averaged per channel -> (1, 196, 3) tokens; the
    inner map (1, 3, 14, 14) is named 'patches'."""
    w = np.zeros((3, 3, 16, 16), np.float32)
    for c in range(3):
        w[c, c] = 1 / 256
    nodes = [helper.make_node("Conv", ["x", "w"], ["patches"], strides=[16, 16]),
             helper.make_node("Reshape", ["patches", "shape"], ["flat"]),
             helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1])]
    graph = helper.make_graph(
        nodes, "patches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, 196, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 3, 196], np.int64), "shape")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_onnx_encoder_takes_tokens_or_an_inner_map(tmp_path):
    _patch_encoder(tmp_path / "enc.onnx")
    gray = gray_of(np.asarray(Image.fromarray(data.chelsea()).resize((80, 60))))
    small = np.asarray(Image.fromarray(gray).resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
    x = (small - cr.IMAGENET_MEAN) / cr.IMAGENET_STD
    tokens = cr.onnx_encoder(tmp_path / "enc.onnx")(gray)
    np.testing.assert_allclose(tokens["token mean"], x.mean(axis=(0, 1)), atol=1e-4)
    np.testing.assert_allclose(tokens["class token"], x[:16, :16].mean(axis=(0, 1)), atol=1e-4)
    inner = cr.onnx_encoder(tmp_path / "enc.onnx", "patches")(gray)
    assert list(inner) == ["map mean"]
    np.testing.assert_allclose(inner["map mean"], tokens["token mean"], atol=1e-5)


def test_main_writes_tables_and_refuses_a_missing_held_out_photo(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(striped(i % 2 == 0, (60, 110, 200) if i % 2 == 0 else (220, 130, 40), i)).save(photos / "a" / f"{i}.png")
    Image.fromarray(data.camera()[:40, :40]).save(photos / "a" / "gray.png")  # no colour: skipped
    (tmp_path / "held.txt").write_text("# held out\na/0.png\na/1.png\n")
    _patch_encoder(tmp_path / "enc.onnx")
    out = tmp_path / "out"
    args = [str(photos), "--held-out", str(tmp_path / "held.txt"), "--group", "even=a/0.png", "--other-group", "odd",
            "--onnx", f"patches={tmp_path / 'enc.onnx'}:patches", "--k", "1", "--out", str(out), "-q"]
    assert cr.main(args) == 0
    printed = capsys.readouterr().out
    assert "6 training photos (1 gray ones skipped), 2 held out" in printed
    assert "**even** (1 photos)" in printed and "**odd** (1 photos)" in printed and "**all** (2 photos)" in printed
    saved = json.loads((out / "cast_readout.json").read_text())
    assert set(saved["rows"]) == {"gray (ab = 0)", "training photos' mean colour", "patches map mean: ridge",
                                  "patches map mean: 1 nearest"}
    assert saved["groups"] == {"a/0.png": "even", "a/1.png": "odd"} and saved["training_photos"] == 6
    assert (out / "cast_readout.md").read_text().startswith("**even**")

    (tmp_path / "held.txt").write_text("a/0.png\na/missing.png\n")
    assert cr.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 listed photos are not in" in err
