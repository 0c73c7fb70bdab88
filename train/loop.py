"""Train a Colorizer: ``python -m train`` (one CPU, one GPU) or ``accelerate launch -m train`` (N GPUs).

Reads top to bottom: configuration, devices, data, prior, model, optimiser, resume,
then the loop (learning rate, batch onto the device, Lab + loss there, step, log,
validate, checkpoint) and the final model. Decoding and cropping run on CPU workers
(``train.data``); the GPU gets pinned uint8 batches and computes Lab, the soft
encoding and the rebalancing itself. ``wait`` in the logs is the share of wall time
spent waiting for the next batch (on CUDA each step ends with a synchronising
``loss.item()``, so that is time the GPU sat idle).

Validation reports the loss, AuC and class-rebalanced AuC of the validation photos
(centre crops). The rebalanced AuC weights pixels by the *validation set's own*
empirical prior over the grid-10 ab bins (``colorizer.metrics.evaluation_prior``,
counted once at the start), the same definition ``evaluation.evaluate`` uses, never
the model's training prior. Sample grids are rendered the way users get colours
(``Colorizer.analyze`` then ``Prediction.colorize``).

Ctrl-C finishes the current step, writes a checkpoint and exits with status 130, so
the checkpoint's weights, optimiser state, step count and data position agree and
``--resume`` continues exactly; a second Ctrl-C stops at once without a checkpoint.

Learning rate: AdamW (betas 0.9/0.99, weight decay 1e-3 on weights, none on norms
and biases, as Zhang et al.'s Adam setup), linear warm-up then cosine decay from
``--lr`` 3e-4 to ``--min-lr`` 3e-5. Zhang et al. trained ~450k steps at a constant
3.16e-5 (batch 40); one reproduction kept that. Our network has BatchNorm after every
block, which tolerates a 10x higher peak, and runs here are 10-100x shorter, so the
higher peak with a decay to the paper's rate converges far sooner;
``--schedule constant --lr 3.16e-5 --warmup-steps 0`` reproduces the paper's setting.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from colorizer.errors import report_error
from colorizer.losses import cast_loss
from colorizer.color import lab_to_rgb, rgb_to_lab
from colorizer.dinov2 import DEFAULT_BLOCKS
from colorizer.metrics import AucMeter, EvaluationPrior, colorfulness, colour_cast, evaluation_prior
from colorizer.model import Colorizer, gray_rgb

from train.checkpoint import latest_checkpoint, load_checkpoint, load_data_position, prune_checkpoints, save_checkpoint
from train.config import TrainConfig, model_settings, parse_args, parse_groups
from train.data import TrainBatches, label_rule, load_val_images, open_rows
from train.features import CachedBatches, FeatureCache, cache_meta, tune_start
from train.prior import prior_from_config, read_prior, write_prior
from train.sources import cell_path

__all__ = ["main", "train", "hardware", "get_lr", "to_lab", "validation_prior", "val_groups", "evaluate", "sample_grid",
           "cpu_clock", "photo_counts"]

logger = logging.getLogger("train")
clock = time.monotonic  # seconds, for --ckpt-minutes (a name of its own so tests can move it)
cpu_clock = time.process_time  # CPU seconds of this process, all its threads (data workers not included)


def hardware(device: torch.device, processes: int = 1) -> str:
    """What the run trained on, for the model card: GPU name(s), or the CPU model and cores."""
    if device.type == "cuda":
        return f"{processes} x {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{processes} process(es) on {torch.get_num_threads()} threads of a {os.cpu_count()}-core {cpu} CPU, no GPU"


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, then cosine to ``min_lr`` or constant."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def to_lab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, H, W, 3)`` uint8 on the device -> L ``(B, 1, H, W)``, ab ``(B, 2, H, W)`` and a
    ``(B,)`` mask of images with colour (the reference masked colourless images)."""
    lab = rgb_to_lab(rgb.permute(0, 3, 1, 2))  # (B, 3, H, W), channels_last in memory
    l, ab = lab[:, :1], lab[:, 1:]
    mask = ab.abs().mean(dim=(1, 2, 3)) > 0.5  # (B,)
    return l, ab, mask


@torch.no_grad()
def validation_prior(val: torch.Tensor, batch_size: int = 64) -> EvaluationPrior:
    """The validation set's own empirical prior over the grid-10 ab bins
    (``colorizer.metrics.evaluation_prior``) of ``(N, S, S, 3)`` uint8 photos, counted
    on the CPU over every pixel of every photo: the prior of the rebalanced AuC."""
    return evaluation_prior(to_lab(val[i : i + batch_size])[1] for i in range(0, len(val), batch_size))


def _aucs(pred: list[torch.Tensor], truth: list[torch.Tensor], prior: EvaluationPrior) -> tuple[float, float]:
    """AuC and rebalanced AuC (pixels weighted by ``prior``) of ab predictions, pixels pooled."""
    raw, rebal = AucMeter(), AucMeter()
    for p, t in zip(pred, truth):
        raw.update(p, t)
        rebal.update(p, t, prior.pixel_weights(t))
    return raw.value(), rebal.value()


