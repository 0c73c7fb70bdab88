"""Cached trunk features (train.features): the cache, its batches, and training from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from colorizer.model import Colorizer
from tests.training_helpers import folder, tiny  # noqa: F401 - the fixture
from train.config import TrainConfig
from train.features import CachedBatches, FeatureCache, build_cache, cache_meta, main as features_main
from colorizer.dinov2 import build_dinov2
from train.loop import to_lab, train

pytestmark = pytest.mark.usefixtures("one_thread")


def dino(folder, tmp_path, **kw) -> TrainConfig:
    settings = dict(network="hypercolumn", trunk="dinov2-small", trunk_size=56, objective="channel_classification",
                    features=str(tmp_path / "cache"), feature_crops=20, input_size=64, width=0.25)
    settings.update(kw)
    return tiny(folder, tmp_path, **settings)


@pytest.fixture(scope="module")
def cache(folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = dino(folder, tmp)
    build_cache(cfg)
    return cfg


def test_cache_holds_the_trunks_features_of_its_crops(cache):
    store = FeatureCache(cache.features, expect=cache_meta(cache))
    assert len(store) == 20
    rgb, maps, cls = store.batch(np.array([0, 7, 19]))
    assert rgb.shape == (3, 32, 32, 3) and rgb.dtype == torch.uint8
    assert len(maps) == 3 and all(m.shape == (3, 384, 4, 4) for m in maps) and cls.shape == (3, 384)
    # what the trunk computes of those crops now, to float16's precision
    model = Colorizer(objective="channel_classification", network="hypercolumn", trunk="dinov2-small",
                      trunk_size=56, width=0.25)
    with torch.no_grad():
        again, cls_again = model.net.trunk(to_lab(rgb)[0])
    for m, n in zip(maps, again):
        assert (m - n).abs().max() <= 2e-3 * n.abs().max()
    assert (cls - cls_again).abs().max() <= 2e-3 * cls_again.abs().max()


def test_cache_grows_on_and_refuses_other_settings(cache):
    import dataclasses

    more = dataclasses.replace(cache, feature_crops=26)
    build_cache(more)
    assert len(FeatureCache(cache.features)) >= 26
    with pytest.raises(ValueError, match="trunk_size"):
        build_cache(dataclasses.replace(cache, trunk_size=70))
    with pytest.raises(ValueError, match="trunk_size 56 \\(this run: 70\\)"):
        FeatureCache(cache.features, expect=cache_meta(dataclasses.replace(cache, trunk_size=70)))


def test_cached_batches_cover_each_pass_and_resume_exactly(cache):
    store = FeatureCache(cache.features)
    cfg = TrainConfig(batch_size=4, seed=3)
    batches = CachedBatches(store, cfg)
    seen = [next(batches)[0] for _ in range(len(store) // 4)]  # one pass
    flat = torch.cat(seen).view(len(seen) * 4, -1)
    assert len({bytes(row.numpy()) for row in flat}) == len(flat)  # no crop twice in a pass
    state = batches.state_dict()
    following = [next(batches)[0] for _ in range(3)]
    resumed = CachedBatches(store, cfg, state=state)
    assert all(torch.equal(a, next(resumed)[0]) for a in following)


def test_training_from_the_cache_saves_a_loadable_model_of_the_decoder(cache, tmp_path):
    import dataclasses

    cfg = dataclasses.replace(cache, out=str(tmp_path / "run"), max_steps=6, lr=3e-3)
    figures = train(cfg)
    assert "val_auc" in figures
    model = Colorizer.from_pretrained(tmp_path / "run" / "model")
    assert model.has_pretrained_trunk and model.net.trunk.trunk_size == 56
    assert len((tmp_path / "run" / "log.csv").read_text().splitlines()) == 1 + 6  # header, a row a step
    saved = (tmp_path / "run" / "model" / "model.safetensors").stat().st_size
    assert saved < 4_000_000  # the decoder alone; the encoder's 44 MB are the package's file


def test_tuned_blocks_train_from_class_tokens_the_cache_adds(cache, tmp_path):
    """--trunk-tune 4: the cache gets block 8's class tokens (from its crops), batches carry
    block 8's whole tokens, and training moves blocks 9-12 alone, which the model then saves."""
    import dataclasses

    tune = dataclasses.replace(cache, trunk_tune=4, out=str(tmp_path / "run"), max_steps=4, lr=3e-3)
    with pytest.raises(ValueError, match="no class tokens of block 8.*--trunk-tune 4"):
        FeatureCache(cache.features, start_block=8)
    build_cache(tune)
    store = FeatureCache(cache.features, expect=cache_meta(tune), start_block=8)
    rgb, maps, cls, start = store.batch(np.array([1, 5]))
    assert start.shape == (2, 1 + 16, 384)
    assert torch.equal(start[:, 1:].transpose(1, 2).reshape(2, 384, 4, 4), maps[1])
    model = Colorizer(objective="channel_classification", network="hypercolumn", trunk="dinov2-small",
                      trunk_size=56, width=0.25, trunk_tune=4)
    trunk = model.net.trunk
    with torch.no_grad():
        l = to_lab(rgb)[0]
        again = trunk.tokens(trunk.pixels(trunk.resize(l)), 8)
        assert (start[:, 0] - again[:, 0]).abs().max() <= 2e-3 * again[:, 0].abs().max()
        retuned, cls_again = trunk.retune(maps, start)
    assert (cls_again - cls).abs().max() <= 1e-2 * cls.abs().max()  # block 12 from cached block 8: float16's error
    train(tune)
    saved = Colorizer.from_pretrained(tmp_path / "run" / "model")
    package = build_dinov2()
    assert saved.settings["trunk_tune"] == 4
    layers, ours = package.encoder.layer, saved.net.trunk.encoder.encoder.layer
    assert torch.equal(ours[7].mlp.fc1.weight, layers[7].mlp.fc1.weight)  # frozen: the package's
    assert not torch.equal(ours[11].mlp.fc1.weight, layers[11].mlp.fc1.weight)  # tuned, saved and loaded
    assert (tmp_path / "run" / "model" / "model.safetensors").stat().st_size > 4 * 4 * 1_700_000
    # resumed with another --trunk-lr: the tuned blocks as trained, the groups at this run's scale
    from train import loop

    run = loop.setup(dataclasses.replace(tune, max_steps=6, resume=True, trunk_lr=0.5))
    assert run.step == 4 and [g["lr_scale"] for g in run.optimizer.param_groups] == [1.0, 1.0, 0.5, 0.5]
    trunk = run.raw.net.trunk
    assert torch.equal(trunk.encoder.encoder.layer[11].mlp.fc1.weight, ours[11].mlp.fc1.weight)
    trainable = {n for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in trunk.named_parameters() if n.startswith(
        tuple(f"encoder.encoder.layer.{i}." for i in range(8, 12)) + ("encoder.layernorm.",))}


