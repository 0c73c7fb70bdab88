import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from huggingface_hub import HfApi, ModelCard
from PIL import Image
from skimage import data

import colorizer
from colorizer import Colorizer, ImageError
from colorizer.color import rgb_to_lab
from colorizer.model import network_size

FILES = {"config.json", "model.safetensors", "README.md"}


def tiny(**kw) -> Colorizer:
    torch.manual_seed(0)
    return Colorizer(width=0.125, input_size=64, **kw).eval()


def _l_of(img: Image.Image) -> torch.Tensor:
    return rgb_to_lab(torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1))[0]


def test_forward_shapes_both_objectives():
    x = torch.rand(2, 1, 64, 48) * 100
    assert tiny()(x).shape == (2, 261, 16, 12)
    assert tiny(objective="regression")(x).shape == (2, 2, 16, 12)
    assert tiny(grid=20)(x).shape == (2, 77, 16, 12)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        tiny()(torch.rand(2, 3, 64, 64))


def test_config_validation():
    with pytest.raises(ValueError, match="objective"):
        Colorizer(objective="gan")
    with pytest.raises(ValueError, match="prior must be 261"):
        Colorizer(width=0.125, prior=[1.0, 2.0])


def test_save_load_round_trip_is_identical(tmp_path):
    prior = np.random.default_rng(0).random(261)
    model = tiny(prior=(prior / prior.sum()).tolist(), temperature=0.2, lam=0.3)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == FILES
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["width"] == 0.125 and config["temperature"] == 0.2 and len(config["prior"]) == 261
    loaded = Colorizer.from_pretrained(tmp_path)
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = torch.rand(1, 1, 64, 64) * 100
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    img = data.coffee()
    assert np.array_equal(np.asarray(model.colorize(img)), np.asarray(loaded.colorize(img)))
    assert loaded.temperature == 0.2


def test_loading_is_strict(tmp_path):
    tiny().save_pretrained(tmp_path)
    weights = safetensors.torch.load_file(tmp_path / "model.safetensors")
    weights.pop("class_weights")
    safetensors.torch.save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="Missing key.*class_weights"):
        Colorizer.from_pretrained(tmp_path)


def test_no_pickle_checkpoints(tmp_path):
    tiny().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Colorizer.from_pretrained(tmp_path)


def test_from_pretrained_by_repo_id_through_the_hub_cache(tmp_path):
    """A Hub repo id resolves through huggingface_hub's real cache layout, offline."""
    model = tiny(temperature=0.3)
    snapshot = tmp_path / "models--someone--colorizer-tiny" / "snapshots" / ("a" * 40)
    model.save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    loaded = Colorizer.from_pretrained("someone/colorizer-tiny", cache_dir=tmp_path, local_files_only=True)
    assert loaded.temperature == 0.3
    assert torch.equal(loaded.net.head.weight, model.net.head.weight)


def test_push_to_hub_uploads_weights_config_and_card(tmp_path, monkeypatch):
    uploaded = tmp_path / "uploaded"

    def create_repo(self, repo_id, **kw):
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        shutil.copytree(folder_path, uploaded)
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    url = tiny().push_to_hub("someone/colorizer-test", model_card_kwargs={"results": "| AuC | 0.9 |"})
    assert url.startswith("https://huggingface.co/someone/colorizer-test")
    assert {p.name for p in uploaded.iterdir()} == FILES
    card = ModelCard.load(uploaded / "README.md")
    assert card.data.library_name == "colorizer"
    assert card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "mit"
    assert "image-colorization" in card.data.tags
    assert "auc" in card.data.metrics
    assert "| AuC | 0.9 |" in card.text and "parameters" in card.text


def test_default_model_loads_with_no_argument_and_by_name():
    assert "default" in colorizer.available_models()
    a, b = Colorizer.from_pretrained(), Colorizer.from_pretrained("default")
    assert torch.equal(a.net.head.weight, b.net.head.weight)
    assert a.has_pretrained_trunk and a.net.trunk_network == "dinov2-small"