def _group_figures(
    name: str, pred: list[torch.Tensor], truth: list[torch.Tensor], light: list[torch.Tensor], prior: EvaluationPrior
) -> dict[str, float]:
    """``{name}_auc``, ``_auc_rebal`` (pixels pooled; weighted by ``prior``), ``_cast``
    (median over photos of ``colour_cast``) and ``_colorfulness`` (mean over photos of
    the colorization's Hasler & Suesstrunk colourfulness) of ``(1, 2, S, S)`` ab
    predictions against the truth, with the photos' ``(1, 1, S, S)`` L."""
    auc, auc_rebal = _aucs(pred, truth, prior)
    casts, colourful = [], []
    for p, t, l in zip(pred, truth, light):
        casts.append(colour_cast(p, t))
        rgb = lab_to_rgb(torch.cat([l, p], dim=1))[0]  # (3, S, S) in [0, 1]
        colourful.append(colorfulness((rgb.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)))
    return {
        f"{name}_auc": auc,
        f"{name}_auc_rebal": auc_rebal,
        f"{name}_cast": float(np.median(casts)),
        f"{name}_colorfulness": float(np.mean(colourful)),
    }


@dataclass
class ValGroup:
    """Validation photos of one group (``--val-groups``): their indices into the
    validation tensor and their own prior for the rebalanced AuC."""

    index: list[int]
    prior: EvaluationPrior


def _group_of(path: str, rules: list) -> str:
    """The first ``--val-groups`` group whose pattern ``path`` matches, else "other"."""
    return next((name for name, pattern in rules if path and pattern.search(path)), "other")


def val_groups(val: torch.Tensor, names: list[str], spec: str | None) -> dict[str, ValGroup]:
    """``--val-groups`` ('NAME=REGEX;...' searched in each photo's path; the rest form
    "other") as groups of the ``(N, S, S, 3)`` validation photos named ``names``; empty
    groups are left out, and so is everything when ``spec`` is empty."""
    if not spec:
        return {}
    rules = parse_groups(spec)
    members: dict[str, list[int]] = {name: [] for name, _ in rules}
    members["other"] = []
    for i, path in enumerate(names):
        members[_group_of(path, rules)].append(i)
    return {name: ValGroup(idx, validation_prior(val[idx])) for name, idx in members.items() if idx}


@torch.no_grad()
def evaluate(
    model: Colorizer | None,
    val: torch.Tensor,
    device: torch.device,
    batch_size: int = 16,
    autocast=None,
    prior: EvaluationPrior | None = None,
    groups: dict[str, ValGroup] | None = None,
) -> dict[str, float]:
    """Validation figures on ``(N, S, S, 3)`` uint8 photos, ab compared at full crop
    resolution: ``val_loss``, ``val_auc`` and ``val_auc_rebal``, the AuC with pixels
    weighted by the inverse of the *validation set's own* empirical prior over the
    grid-10 ab bins (``prior``, from ``validation_prior(val)``; computed here when None),
    as ``evaluation.evaluate`` defines it -- not by the model's training prior.

    With ``groups`` (``val_groups``), also ``{group}_auc``, ``_auc_rebal`` (the group's
    own prior), ``_cast`` and ``_colorfulness`` for each group (``_group_figures``).
    ``model=None`` scores gray (ab = 0), the baseline, without a loss."""
    if prior is None:
        prior = validation_prior(val)
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    pred, truth, light = [], [], []
    losses, n = 0.0, 0
    for start in range(0, len(val), batch_size):
        rgb = val[start : start + batch_size].to(device)
        l, ab, mask = to_lab(rgb)
        if model is None:
            p = torch.zeros_like(ab)
        else:
            with autocast() if autocast else torch.autocast(device.type, enabled=False):
                out = model(l)
                loss = model.loss(out, ab, mask, lightness=l)
            p = F.interpolate(model.decode(out.float(), lightness=model.lightness_for(l, out)), size=ab.shape[-2:],
                              mode="bilinear", align_corners=False)
            losses += float(loss) * len(rgb)
        n += len(rgb)
        pred += list(p.float().cpu().split(1))
        truth += list(ab.float().cpu().split(1))
        light += list(l.float().cpu().split(1))
    if model is not None:
        model.train(was_training)
    auc, auc_rebal = _aucs(pred, truth, prior)
    figures = {"val_auc": auc, "val_auc_rebal": auc_rebal}
    if model is not None:
        figures = {"val_loss": losses / n, **figures}
    for name, group in (groups or {}).items():
        pick = group.index
        figures.update(_group_figures(name, [pred[i] for i in pick], [truth[i] for i in pick],
                                      [light[i] for i in pick], group.prior))
    return figures


@torch.no_grad()
def sample_grid(model: Colorizer, val: torch.Tensor, device: torch.device, path: Path, n: int = 8) -> Path:
    """A PNG of ``n`` validation photos, one per row: input (gray) | colorized | truth.

    The colorized column is exactly what users get from the model
    (``Colorizer.analyze_batch`` then ``Prediction.colorize`` at the model's default
    temperature: the network at ``input_size``, ab upsampled onto the photo's own L,
    chroma brought into gamut); ``device`` is where the model already is."""
    photos = [Image.fromarray(x) for x in val[:n].cpu().numpy()]  # (S, S, 3) uint8 each
    preds = model.analyze_batch(photos)  # restores the model's train/eval mode
    columns = [
        [gray_rgb(p.lightness.l) for p in preds],
        [np.asarray(p.render()) for p in preds],
        [np.asarray(x) for x in photos],
    ]
    grid = np.concatenate([np.concatenate(c, axis=0) for c in columns], axis=1)  # (n*S, 3*S, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