def test_new_shards_get_class_tokens_from_the_same_pass_and_shards_without_them_are_named(folder, tmp_path, caplog):
    """A cache grown with --trunk-tune writes block 8's class tokens with each new shard (from the
    encoder's one pass); one grown without them after that is left out, with a warning that says so."""
    import dataclasses

    frozen = dino(folder, tmp_path, feature_crops=4)
    tune = dataclasses.replace(frozen, trunk_tune=4, feature_crops=8)
    build_cache(frozen)
    build_cache(tune)  # the first shard gets its class tokens added, the second is written with them
    build_cache(dataclasses.replace(frozen, feature_crops=12))  # a third without them
    assert len(FeatureCache(frozen.features)) == 12
    with caplog.at_level("WARNING", logger="train.features"):
        store = FeatureCache(frozen.features, start_block=8)
    assert len(store) == 8 and "2 of its 3 shards hold class tokens of block 8" in caplog.text
    model = Colorizer(objective="channel_classification", network="hypercolumn", trunk="dinov2-small",
                      trunk_size=56, width=0.25, trunk_tune=4)
    trunk = model.net.trunk
    rgb, maps, cls, start = store.batch(np.arange(8))
    with torch.no_grad():
        l = to_lab(rgb)[0]
        again = trunk.tokens(trunk.pixels(trunk.resize(l)), 8)
        maps_again, cls_again, first = trunk.encode_from(l, 8)
        plain_maps, plain_cls = trunk(l)
    assert torch.equal(first, again[:, 0]) and torch.equal(cls_again, plain_cls)
    assert all(torch.equal(a, b) for a, b in zip(maps_again, plain_maps))
    assert (start[:, 0] - again[:, 0]).abs().max() <= 2e-3 * again[:, 0].abs().max()  # both shards' tokens
    assert (cls - cls_again).abs().max() <= 2e-3 * cls_again.abs().max()