def test_the_default_tunes_the_encoders_last_blocks_and_its_frozen_start_is_shipped():
    """The default's blocks 9-12 are its own (stored in float16, loaded as float32); the model it
    was fine-tuned from (``dinov2-frozen``) reads the package's encoder alone."""
    from colorizer.dinov2 import build_dinov2

    tuned, frozen = Colorizer.from_pretrained("default"), Colorizer.from_pretrained("dinov2-frozen")
    assert tuned.settings["trunk_tune"] == 4 and not frozen.settings.get("trunk_tune")
    package = build_dinov2().encoder.layer
    ours, theirs = tuned.net.trunk.encoder.encoder.layer, frozen.net.trunk.encoder.encoder.layer
    assert torch.equal(ours[7].mlp.fc1.weight, package[7].mlp.fc1.weight)
    assert not torch.equal(ours[11].mlp.fc1.weight, package[11].mlp.fc1.weight)
    assert ours[11].mlp.fc1.weight.dtype == torch.float32
    assert torch.equal(theirs[11].mlp.fc1.weight, package[11].mlp.fc1.weight)


def test_the_model_the_pretrained_trunk_replaced_loads_by_its_name():
    assert set(colorizer.available_models()) >= {"default", "hypercolumn-eccv16"}
    previous = Colorizer.from_pretrained("hypercolumn-eccv16")
    assert previous.network == "hypercolumn" and previous.net.trunk_network == "eccv16"
    assert not previous.has_pretrained_trunk
    assert previous.colorize(data.chelsea()).size == (451, 300)


@pytest.mark.parametrize("photo", [data.astronaut, data.chelsea])
def test_colorize_keeps_full_resolution_l(photo):
    gray = Image.fromarray(photo()).convert("L")
    out = tiny().colorize(gray)
    assert out.size == gray.size and out.mode == "RGB"
    l_in = _l_of(gray)
    diff = (l_in - _l_of(out)).abs()
    assert diff.max() < 1.0 and diff.mean() < 0.3  # 8-bit quantization only


def test_colour_input_is_colorized_from_its_l():
    from colorizer.color import clip_chroma, lab_to_rgb

    model = tiny()
    rgb = data.coffee()
    out = model.colorize(rgb)
    assert (_l_of(Image.fromarray(rgb)) - _l_of(out)).abs().max() < 1.0
    # same L, other colours (ab rotated by 90 degrees): the prediction must not change
    lab = rgb_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)).double()
    lab[1], lab[2] = -lab[2].clone(), lab[1].clone()
    recoloured = (lab_to_rgb(clip_chroma(lab[None]))[0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(recoloured.astype(int) - rgb).mean() > 20  # really other colours
    # what the network sees, L at full resolution, is the same up to 8-bit rounding
    a = model.analyze(rgb).lightness.l
    b = model.analyze(recoloured).lightness.l
    other = model.analyze(Image.fromarray(data.astronaut()).resize((600, 400))).lightness.l
    assert (a - b).abs().max() < 1.0 and (a - other).abs().mean() > 10


def test_alpha_is_kept():
    rgba = np.dstack([data.chelsea(), np.linspace(0, 255, 451 * 300).astype(np.uint8).reshape(300, 451)])
    out = tiny().colorize(Image.fromarray(rgba))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], rgba[..., 3])
    la = Image.fromarray(rgba).convert("LA")
    assert tiny().colorize(la).mode == "RGBA"