class _DeferredInterrupt:
    """Ctrl-C (SIGINT) handling for the training loop, as a context manager.

    The first Ctrl-C only sets ``requested``: the loop finishes the step it is in and
    then stops with a checkpoint whose weights, optimiser state, step count and data
    position agree. A second Ctrl-C raises ``KeyboardInterrupt`` at once. The previous
    handler is restored on exit. Outside the main thread (where signal handlers cannot
    be installed) Ctrl-C behaves as usual."""

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous = None

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt("stopped at once by a second Ctrl-C")
        self.requested = True
        tqdm.write("Ctrl-C: stopping after this step with a checkpoint (press again to stop at once, without one)")

    def __exit__(self, *exc) -> bool:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
        return False


# the settings that shape a network's layers, with the default a config saved before them means
_SHAPING = (("objective", None), ("width", None), ("color_space", "lab"), ("channel_bins", 64), ("trunk", "eccv16"),
            ("trunk_blocks", list(DEFAULT_BLOCKS)))


def _shaping(settings: dict, key: str, default):
    """A setting that shapes the network, as saved (an older config's missing or null value is the default)."""
    value = settings.get(key)
    return default if value is None else (list(value) if key == "trunk_blocks" else value)


def init_weights(model: Colorizer, source: str) -> None:
    """Copy the weights of the model ``source`` (a shipped name, folder or Hub id) into
    ``model`` for fine-tuning. The networks must match (width, grid, objective), except
    that an eccv16 model may seed a global_local one (whose global branch and fusion
    then start as fresh, the fusion passing the local features through) and any eccv16
    or global_local model the frozen trunk of a hypercolumn one; a hypercolumn model
    seeds another whole (trunk and decoder) when their heads match, else only its trunk
    (so the shipped hypercolumn default still gives its frozen ECCV16 network to an L2
    head), and gives that trunk to an eccv16 or global_local model too (its output layer
    then starts fresh: a new objective or Q is fine); a cheng15 model with a semantic
    feature takes its frozen network like a hypercolumn trunk; a label head
    starts fresh unless both models have the same labels; the prior and rebalancing
    weights stay ``model``'s own (this run's data)."""
    start = Colorizer.from_pretrained(source)
    tuned = start.settings.get("trunk_tune", 0), model.settings.get("trunk_tune", 0)
    if tuned[0] > tuned[1]:  # its trained blocks would be the package's again once this model is saved
        raise ValueError(f"--init-from {source!r}: its trunk_tune is {tuned[0]}, this run's {tuned[1]}; "
                         "train at least its tuned blocks")
    semantic = model.network == "cheng15" and hasattr(model.net, "trunk") and start.network != "cheng15"
    if model.network == "hypercolumn" and not _same_head(start, model) or semantic:
        _init_trunk(model, start, source)  # a trunk to freeze: Ciugurean's, or Cheng et al.'s semantic feature
        return
    if start.network == "hypercolumn" and model.network != "hypercolumn":
        _from_trunk(model, start, source)
        return
    theirs, ours = start.settings, model.settings
    for key, default in _SHAPING + (("grid", None),):
        if _shaping(theirs, key, default) != _shaping(ours, key, default):
            raise ValueError(f"--init-from {source!r}: its {key} is {_shaping(theirs, key, default)!r}, "
                             f"this run's is {ours.get(key, default)!r}")
    if start.network != model.network and (start.network, model.network) != ("eccv16", "global_local"):
        raise ValueError(f"--init-from {source!r}: a {start.network} network cannot seed a {model.network} one")
    own = {"prior", "class_weights"}
    fresh = ("net.global_branch.", "net.fusion.") if start.network != model.network else ()
    fresh += ("net.label_head.",)  # the label head starts fresh unless both have the same labels
    same_labels = start.labels is not None and start.labels == model.labels
    weights = {k: v for k, v in start.state_dict().items()
               if k not in own and (same_labels or not k.startswith("net.label_head."))}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # blocks this run tunes that the start kept frozen begin as the package's, which they hold
    left = sorted(k for k in missing if k not in own and not k.startswith(fresh + ("net.trunk.encoder.",)))
    if unexpected or left:
        raise ValueError(f"--init-from {source!r}: weights do not fit this network ({(left + sorted(unexpected))[:4]})")