@pytest.mark.parametrize("objective", ["channel_classification", "classification"])
def test_a_tuned_run_starts_from_a_frozen_model_but_not_the_reverse(tmp_path, objective):
    """From a model of the same head (its decoder too) or of another (Zhang's joint bins: the
    decoder starts fresh), the trunk's tuned blocks begin as the start's, or as the package's."""
    from train.loop import init_weights

    settings = dict(objective="channel_classification", network="hypercolumn", trunk="dinov2-small", trunk_size=56,
                    width=0.25)
    frozen, tuned = Colorizer(**settings), Colorizer(**settings, trunk_tune=4)
    with torch.no_grad():
        frozen.net.head.bias.add_(1.0)
        tuned.net.trunk.encoder.encoder.layer[10].mlp.fc2.bias.add_(1.0)
    frozen.save_pretrained(tmp_path / "frozen")
    tuned.save_pretrained(tmp_path / "tuned")
    run = {**settings, "objective": objective}
    model = Colorizer(**run, trunk_tune=4)
    init_weights(model, str(tmp_path / "frozen"))  # blocks 9-12 begin as the package's
    if objective == settings["objective"]:
        assert torch.equal(model.net.head.bias, frozen.net.head.bias)
    assert torch.equal(model.net.trunk.encoder.encoder.layer[10].mlp.fc2.bias,
                       frozen.net.trunk.encoder.encoder.layer[10].mlp.fc2.bias)
    init_weights(model, str(tmp_path / "tuned"))
    assert torch.equal(model.net.trunk.encoder.encoder.layer[10].mlp.fc2.bias,
                       tuned.net.trunk.encoder.encoder.layer[10].mlp.fc2.bias)
    with pytest.raises(ValueError, match="its trunk_tune is 4, this run's 0"):
        init_weights(Colorizer(**run), str(tmp_path / "tuned"))