def test_temperature_and_prediction_reuse():
    model = tiny()
    img = data.astronaut()
    pred = model.analyze(img)
    assert np.array_equal(np.asarray(pred.render(0.1)), np.asarray(model.colorize(img, temperature=0.1)))
    assert not np.array_equal(np.asarray(pred.render(0.05)), np.asarray(pred.render(1.0)))
    with pytest.warns(DeprecationWarning, match="Prediction.render"):  # the old name still renders
        assert np.array_equal(np.asarray(pred.colorize(0.1)), np.asarray(pred.render(0.1)))
    u = pred.uncertainty()
    assert u.shape == (512, 512) and 0.0 <= u.min() <= u.max() <= 1.0
    out, u2 = model.colorize(img, return_uncertainty=True)
    assert np.array_equal(u, u2)


def test_colorize_batch_equals_one_by_one():
    model = tiny()
    imgs = [data.astronaut(), data.coffee(), data.chelsea(), data.astronaut()[:200]]
    batch = model.colorize_batch(imgs, temperature=0.38, batch_size=2)
    for img, out in zip(imgs, batch):
        assert np.array_equal(np.asarray(out), np.asarray(model.colorize(img, temperature=0.38)))


def test_regression_model_colorizes():
    out = tiny(objective="regression").colorize(data.coffee())
    assert out.size == (600, 400)


def test_rebalancing_defaults_per_objective():
    assert tiny().rebalance and not tiny(objective="regression").rebalance
    assert tiny(objective="regression", rebalance=True).rebalance


def test_per_channel_classes_are_rebalanced_by_lambda():
    """The hypercolumn default's loss: lambda and rebalance change it (they once did not)."""
    q = len(tiny().prior)
    prior = torch.linspace(1.0, 50.0, q)  # far from uniform: the weights differ by bin
    kw = dict(objective="channel_classification", prior=prior.tolist())
    assert tiny(objective="channel_classification").rebalance
    logits = torch.randn(2, 128, 4, 4, generator=torch.Generator().manual_seed(1))
    ab = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(2)) * 40
    strong, mild, off = (tiny(lam=0.5, **kw).loss(logits, ab), tiny(lam=0.9, **kw).loss(logits, ab),
                         tiny(rebalance=False, **kw).loss(logits, ab))
    assert len({round(float(x), 5) for x in (strong, mild, off)}) == 3
    assert float(tiny(lam=1.0, **kw).loss(logits, ab)) == pytest.approx(float(off), rel=1e-6)  # lambda 1: uniform


def test_network_size_keeps_aspect_and_area():
    h, w = network_size(3000, 4000, 256)
    assert h % 8 == 0 and w % 8 == 0 and abs(w / h - 4 / 3) < 0.05 and abs(h * w / 256**2 - 1) < 0.05
    assert network_size(3, 5000, 256) == (128, 512)  # aspect clamped to 4
    assert network_size(1, 1, 256) == (256, 256)


@pytest.mark.parametrize("size", [(1, 1), (3, 5000), (5000, 3)])
def test_extreme_shapes(size):
    w, h = size
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8))
    out = tiny().colorize(img)
    assert out.size == (w, h)


def test_module_level_colorize_uses_the_default_model():
    photo = data.chelsea()
    out = colorizer.colorize(photo, temperature=0.5)
    assert out.size == (451, 300)
    expected = Colorizer.from_pretrained().colorize(photo, temperature=0.5)
    assert np.array_equal(np.asarray(out), np.asarray(expected))  # the default, not another model
    assert np.array_equal(np.asarray(colorizer.colorize(photo)), np.asarray(Colorizer.from_pretrained().colorize(photo)))


def test_weights_file_resolves_like_from_pretrained(tmp_path):
    from colorizer.model import resolve_model, weights_file

    assert weights_file().parent == weights_file("default").parent
    assert resolve_model() == str(weights_file().parent)
    tiny().save_pretrained(tmp_path / "m")
    assert weights_file(tmp_path / "m") == tmp_path / "m" / "model.safetensors"
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        weights_file(tmp_path / "m")