def _from_trunk(model: Colorizer, start: Colorizer, source: str) -> None:
    """An eccv16 or global_local ``model`` from a hypercolumn model's frozen trunk: every layer
    but the output layer, which starts fresh. From an eccv16 trunk, a global_local model's
    global branch, fusion and label head start fresh too; a global_local trunk gives its own."""
    if start.net.trunk_network != "eccv16" and model.network != start.net.trunk_network:
        raise ValueError(f"--init-from {source!r}: its trunk is a {start.net.trunk_network} network, "
                         f"which cannot seed a {model.network} one")
    weights = {"net." + k[len("net.trunk."):]: v for k, v in start.state_dict().items() if k.startswith("net.trunk.")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # another width
        raise ValueError(f"--init-from {source!r}: its trunk does not fit this network (width?)") from e
    fresh = ("net.head.", "net.global_branch.", "net.fusion.", "net.label_head.")
    left = sorted(k for k in missing if k not in ("prior", "class_weights") and not k.startswith(fresh)
                  and k.startswith("net."))
    if unexpected or left:
        raise ValueError(f"--init-from {source!r}: its trunk does not fit this network ({(left + sorted(unexpected))[:4]})")


def _same_head(start: Colorizer, model: Colorizer) -> bool:
    """Whether hypercolumn ``start`` can seed hypercolumn ``model`` whole (trunk and decoder)."""
    theirs, ours = start.settings, model.settings
    keys = _SHAPING + (("grid", None),) * (ours.get("objective") == "classification")  # Q sizes the head
    return start.network == model.network == "hypercolumn" and all(
        _shaping(theirs, k, default) == _shaping(ours, k, default) for k, default in keys)


def _init_trunk(model: Colorizer, start: Colorizer, source: str) -> None:
    """A hypercolumn model's frozen trunk: the trained network of ``start`` without its head
    (or, when ``start`` is itself a hypercolumn model, its frozen trunk)."""
    trunk = model.net.trunk_network
    given = start.net.trunk_network if start.network == "hypercolumn" else start.network
    if given != trunk:
        raise ValueError(f"--init-from {source!r}: a {given} network cannot be the trunk of a "
                         f"hypercolumn model with --trunk {trunk}")
    if start.network == "hypercolumn":
        weights = {k[len("net."):]: v for k, v in start.state_dict().items() if k.startswith("net.trunk.")}
    else:
        weights = {"trunk." + k[len("net."):]: v for k, v in start.state_dict().items()
                   if k.startswith("net.") and not k.startswith(("net.head.", "net.label_head."))}
    try:
        missing, unexpected = model.net.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # another width
        raise ValueError(f"--init-from {source!r}: its network does not fit this trunk (width?): "
                         f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}") from None
    # the pretrained encoder's blocks this run tunes and the start kept frozen begin as the package's
    package = ("trunk.encoder.",) if model.has_pretrained_trunk else ()
    left = [k for k in missing if k.startswith("trunk.") and not (package and k.startswith(package))]
    if unexpected or left:
        raise ValueError(f"--init-from {source!r}: weights do not fit the trunk ({(left + unexpected)[:4]})")


def _log_row(path: Path, row: dict) -> None:
    """Append ``row`` to the CSV at ``path`` under its header. A row with columns the file
    lacks (a run resumed with newer code or new ``--val-groups``) rewrites the file under
    the merged header, earlier rows blank in the new columns, so columns never shift."""
    header: list[str] = []
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    columns = header + [k for k in row if k not in header]
    if header and columns != header:
        with open(path, newline="") as f:
            earlier = list(csv.DictReader(f, restkey="\0extra"))
        added = columns[len(header):]
        for r in earlier:  # rows longer than the old header (written by newer code): extras are the new columns
            r.update(zip(added, r.pop("\0extra", [])))
        tmp = path.with_name(path.name + ".tmp")  # all or nothing: a failure leaves the old file whole
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(earlier)
        tmp.replace(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        if not header:
            w.writeheader()
        w.writerow(row)


@dataclass
class Run:
    """Everything a training run holds while it trains (built by ``setup``)."""

    cfg: TrainConfig
    accelerator: Any
    out: Path
    model: torch.nn.Module  # what the step calls: prepared (and compiled) by accelerate
    raw: Colorizer  # the model itself, for its loss, saving and checkpoints
    shown: Colorizer  # the weights validated, sampled and saved: ``raw``, or its moving average
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    batches: TrainBatches
    val: torch.Tensor | None
    val_prior: EvaluationPrior | None
    step: int = 0
    elapsed: float = 0.0  # seconds spent in training steps (validation and checkpoints excluded)
    cpu: float = 0.0  # CPU seconds of this process in training steps (``cpu_clock``), all threads
    cpu_estimated: bool = False  # part of ``cpu`` is wall time x threads (resumed from an older checkpoint)
    run_id: str = ""
    started_from: str | None = None  # the weights step 0 started from (``--init-from`` of the first start)
    groups: dict[str, ValGroup] = dataclasses.field(default_factory=dict)
    tensorboard: Any = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main_process(self) -> bool:
        return self.accelerator.is_main_process


def _prior(cfg: TrainConfig, out: Path, accelerator) -> list[float] | None:
    """The prior over the model's bins (ab, or uv for a YUV classification) of the
    rebalancing: uniform, a given file, or counted at the start
    from ``prior_images`` training photos (saved as ``out/prior.json`` for resuming)."""
    if cfg.prior == "uniform":
        return None
    if cfg.prior:
        return read_prior(cfg.prior, cfg.grid, cfg.bin_space)
    path = out / "prior.json"
    if not path.is_file():
        if accelerator.is_main_process:
            record = prior_from_config(cfg, cfg.prior_images, progress=True)
            write_prior(record, path)
            logger.info("prior: %d photos, %d pixels -> %s", record["images"], record["pixels"], path)
        accelerator.wait_for_everyone()
    return read_prior(path, cfg.grid, cfg.bin_space)


def cpu_has_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX), where
    autocast to bf16 is a speed-up; elsewhere it is emulated and slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers: absent in another torch, say no
        return False


def _accelerator(cfg: TrainConfig, saved: dict, cuda: bool):
    """The accelerator (its mixed precision: ``auto`` is bf16 where the hardware computes in
    it, and a resumed run keeps the precision it ran in), the seed, threads and TF32."""
    from accelerate import Accelerator

    precision = cfg.mixed_precision
    if precision == "auto":  # bf16 where the hardware computes in it (1.75x the images/s on a Zen 4 CPU)
        precision = saved.get("precision") or ("bf16" if cuda or cpu_has_bf16() else "no")
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision)
    torch.manual_seed(cfg.seed + accelerator.process_index)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return accelerator