def test_features_command_turns_errors_into_one_line(tmp_path, capsys):
    assert features_main(["--data-dir", str(tmp_path), "--trunk", "eccv16", "--network", "hypercolumn",
                          "--features", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.features: error:")


def test_features_need_the_pretrained_trunk(folder, tmp_path):
    with pytest.raises(ValueError, match="--features holds the pretrained trunk's features"):
        tiny(folder, tmp_path, features=str(tmp_path / "c"))


def test_processes_share_a_pass_and_a_photo_stream_position_is_refused(cache):
    store = FeatureCache(cache.features)
    cfg = TrainConfig(batch_size=2, seed=1)
    first, second = CachedBatches(store, cfg, 0, 2), CachedBatches(store, cfg, 1, 2)
    a = torch.cat([next(first)[0] for _ in range(3)]).view(6, -1)
    b = torch.cat([next(second)[0] for _ in range(3)]).view(6, -1)
    assert not ({bytes(r.numpy()) for r in a} & {bytes(r.numpy()) for r in b})  # no crop read by both
    with pytest.raises(ValueError, match="photos read from --data-dir"):
        CachedBatches(store, cfg, state={"batches": 3, "slots": 1, "positions": {}, "skipped": {}})


def test_the_cache_names_each_crops_photo_and_adds_the_names_to_a_cache_without_them(cache, tmp_path):
    import dataclasses
    import shutil

    store = FeatureCache(cache.features)
    assert store.sources is not None and len(store.sources) == len(store)
    assert all(name.split("/")[0] in ("indoor", "outdoor") and name.endswith(".png") for name in store.sources)
    assert "outdoor/large.png" in store.sources and not any(n.endswith("50.png") for n in store.sources)  # held out
    # an older cache without them: the same command draws the crops again and writes them
    old = tmp_path / "old"
    shutil.copytree(cache.features, old)
    for f in old.glob("shard_*/sources.json"):
        f.unlink()
    assert FeatureCache(old).sources is None
    build_cache(dataclasses.replace(cache, features=str(old)))
    assert FeatureCache(old).sources == store.sources
    # drawn with other settings, the crops differ: nothing written, one clear error
    for f in old.glob("shard_*/sources.json"):
        f.unlink()
    with pytest.raises(ValueError, match="differ from the cached ones"):
        build_cache(dataclasses.replace(cache, features=str(old), seed=5))
    assert not list(old.glob("shard_*/sources.json"))


def test_a_subset_run_reads_only_the_kept_photos_crops_and_those_more_often(cache, tmp_path):
    import dataclasses

    from train.data import subset_rule

    store = FeatureCache(cache.features)
    cfg = dataclasses.replace(cache, subset="/indoor/=0.5", batch_size=4)
    reads = subset_rule(cfg)
    kept = {n for n in set(store.sources) if n.startswith("indoor/") and reads(str(cache.data_dir) + "/" + n)}
    dropped = {n for n in store.sources if n.startswith("indoor/")} - kept
    assert kept and dropped  # the test's photos give both
    batches = CachedBatches(store, cfg)
    names = [store.sources[i] for i in batches.index]
    assert not dropped & set(names)
    assert all(names.count(n) == 2 * store.sources.count(n) for n in kept)
    assert all(names.count(n) == store.sources.count(n) for n in set(store.sources) if n.startswith("outdoor/"))
    seen = []
    for _ in range(len(batches.index) // 4):  # a pass reads every kept crop twice, no dropped one
        rgb = next(batches)[0]
        seen += [bytes(c.numpy()) for c in rgb]
    crops = {bytes(store.batch(np.array([i]))[0][0].numpy()): store.sources[i] for i in range(len(store))}
    assert not {crops[c] for c in seen} & dropped
    # resumed exactly, and only with the same share
    state = batches.state_dict()
    following = [next(batches)[0] for _ in range(3)]
    resumed = CachedBatches(store, cfg, state=state)
    assert all(torch.equal(a, next(resumed)[0]) for a in following)
    for other in (dataclasses.replace(cfg, subset_seed=1), dataclasses.replace(cfg, subset=None)):
        with pytest.raises(ValueError, match="resume: the checkpoint read the cache with --subset"):
            CachedBatches(store, other, state=state)
    with pytest.raises(ValueError, match="give --subset to the training runs"):
        build_cache(cfg)


def test_a_subset_run_needs_the_photos_of_the_cached_crops(cache, tmp_path):
    import dataclasses
    import shutil

    old = tmp_path / "old"
    shutil.copytree(cache.features, old)
    (sorted(old.glob("shard_*"))[0] / "sources.json").unlink()
    with pytest.raises(ValueError, match="does not name its crops' photos.*python -m train.features"):
        CachedBatches(FeatureCache(old), dataclasses.replace(cache, subset="/indoor/=0.5", batch_size=4))
    with pytest.raises(ValueError, match="keeps 0 crop reads"):
        CachedBatches(FeatureCache(cache.features), dataclasses.replace(cache, subset="/=0.0001", batch_size=4))


def test_runs_record_how_many_photos_they_train_on(cache, folder, tmp_path):
    import dataclasses

    from train.data import subset_rule

    cfg = dataclasses.replace(cache, out=str(tmp_path / "cached"), max_steps=1, subset="/indoor/=0.5",
                              val_groups="indoor=/indoor/")
    train(cfg)
    reads = subset_rule(cfg)
    indoor = {n for n in FeatureCache(cache.features).sources if n.startswith("indoor/")}
    outdoor = {n for n in FeatureCache(cache.features).sources if n.startswith("outdoor/")}
    kept = {n for n in indoor if reads(str(folder / n))}
    want = {"photos": len(kept) + len(outdoor), "groups": {"indoor": len(kept), "other": len(outdoor)}}
    assert json.loads((tmp_path / "cached" / "photos.json").read_text()) == want
    # reading the photos themselves, --subset lists them (the 5 training photos of each folder, large.png too)
    plain = dataclasses.replace(cfg, features=None, network=TrainConfig.network, trunk=TrainConfig.trunk,
                                objective=TrainConfig.objective, out=str(tmp_path / "photos"))
    train(plain)
    kept = [n for n in (f"indoor/indoor{i}.png" for i in range(5)) if reads(str(folder / n))]
    assert json.loads((tmp_path / "photos" / "photos.json").read_text()) == {
        "photos": len(kept) + 6, "groups": {"indoor": len(kept), "other": 6}}
    train(dataclasses.replace(plain, subset=None, out=str(tmp_path / "all")))
    assert not (tmp_path / "all" / "photos.json").exists()  # not known without reading the data set