def test_a_folder_named_like_a_shipped_model_does_not_shadow_it(tmp_path, monkeypatch):
    from colorizer.model import resolve_model

    shipped = resolve_model("default")
    monkeypatch.chdir(tmp_path)
    tiny().save_pretrained(tmp_path / "default")
    assert resolve_model("default") == shipped
    assert Path(resolve_model("./default")).resolve() == (tmp_path / "default").resolve()
    assert Colorizer.from_pretrained("./default").network == "eccv16"  # the folder here, written as a path
    assert Colorizer.from_pretrained("default").network == "hypercolumn"  # the shipped one
    with pytest.raises(ValueError, match="no model named 'trunks'"):
        resolve_model("trunks")  # the pretrained encoders' folder is not a model


def test_global_local_network_option_round_trips_and_colorizes_any_shape(tmp_path):
    torch.manual_seed(0)
    model = Colorizer(width=0.125, grid=20.0, input_size=64, network="global_local").eval()
    assert type(model.net).__name__ == "GlobalLocal"
    for h, w in [(40, 120), (90, 30)]:
        out = model.colorize(np.full((h, w, 3), 90, np.uint8))
        assert out.size == (w, h)
    model.save_pretrained(tmp_path / "gl")
    assert json.loads((tmp_path / "gl" / "config.json").read_text())["network"] == "global_local"
    again = Colorizer.from_pretrained(str(tmp_path / "gl")).eval()
    x = torch.rand(1, 1, 64, 96) * 100
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="network must be one of"):
        Colorizer(network="vgg")


def test_a_name_that_cannot_be_a_model_fails_at_once_with_the_shipped_names(tmp_path, monkeypatch):
    """A typo is not sent to the Hub: it fails at once, naming the shipped models; a path that
    is not a folder says so; a Hub id that cannot be loaded is one line saying how to work offline."""
    import time

    import huggingface_hub.constants

    from colorizer.model import available_models

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="no model named 'defualt' \\(did you mean 'default'\\?\\)") as e:
        Colorizer.from_pretrained("defualt")
    assert all(name in str(e.value) for name in available_models())
    for path in ("./no_such_folder/model", str(tmp_path / "missing"), "runs/x/model", "~/no/such/folder"):
        with pytest.raises(FileNotFoundError, match="no such model folder"):
            Colorizer.from_pretrained(path)
    assert time.monotonic() - t0 < 2.0  # no network, no retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not load it from the Hugging Face Hub") as e:
        Colorizer.from_pretrained("someone/not-downloaded", cache_dir=tmp_path)
    assert "\n" not in str(e.value) and "HF_HUB_OFFLINE" in str(e.value)


def test_colorize_batch_can_return_the_good_results_and_the_failures(tmp_path):
    model = tiny()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    images = [data.chelsea(), str(bad), data.coffee()]
    with pytest.raises(ImageError, match="broken.jpg"):
        model.colorize_batch(images)
    out = model.colorize_batch(images, temperature=0.5, errors="return", batch_size=2)
    assert isinstance(out[1], ImageError) and "broken.jpg" in str(out[1])
    alone = [model.colorize(x, temperature=0.5) for x in (data.chelsea(), data.coffee())]
    for got, want in zip((out[0], out[2]), alone):
        assert np.abs(np.asarray(got, np.int16) - np.asarray(want, np.int16)).max() <= 1
    for one in (str(bad), data.chelsea(), Image.fromarray(data.chelsea())):
        with pytest.raises(TypeError, match="use colorize\\(\\) for one photo"):
            model.colorize_batch(one)
    with pytest.raises(ValueError, match="temperature"):
        model.colorize_batch([data.chelsea()], temperature="hot")