def _validation(cfg: TrainConfig, out: Path, accelerator) -> tuple[torch.Tensor | None, EvaluationPrior | None,
                                                                   dict[str, "ValGroup"]]:
    """The validation photos, their own prior (of the rebalanced AuC) and groups, with gray's
    figures and the truth's colourfulness written to ``val_baseline.json``."""
    val_rows = open_rows(cfg, "val")
    val_names: list[str] = []
    val = load_val_images(val_rows, cfg, names=val_names) if val_rows is not None else None
    if val is None:
        logger.warning("no validation data (give --val-dir, --holdout or --val-split): validation is off")
        return None, None, {}
    if not accelerator.is_main_process:
        return val, None, {}
    logger.info("validation: %d photos at %d px", len(val), cfg.val_size)
    val_prior = validation_prior(val)  # counted once
    groups = val_groups(val, val_names, cfg.val_groups)
    baseline = {"photos": len(val), "size": cfg.val_size, "groups": {name: len(g.index) for name, g in groups.items()},
                "gray": evaluate(None, val, torch.device("cpu"), cfg.batch_size, prior=val_prior, groups=groups)}
    for name, g in groups.items():
        truth = [colorfulness(x) for x in val[g.index].numpy()]
        baseline.setdefault("truth_colorfulness", {})[name] = float(np.mean(truth))
    (out / "val_baseline.json").write_text(json.dumps(baseline, indent=1) + "\n")
    return val, val_prior, groups


def _new_model(cfg: TrainConfig, out: Path, accelerator, labels, fresh: bool) -> Colorizer:
    """The model of ``cfg`` (``model_settings``), from ``--init-from``'s weights on a fresh
    run, its trunk unfrozen with ``--train-trunk``."""
    model = Colorizer(**model_settings(cfg, prior=_prior(cfg, out, accelerator),
                                       labels=labels.names if labels is not None else None))
    if (cfg.network == "hypercolumn" and not cfg.pretrained_trunk or cfg.semantic_width) and not cfg.init_from and fresh:
        raise ValueError(f"--network {cfg.network}{' --semantic-width' if cfg.semantic_width else ''} freezes a "
                         "trained network: give it with --init-from (e.g. hypercolumn-eccv16)")
    if cfg.init_from and fresh:
        init_weights(model, cfg.init_from)
        logger.info("initial weights: %s", cfg.init_from)
    if cfg.train_trunk:
        model.net.unfreeze()  # end to end: before the optimiser and the checkpoint's state are set up
    return model


def _optimizer(model: Colorizer, cfg: TrainConfig, cuda: bool) -> torch.optim.Optimizer:
    """AdamW, weight decay on the weights of two or more dimensions only; the pretrained
    trunk's tuned blocks (``--trunk-tune``) at ``--trunk-lr`` times the learning rate (each
    group's ``lr_scale``)."""
    tuned = {id(p) for p in (model.net.trunk.tuned() if model.has_pretrained_trunk else [])}
    groups = []
    for scale, params in ((1.0, [p for p in model.parameters() if id(p) not in tuned]),
                          (cfg.trunk_lr, [p for p in model.parameters() if id(p) in tuned])):
        groups += [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": scale},
                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=cuda or None,
    )


def _resumed(cfg: TrainConfig, ckpt: Path | None, raw: Colorizer, optimizer, ema, accelerator) -> dict:
    """Where the run stands: step, times, run id and data position, from the checkpoint
    when resuming (its weights, optimiser and average loaded), else a fresh start."""
    state = {"step": 0, "elapsed": 0.0, "cpu": 0.0, "cpu_estimated": False, "data_state": None,
             "run_id": uuid.uuid4().hex,  # names this run in the training history of the weights it publishes
             "started_from": cfg.init_from}
    if not (cfg.resume and ckpt is not None):
        return state
    inner = getattr(optimizer, "optimizer", optimizer)
    scales = [g.get("lr_scale", 1.0) for g in inner.param_groups]
    saved = load_checkpoint(ckpt, raw, inner, ema=ema)
    for group, scale in zip(inner.param_groups, scales):  # this run's --trunk-lr, like its --lr
        group["lr_scale"] = scale
    step, elapsed = saved["step"], saved.get("elapsed_s", 0.0)
    state.update(
        step=step, elapsed=elapsed,
        # a checkpoint from before CPU time was counted: its wall time on all threads, an estimate
        cpu=saved["cpu_s"] if "cpu_s" in saved else elapsed * torch.get_num_threads(),
        cpu_estimated=saved.get("cpu_estimated", "cpu_s" not in saved and step > 0),
        run_id=saved.get("run_id", state["run_id"]),
        started_from=saved.get("init_from", cfg.init_from),
        data_state=load_data_position(ckpt, accelerator.process_index),
    )
    logger.info("resumed from %s (step %d)", ckpt, step)
    return state


