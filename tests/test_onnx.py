"""ONNX export of the network and ONNX Runtime as the CPU backend: the same outputs as torch
to 1e-4, the same photos within 1 level of 8 bits, cached once per set of weights, and
one-line errors from the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from colorizer import Colorizer
from colorizer.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def models():
    """A tiny classification model (ECCV16) and a tiny regression one (global + local)."""
    torch.manual_seed(0)
    classify = Colorizer(width=0.125, input_size=64).eval()
    regress = Colorizer(width=0.125, input_size=64, objective="regression", network="global_local").eval()
    for m in (classify, regress):  # batch-norm statistics that are not the identity
        for module in m.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return classify, regress


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return [m.export_onnx(folder / f"{i}.onnx") for i, m in enumerate(models)]


def test_the_exported_network_computes_what_torch_does(models, exported):
    from colorizer.onnx_runtime import OnnxRuntimeNetwork

    for model, path in zip(models, exported):
        session = OnnxRuntimeNetwork(path, threads=1)
        for shape in [(1, 1, 64, 64), (3, 1, 48, 80), (1, 1, 200, 96)]:  # batch and sizes other than the export's
            x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 100
            with torch.no_grad():
                ref = model(x)
            got = session(x)
            assert got.shape == ref.shape and got.dtype == torch.float32
            assert (got - ref).abs().max().item() <= 1e-4


def test_colorize_with_onnxruntime_matches_torch_within_one_level(models, tmp_path, monkeypatch):
    monkeypatch.setenv("COLORIZER_CACHE", str(tmp_path / "cache"))
    model = models[0]
    photo = Image.fromarray(data.coffee())
    with_torch = [np.asarray(model.colorize(photo, t), dtype=int) for t in (0.0, 1.0)]
    assert model.use_onnxruntime() is model and model.backend == "onnxruntime"
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    with_ort = [np.asarray(model.colorize(photo, t), dtype=int) for t in (0.0, 1.0)]
    batch = model.colorize_batch([photo, Image.fromarray(data.chelsea())], temperature=1.0)
    model.use_onnxruntime(False)
    assert model.backend == "torch"
    for a, b in zip(with_torch, with_ort):
        assert np.abs(a - b).max() <= 1
    assert np.abs(np.asarray(batch[0], dtype=int) - with_torch[1]).max() <= 1
    # the same weights again use the cached file; changed weights make a new one
    mtime = cached[0].stat().st_mtime_ns
    model.use_onnxruntime()
    assert cached[0].stat().st_mtime_ns == mtime and len(list(cached[0].parent.glob("*.onnx"))) == 1
    changed = Colorizer(width=0.125, input_size=64).eval()
    changed.use_onnxruntime()
    assert len(list(cached[0].parent.glob("*.onnx"))) == 2
    assert not list(cached[0].parent.glob("*.tmp"))  # no half-written exports left


def test_a_wrong_export_is_refused_and_leaves_nothing(models, tmp_path, monkeypatch):
    from colorizer import onnx_runtime

    monkeypatch.setattr(onnx_runtime, "max_difference", lambda model, path: 0.5)
    with pytest.raises(onnx_runtime.OnnxExportError, match="differs from torch by 0.5"):
        models[0].export_onnx(tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_backend(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLORIZER_CACHE", str(tmp_path / "cache"))
    models[0].save_pretrained(tmp_path / "tiny")
    assert main(["export-onnx", "-m", str(tmp_path / "tiny"), str(tmp_path / "out" / "tiny.onnx")]) == 0
    assert (tmp_path / "out" / "tiny.onnx").stat().st_size > 10_000
    assert "checked against torch" in capsys.readouterr().out
    Image.fromarray(data.rocket()).save(tmp_path / "rocket.jpg")
    for backend in ("torch", "onnxruntime"):
        assert main([str(tmp_path / "rocket.jpg"), "-o", str(tmp_path / backend), "-m", str(tmp_path / "tiny"),
                     "--backend", backend, "-q"]) == 0  # fmt: skip
    a, b = (np.asarray(Image.open(tmp_path / d / "rocket.png"), dtype=int) for d in ("torch", "onnxruntime"))
    assert np.abs(a - b).max() <= 1
    # errors: one line each
    capsys.readouterr()
    assert main(["export-onnx", "-m", str(tmp_path / "nowhere"), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("colorizer export-onnx: error: cannot load model")
    (tmp_path / "file").write_text("")
    assert main(["export-onnx", "-m", str(tmp_path / "tiny"), str(tmp_path / "file" / "x.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("colorizer export-onnx: error:")


def test_missing_onnxruntime_is_one_clear_error(models, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'colorizer\[onnx\]'"):
        models[0].use_onnxruntime(path=tmp_path / "x.onnx")


def test_changed_weights_fall_back_to_torch_and_export_leaves_the_model_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORIZER_CACHE", str(tmp_path / "cache"))
    model = Colorizer(width=0.125, input_size=64).train()
    model.export_onnx(tmp_path / "m.onnx")
    assert model.training and model.device.type == "cpu"  # mode and device untouched
    model.eval().use_onnxruntime(path=tmp_path / "m.onnx")
    with torch.no_grad():
        model.net.head.bias.add_(3.0)  # fine-tuned after the export
    with pytest.warns(UserWarning, match="weights changed"):
        out = model.colorize(data.coffee(), 1.0)
    assert model.backend == "torch"
    reference = Colorizer(width=0.125, input_size=64).eval()
    reference.load_state_dict(model.state_dict())
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(reference.colorize(data.coffee(), 1.0), dtype=int)).max() == 0