@pytest.mark.parametrize(
    "change,file,message",
    [
        (lambda f: (f / "config.json").write_text("{not json"), "config.json", "not readable JSON"),
        (lambda f: (f / "config.json").write_text("[1, 2]"), "config.json", "must hold a JSON object"),
        (lambda f: (f / "config.json").write_text("{}"), "config.json", "(empty)"),
        (lambda f: (f / "config.json").unlink(), "config.json", "no such file"),
        ("temperature=hot", "config.json", "temperature must be a number"),
        ("temperature=5.0", "config.json", "temperature must be in \\[0, 1\\]"),
        ("colour=red", "config.json", "unknown setting\\(s\\) colour"),
        ("width=0.25", "model.safetensors", "do not fit config.json \\(size mismatch for"),
        ("nan", "model.safetensors", "tensor net\\..* holds NaN or infinite values"),
        # unusable weights and configs (issue 30): once loaded silently (gray photos) or allocated gigabytes
        ("int8", "model.safetensors", "tensor \\S+ is stored as I8, expected floating point"),
        ("bool", "model.safetensors", "tensor \\S+ is stored as BOOL, expected floating point"),
        ("3e38", "model.safetensors", "tensor net\\..* holds values up to 3e\\+38, beyond the 1e\\+06"),
        (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64), "model.safetensors",
         "not a readable safetensors file"),
        ("width=5", "config.json", "width must be a number in \\(0, 2\\], got 5"),
        ("width=1000", "config.json", "width must be a number in \\(0, 2\\], got 1000"),
        ('width="0.125"', "config.json", "width must be a number .*got str '0.125'"),
        ("input_size=200000", "config.json", "input_size must be a whole number in \\[16, 2048\\], got 200000"),
        ("input_size=64.0", "config.json", "input_size must be a whole number .*got float 64.0"),
        ("grid=0.01", "config.json", "grid must be a number in \\[2, 110\\]"),
        ("channel_bins=1000000", "config.json", "channel_bins must be a whole number in \\[2, 1024\\]"),
        ("l_norm=0", "config.json", "l_norm must be a number in \\(0, 1000\\], got 0"),
        ("trunk_size=200000", "config.json", "trunk_size must be a whole number in \\[14, 1024\\]"),
    ],
)
def test_a_broken_model_folder_is_one_line_naming_the_file(tmp_path, change, file, message):
    tiny().save_pretrained(tmp_path / "m")
    folder = tmp_path / "m"
    if change in ("nan", "int8", "bool", "3e38"):
        weights = safetensors.torch.load_file(str(folder / "model.safetensors"))
        name = next(k for k, v in weights.items() if v.is_floating_point() and k.startswith("net."))
        if change in ("nan", "3e38"):
            weights[name][0] = float(change)
        else:  # the right names and shapes, the wrong type
            weights = {k: (v.round().to(getattr(torch, change)) if v.is_floating_point() else v)
                       for k, v in weights.items()}
        safetensors.torch.save_file(weights, str(folder / "model.safetensors"))
    elif isinstance(change, str):
        key, value = change.split("=")
        config = json.loads((folder / "config.json").read_text())
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word: the string itself
            config[key] = value
        (folder / "config.json").write_text(json.dumps(config))
    else:
        change(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
        Colorizer.from_pretrained(str(folder))
    assert str(folder / file) in str(e.value) and "\n" not in str(e.value)


def test_saving_a_loaded_model_keeps_its_card_and_the_users_umask(tmp_path):
    import os
    import stat

    shipped = Colorizer.from_pretrained("default")
    old = os.umask(0o022)
    try:
        shipped.save_pretrained(tmp_path / "copy")
    finally:
        os.umask(old)
    card = (tmp_path / "copy" / "README.md").read_text()
    assert card == (Path(colorizer.__file__).parent / "pretrained" / "default" / "README.md").read_text()
    assert "No evaluation results" not in card
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((tmp_path / "copy" / name).stat().st_mode) == 0o644, name
    again = Colorizer.from_pretrained(str(tmp_path / "copy"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), shipped.state_dict().values()))


def test_push_to_hub_without_the_hub_is_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not upload to the Hugging Face Hub") as e:
        tiny().push_to_hub("someone/colorizer-test")
    assert "\n" not in str(e.value) and "token" in str(e.value)


