"""Checkpoints for exact resumption, with no pickle: tensors in safetensors, the rest in JSON.

A checkpoint is a folder ``<out>/checkpoints/step_000500/``:

- ``model.safetensors``: the model's state dict (parameters and buffers);
- ``optimizer.safetensors`` + ``optimizer.json``: AdamW's per-parameter tensors
  (``state.<i>.exp_avg`` ...) and its param groups and scalar state;
- ``rng.safetensors``: the torch CPU (and CUDA) random states;
- ``data_rank<r>.json``: each process's data position (``TrainBatches.state_dict()``);
- ``ema.safetensors``: the moving average of the weights, when the run keeps one (``--ema``);
- ``state.json``: the step, the resolved configuration and anything else JSON.

It is written under a temporary name and renamed, so a crash mid-write never leaves a
half checkpoint that ``latest_checkpoint`` would pick.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.optim.swa_utils
from safetensors.torch import load_file, save_file

__all__ = [
    "optimizer_to_flat",
    "optimizer_from_flat",
    "save_checkpoint",
    "load_checkpoint",
    "load_data_position",
    "latest_checkpoint",
    "prune_checkpoints",
]


def optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (safetensors) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The inverse of ``optimizer_to_flat``: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    data_positions: list[dict] | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> Path:
    """Write a checkpoint folder atomically and return its path: the model, optimiser,
    RNG and ``state`` (JSON), each process's data position (``data_positions[r]`` ->
    ``data_rank<r>.json``) and the moving average of the weights (``ema``), all under a
    temporary name, then renamed. Called by the main process only."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    tensors, meta = optimizer_to_flat(optimizer.state_dict())
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(meta))
    save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
    for rank, position in enumerate(data_positions or []):
        (tmp / f"data_rank{rank}.json").write_text(json.dumps(position))
    if ema is not None:
        averaged = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        save_file(averaged, str(tmp / "ema.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = True,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> dict:
    """Load a checkpoint into ``model`` (strictly), ``optimizer`` and ``ema`` (a
    checkpoint made without a moving average leaves ``ema`` as it is); returns ``state.json``."""
    folder = Path(folder)
    missing = [n for n in ("model.safetensors", "state.json") if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"checkpoint {str(folder)!r} is incomplete: missing {missing}")
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    if optimizer is not None:
        meta = json.loads((folder / "optimizer.json").read_text())
        optimizer.load_state_dict(optimizer_from_flat(load_file(str(folder / "optimizer.safetensors")), meta))
    if ema is not None and (folder / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(folder / "ema.safetensors")), strict=True)
    if restore_rng:
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return json.loads((folder / "state.json").read_text())


def load_data_position(folder: Path, rank: int) -> dict:
    """Process ``rank``'s data position in a checkpoint (``TrainBatches.state_dict()``)."""
    path = Path(folder) / f"data_rank{rank}.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} has no data position for process {rank}: resume with as many processes as it was made with"
        )
    return json.loads(path.read_text())


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder under ``<out>/checkpoints``, or None."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(
        p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / "state.json").is_file()
    )
    return done[-1] if done else None


def prune_checkpoints(out: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
