"""train.checkpoint: checkpoints in safetensors and JSON, written atomically, no pickle."""

from __future__ import annotations

import json

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_data_position,
    optimizer_from_flat,
    optimizer_to_flat,
    prune_checkpoints,
    save_checkpoint,
)


def test_optimizer_state_round_trips_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_flat(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)
    again = torch.optim.AdamW(model.parameters(), lr=1e-3)
    again.load_state_dict(optimizer_from_flat(tensors, json.loads(json.dumps(meta))))
    for k, v in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(again.state_dict()["state"][0][k], v)


def _trained(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        model(torch.randn(8, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(model)
    return model, opt, ema


def test_checkpoint_round_trip_restores_weights_optimiser_average_rng_and_positions(tmp_path):
    model, opt, ema = _trained(0)
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    folder = save_checkpoint(tmp_path / "checkpoints" / "step_0000003", model, opt, {"step": 3},
                             [{"batches": 3}, {"batches": 4}], ema)
    assert sorted(p.name for p in folder.iterdir()) == [
        "data_rank0.json", "data_rank1.json", "ema.safetensors", "model.safetensors", "optimizer.json",
        "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert not list(tmp_path.rglob("*.tmp"))

    other, other_opt, other_ema = _trained(1)
    state = load_checkpoint(folder, other, other_opt, ema=other_ema)
    assert state == {"step": 3}
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG continues where it was saved
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)
    for a, b in zip(ema.state_dict().values(), other_ema.state_dict().values()):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(opt.state_dict()["state"][0]["exp_avg"], other_opt.state_dict()["state"][0]["exp_avg"])
    assert load_data_position(folder, 1) == {"batches": 4}
    with pytest.raises(ValueError, match="process 2"):
        load_data_position(folder, 2)


def test_latest_ignores_half_written_folders_and_prune_keeps_the_newest(tmp_path):
    model, opt, _ = _trained(0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / "checkpoints" / f"step_{step:07d}", model, opt, {"step": step})
    (tmp_path / "checkpoints" / "step_0000009.tmp").mkdir()  # a crash mid-write
    assert latest_checkpoint(tmp_path).name == "step_0000003"
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.endswith(".tmp")) == [
        "step_0000002", "step_0000003"]
    assert latest_checkpoint(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="incomplete"):
        load_checkpoint(tmp_path / "checkpoints" / "step_0000009.tmp", model)