def test_yuv_and_rgb_outputs_become_ab_with_the_photos_own_lightness():
    """decode: an RGB model's output is its colour's ab (its own L dropped); a YUV model's UV
    joins the gray photo's luma. The truth's own RGB gives back the truth's ab exactly; its
    own UV comes close (luma is not CIE L, so a coloured pixel's luma differs from its gray's)."""
    from colorizer.color import rgb_to_lab, rgb_to_yuv

    rgb = torch.from_numpy(data.astronaut()[::16, ::16].copy()).permute(2, 0, 1)[None].float() / 255  # (1, 3, 32, 32)
    lab = rgb_to_lab(rgb)
    l, ab = lab[:, :1], lab[:, 1:]
    as_rgb = Colorizer(width=0.125, objective="regression", color_space="rgb")
    torch.testing.assert_close(as_rgb.decode(rgb, lightness=l), ab, atol=1e-3, rtol=0)
    as_yuv = Colorizer(width=0.125, objective="regression", color_space="yuv")
    err = (as_yuv.decode(rgb_to_yuv(rgb)[:, 1:], lightness=l) - ab).norm(dim=1)
    assert err.median() < 6.0, err.median()
    with pytest.raises(ValueError, match="needs the lightness"):
        as_yuv.decode(rgb_to_yuv(rgb)[:, 1:])
    with pytest.raises(ValueError, match="rgb. is regression only"):
        Colorizer(width=0.125, color_space="rgb")
    with pytest.raises(ValueError, match="per-channel classes are over a and b"):
        Colorizer(width=0.125, objective="channel_classification", color_space="yuv")
    with pytest.raises(ValueError, match="cheng15' regresses colour"):
        Colorizer(width=0.125, network="cheng15")
    with pytest.raises(ValueError, match="color_space must be one of"):
        Colorizer(width=0.125, objective="regression", color_space="hsv")


def test_uv_bin_classification_decodes_and_learns_in_uv():
    """Classification over uv bins (Champati et al.): the bins are the scaled uv plane's,
    certain logits on the bin of each pixel's true uv decode (T = 0) to about its ab with
    the photo's L, and the loss is lower for those logits than for the wrong ones."""
    from colorizer.bins import nearest_bin, rgb_to_chroma
    from colorizer.color import rgb_to_lab

    rgb = torch.from_numpy(data.astronaut()[::16, ::16].copy()).permute(2, 0, 1)[None].float() / 255  # (1, 3, 32, 32)
    lab = rgb_to_lab(rgb)
    l, ab = lab[:, :1], lab[:, 1:]
    model = Colorizer(width=0.125, grid=20, color_space="yuv")
    assert model.num_bins == 81 and model.needs_lightness
    idx = nearest_bin(rgb_to_chroma(rgb, "yuv"), model.bin_centers)  # (1, 32, 32)
    right = F.one_hot(idx, 81).permute(0, 3, 1, 2).float() * 30
    err = (model.decode(right, temperature=0, lightness=l) - ab).norm(dim=1)
    assert err.median() < 12.0, err.median()  # a bin is 20 scaled-uv units: about 12 ab units at most
    with pytest.raises(ValueError, match="needs the lightness"):
        model.decode(right)
    wrong = right.roll(7, dims=1)
    up = F.interpolate(l, scale_factor=4)
    big_ab = F.interpolate(ab, scale_factor=4)
    assert model.loss(right, big_ab, lightness=up) < 0.5 * model.loss(wrong, big_ab, lightness=up)