def _tensorboard(out: Path, accelerator):
    if not accelerator.is_main_process:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def setup(cfg: TrainConfig) -> Run:
    """Devices, data, prior, model, optimiser and (with ``--resume``) the checkpoint's
    state: a ``Run`` ready for its first step. Bad settings and data fail here."""
    cuda = torch.cuda.is_available() and not cfg.cpu
    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not cfg.resume:
        raise ValueError(
            f"{out} already has checkpoints ({ckpt.name}): pass --resume to continue, or choose a new --out"
        )
    saved = json.loads((ckpt / "state.json").read_text()) if cfg.resume and ckpt is not None else {}
    if cfg.rebalance is None and saved.get("config", {}).get("rebalance") is not None:
        cfg = dataclasses.replace(cfg, rebalance=saved["config"]["rebalance"])  # a resumed run keeps its loss
    accelerator = _accelerator(cfg, saved, cuda)
    if cfg.resume and ckpt is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    accelerator.wait_for_everyone()

    rows = open_rows(cfg, "train")  # data first: errors surface before any training
    val, val_prior, groups = _validation(cfg, out, accelerator)
    labels = label_rule(cfg)  # the label head's classes (--labels), read from the training rows' paths
    if labels is not None and saved.get("labels") not in (None, labels.names):
        raise ValueError(f"resume: the training photos' labels changed since the checkpoint ({saved['labels']} -> "
                         f"{labels.names}); resume on the same data, or start a new --out")
    model = _new_model(cfg, out, accelerator, labels, fresh=ckpt is None)
    optimizer = _optimizer(model, cfg, cuda)
    if cuda or accelerator.mixed_precision == "bf16":  # faster convolutions in bf16 on the CPU too (oneDNN)
        model = model.to(memory_format=torch.channels_last)
    prepared, optimizer = accelerator.prepare(model, optimizer)
    # the plain module, without accelerate's autocast wrapper around forward (train_step enters
    # autocast itself): the moving average, the sample sheets and the saved model run as users' do
    raw = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    ema = AveragedModel(raw, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    state = _resumed(cfg, ckpt, raw, optimizer, ema, accelerator)  # after prepare: the optimiser state on its device
    if cfg.compile:
        prepared = torch.compile(prepared)
    if cfg.features:  # the frozen trunk's features of crops cached beforehand (python -m train.features)
        cache = FeatureCache(cfg.features, expect=cache_meta(cfg), start_block=tune_start(cfg))
        batches = CachedBatches(cache, cfg, accelerator.process_index,
                                accelerator.num_processes, state=state["data_state"])
    else:
        batches = TrainBatches(rows, cfg, accelerator.process_index, accelerator.num_processes, pin_memory=cuda,
                               state=state["data_state"], labels=labels)
    if accelerator.is_main_process:
        _write_photo_counts(cfg, out, batches, rows)
    shown = ema.module if ema is not None else raw
    return Run(cfg, accelerator, out, prepared, raw, shown, ema, optimizer, batches, val, val_prior, state["step"],
               state["elapsed"], state["cpu"], state["cpu_estimated"], state["run_id"], state["started_from"], groups,
               _tensorboard(out, accelerator))


def photo_counts(cfg: TrainConfig, photos: list[str]) -> dict:
    """How many distinct training photos (``train.data.photo_key``) a run reads, in all
    and per ``--val-groups`` group (the rest: "other"): ``{"photos": n, "groups": {name: n}}``."""
    from train.data import photo_path

    rules = parse_groups(cfg.val_groups) if cfg.val_groups else []
    groups = {name: 0 for name, _ in rules}
    if rules:
        groups["other"] = 0
        for key in photos:
            groups[_group_of(photo_path(key, cfg.data_dir), rules)] += 1
    return {"photos": len(photos), "groups": groups}


def _write_photo_counts(cfg: TrainConfig, out: Path, batches, rows) -> None:
    """``photos.json`` (``photo_counts``) in the run folder, where the photos are known
    without reading the data set: a feature cache that names its crops' photos, or
    ``--subset`` (whose rows have paths; the listing reads no image). Else nothing."""
    from train.data import photo_key

    if isinstance(batches, CachedBatches):
        photos = batches.photos()
    elif cfg.subset:
        seen = {cell_path(row[cfg.image_column]) for row in rows.select_columns([cfg.image_column])}
        photos = sorted(photo_key(p, cfg.data_dir) for p in seen if p)
    else:
        return
    if photos:
        (out / "photos.json").write_text(json.dumps(photo_counts(cfg, photos), indent=1) + "\n")


def train_step(run: Run, batch: torch.Tensor, lr: float) -> float:
    """One optimiser step on a ``(B, S, S, 3)`` uint8 batch at learning rate ``lr``; returns the loss."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    extra = {}
    if isinstance(batch, tuple):  # crops with their cached trunk features (train.features.CachedBatches)
        batch, maps, *tokens = batch  # cls, and with --trunk-tune the tokens where the tuned blocks start
        extra["trunk_features"] = ([m.to(run.device, non_blocking=True) for m in maps],
                                   *(t.to(run.device) for t in tokens))
    rgb = batch.to(run.device, non_blocking=True)  # (B, S, S, 3) uint8
    l, ab, mask = to_lab(rgb)  # (B, 1, S, S), (B, 2, S, S), (B,)
    labels = run.batches.last_labels if run.raw.labels else None  # (B,) the batch's photo labels, -1: none
    with run.accelerator.autocast():
        if labels is None:
            output = run.model(l, **extra)  # (B, Q, S/4, S/4) logits or (B, 2, S/4, S/4) ab
        else:
            output, label_logits = run.model(l, return_labels=True)
        loss = run.raw.loss(output, ab, mask, lightness=l)
        if run.cfg.cast_weight:  # the crop's tint: its decoded colours' mean against the true mean
            pred_ab = run.raw.decode(output, lightness=run.raw.lightness_for(l, output))
            loss = loss + run.cfg.cast_weight * cast_loss(pred_ab, ab, mask)
        if labels is not None:  # Iizuka et al.: plus the weighted label loss of the global branch
            labels = labels.to(run.device)  # -1: no label; the term is always there (every process's graph alike)
            label_loss = F.cross_entropy(label_logits.float(), labels, ignore_index=-1, reduction="sum")
            loss = loss + run.cfg.label_weight * label_loss / (labels >= 0).sum().clamp(min=1)
    run.accelerator.backward(loss)
    if run.cfg.grad_clip > 0:
        run.accelerator.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update_parameters(run.raw)
    value = loss.item()  # synchronises: the wait share in the log is GPU idle time
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} at step {run.step + 1}; lower --lr or check the data")
    return value


def log_training(run: Run, row: dict) -> None:
    """Append the training figures of the last ``log_every`` steps to ``log.csv`` (and TensorBoard)."""
    if not run.main_process:
        return
    keys = ("step", "loss", "lr", "img_per_s", "wait_share", "elapsed_s", "cpu_s")
    _log_row(run.out / "log.csv", {k: row.get(k, "") for k in keys})
    if run.tensorboard is not None:
        for k in ("loss", "lr", "img_per_s", "wait_share"):
            run.tensorboard.add_scalar(f"train/{k}", row[k], run.step)


def _sample_order(groups: dict[str, ValGroup], n: int) -> list[int]:
    """Validation photo indices taking turns between the groups (all in order without groups),
    so that a sample sheet of a few rows shows every group."""
    if not groups:
        return list(range(n))
    lists = [g.index for g in groups.values()]
    return [i for row in itertools.zip_longest(*lists) for i in row if i is not None]


def validate(run: Run) -> dict[str, float]:
    """Validation figures of the shown weights (``evaluate``), a sample grid, and a row of
    ``val.csv``; main process only."""
    figures = evaluate(run.shown, run.val, run.device, run.cfg.batch_size, run.accelerator.autocast, run.val_prior,
                       run.groups)
    shown = _sample_order(run.groups, len(run.val))[: run.cfg.sample_images]  # every group on the sheet
    sample_grid(run.shown, run.val[shown], run.device, run.out / "samples" / f"step_{run.step:07d}.png",
                run.cfg.sample_images)
    when = {"step": run.step, "elapsed_s": round(run.elapsed, 2), "cpu_s": round(run.cpu, 2)}
    _log_row(run.out / "val.csv", {**when, **figures})
    if run.tensorboard is not None:
        for k, v in figures.items():
            run.tensorboard.add_scalar(f"val/{k}", v, run.step)
    skipped = run.batches.skipped_total()
    tqdm.write(
        f"step {run.step}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
        + (f"; skipped photos {skipped}" if skipped else "")
    )
    return figures


def save(run: Run, reason: str) -> None:
    """A checkpoint of this step: every process's data position gathered to the main one,
    which writes the folder (``train.checkpoint.save_checkpoint``) and prunes old ones."""
    from accelerate.utils import gather_object

    positions = gather_object([run.batches.state_dict()])  # one per process, in rank order
    if run.main_process:
        state = {
            "step": run.step,
            "elapsed_s": run.elapsed,
            "cpu_s": run.cpu,
            "cpu_estimated": run.cpu_estimated,
            "run_id": run.run_id,
            "init_from": run.started_from,
            "world_size": run.accelerator.num_processes,
            "precision": run.accelerator.mixed_precision,  # what "auto" chose: kept on resume
            "labels": run.raw.labels,
            "reason": reason,
            "config": dataclasses.asdict(run.cfg),
        }
        folder = run.out / "checkpoints" / f"step_{run.step:07d}"
        save_checkpoint(folder, run.raw, run.optimizer, state, positions, run.ema)
        prune_checkpoints(run.out, run.cfg.keep_checkpoints)
        tqdm.write(f"checkpoint {folder} ({reason})")
    run.accelerator.wait_for_everyone()


def _agree(run: Run, *flags: bool) -> list[bool]:
    """Flags true in any process, so that every process saves and stops after the same
    step (or the checkpoint's collectives hang)."""
    if run.accelerator.num_processes == 1:
        return list(flags)
    total = run.accelerator.reduce(torch.tensor([float(f) for f in flags], device=run.device), "sum")
    return [bool(x > 0) for x in total.tolist()]


def finish(run: Run, figures: dict[str, float]) -> None:
    """The final checkpoint, the model folder (``Colorizer.from_pretrained(out/model)``),
    ``final.json``, and the Hub upload when asked for."""
    save(run, "final")
    if run.main_process:
        run.shown.eval()
        model_dir = run.out / "model"
        run.shown.save_pretrained(str(model_dir))
        final = {
            "step": run.step,
            "elapsed_s": run.elapsed,
            "cpu_s": run.cpu,
            "cpu_estimated": run.cpu_estimated,
            "threads": torch.get_num_threads(),
            "run_id": run.run_id,
            "init_from": run.started_from,
            **figures,
            "skipped": run.batches.skipped_total(),
            "hardware": hardware(run.device, run.accelerator.num_processes),
            "torch": torch.__version__,
        }
        (run.out / "final.json").write_text(json.dumps(final, indent=1) + "\n")
        tqdm.write(f"saved {model_dir}")
        if run.cfg.push_to_hub:
            run.shown.push_to_hub(run.cfg.push_to_hub)
            tqdm.write(f"pushed to https://huggingface.co/{run.cfg.push_to_hub}")
        if run.tensorboard is not None:
            run.tensorboard.close()
    run.accelerator.end_training()


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as ``cfg`` says; returns the final validation figures.

    The loop: learning rate, step, log every ``log_every`` steps, validate every
    ``val_every``, checkpoint every ``ckpt_every`` steps or ``ckpt_minutes``, stop on Ctrl-C
    at a step boundary with a checkpoint."""
    run = setup(cfg)
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="train", unit="step", disable=not run.main_process,
               dynamic_ncols=True)
    figures: dict[str, float] = {}
    window = {"loss": 0.0, "steps": 0, "t0": time.perf_counter(), "wait0": run.batches.wait_s}
    last_save = clock()
    run.model.train()
    interrupt = _DeferredInterrupt()
    mid_step = False  # from taking a batch until the step is counted: no consistent checkpoint then
    try:
        with interrupt:
            budget, over = 3600.0 * cfg.max_cpu_hours, False
            while run.step < cfg.max_steps and not over:
                t_step, c_step = time.perf_counter(), cpu_clock()
                lr = get_lr(run.step, cfg)
                batch = next(run.batches)
                mid_step = True
                loss = train_step(run, batch, lr)
                run.step += 1
                mid_step = False
                run.elapsed += time.perf_counter() - t_step
                run.cpu += cpu_clock() - c_step
                if budget:  # every process stops after the same step (each counts its own CPU time)
                    (over,) = _agree(run, run.cpu >= budget)
                last = run.step == cfg.max_steps or over
                window["loss"] += loss
                window["steps"] += 1
                bar.update(1)

                if run.step % cfg.log_every == 0 or last:
                    dt = time.perf_counter() - window["t0"]
                    row = {
                        "step": run.step,
                        "loss": window["loss"] / window["steps"],
                        "lr": lr,
                        "img_per_s": window["steps"] * cfg.batch_size * run.accelerator.num_processes / dt,
                        "wait_share": (run.batches.wait_s - window["wait0"]) / dt,
                        "elapsed_s": round(run.elapsed, 2),
                        "cpu_s": round(run.cpu, 2),
                    }
                    bar.set_postfix(
                        loss=f"{row['loss']:.3f}", img_s=f"{row['img_per_s']:.1f}", wait=f"{row['wait_share']:.0%}"
                    )
                    log_training(run, row)
                    window = {"loss": 0.0, "steps": 0, "t0": time.perf_counter(), "wait0": run.batches.wait_s}

                t_side = time.perf_counter()  # validation and checkpoints stay out of the throughput figures
                due = (cfg.val_every and run.step % cfg.val_every == 0) or last
                if run.val is not None and run.main_process and due:
                    figures = validate(run)
                timed = bool(cfg.ckpt_minutes) and clock() - last_save >= 60.0 * cfg.ckpt_minutes
                stop, timed = _agree(run, interrupt.requested, timed)
                if (run.step % cfg.ckpt_every == 0 or timed) and not last:
                    save(run, "periodic")
                    last_save = clock()
                window["t0"] += time.perf_counter() - t_side
                if stop and not last:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        if mid_step:  # weights may be updated while the step count and data position are not
            raise KeyboardInterrupt(
                f"stopped in the middle of step {run.step + 1}: no checkpoint written; --resume continues "
                "from the last checkpoint"
            ) from None
        save(run, "interrupted")
        raise
    bar.close()
    finish(run, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: one clear error line for bad settings or data, exit 130 on Ctrl-C
    (after writing a checkpoint)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("datasets", "httpx", "huggingface_hub", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = parse_args(argv)
        train(cfg)
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted: checkpoint written; continue with --resume",
              file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        # a DataLoader worker's error arrives with the worker's traceback; its last line is the message
        message = lines[-1] if len(lines) > 1 and "Traceback" in str(e) else " ".join(lines)
        return report_error("train", message)
    return 0