@pytest.mark.parametrize("kind", [{}, {"objective": "channel_classification"}, {"color_space": "yuv", "grid": 20}])
def test_tiny_temperatures_colour_as_the_mode(kind):
    """T in (0, tiny] (1e-40, the float32 and float64 extremes) decodes as T -> 0 for every
    decoding path (joint ab bins, per-channel classes, uv bins), through the API: once 97%
    of the colours became NaN, then gray."""
    model = tiny(**kind)
    photo = data.coffee()[::4, ::4]
    pred = model.analyze(photo)
    mode = np.asarray(pred.render(0.0))
    for t in (1e-40, float(np.finfo(np.float32).smallest_subnormal), 1e-310, 5e-324):
        assert torch.isfinite(pred.ab(t)).all(), t
        assert np.array_equal(np.asarray(pred.render(t)), mode), t
    assert np.array_equal(np.asarray(model.colorize(photo, temperature=5e-324)), mode)
    assert np.array_equal(np.asarray(model.colorize_batch([photo], temperature=1e-40)[0]), mode)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda m, p: m.colorize_batch([p], batch_size=-1), ValueError, r"batch_size must be .* photos >= 1, got -1"),
        (lambda m, p: m.colorize_batch([p], batch_size=0), ValueError, r"batch_size must be a whole number .*, got 0"),
        (lambda m, p: m.analyze_batch([p], batch_size=True), TypeError, r"batch_size must be a whole number.*bool"),
        (lambda m, p: colorizer.colorize_batch([p], model=m, batch_size=2.5), TypeError, r"batch_size .*float 2.5"),
        (lambda m, p: m.colorize(p, max_pixels="10"), TypeError, r"max_pixels must be a whole number.*str '10'"),
        (lambda m, p: m.colorize(p, max_pixels=0), ValueError, r"max_pixels .* or None \(no limit\), got 0"),
        (lambda m, p: m.colorize_batch([p], max_pixels=-5, errors="return"), ValueError, r"max_pixels .* got -5"),
        (lambda m, p: m.analyze_batch(p), TypeError, r"analyze_batch takes a list of images.*use analyze\(\)"),
        (lambda m, p: colorizer.colorize(p, model=123), TypeError, r"model must be .* or a Colorizer, got int 123"),
        (lambda m, p: colorizer.colorize_batch([p], model=None), TypeError, r"model must be .*got NoneType"),
        (lambda m, p: Colorizer.from_pretrained(""), ValueError, r"model: the name is empty \(''\).*\"\.\" for this"),
        (lambda m, p: Colorizer.from_pretrained("  "), ValueError, r"the name is empty"),
        (lambda m, p: Colorizer.from_pretrained(3), TypeError, r"model: expected .*got int"),
    ],
)
def test_each_public_argument_is_checked_at_the_boundary(call, error, message, tmp_path, monkeypatch):
    """Bad batch sizes, pixel limits and models are one line naming the argument and what it
    takes (once: [] for batch_size=-1, "range() arg 3 must not be zero", a str/int comparison,
    an AttributeError, and "" loading the current folder)."""
    tiny().save_pretrained(tmp_path)  # a model in the current folder, which "" must not load
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as e:
        call(tiny(), data.camera()[::8, ::8])
    assert "\n" not in str(e.value) and not isinstance(e.value, ImageError)
    assert len(tiny().colorize_batch([data.camera()[::8, ::8]] * 3, batch_size=np.int64(2), max_pixels=10**6)) == 3


def test_weights_saved_under_an_earlier_tensor_name_still_load(tmp_path):
    """``channel_centres`` (earlier files, the shipped ones among them) loads as ``channel_centers``."""
    model = tiny(objective="channel_classification", channel_bins=8)
    model.save_pretrained(tmp_path)
    weights = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert "channel_centers" in weights
    weights["channel_centres"] = weights.pop("channel_centers")
    safetensors.torch.save_file(weights, tmp_path / "model.safetensors")
    loaded = Colorizer.from_pretrained(str(tmp_path))
    assert torch.equal(loaded.channel_centers, model.channel_centers)
    img = data.coffee()[::4, ::4]
    assert np.array_equal(np.asarray(loaded.colorize(img)), np.asarray(model.colorize(img)))
