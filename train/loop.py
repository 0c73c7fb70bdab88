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
counted once at the start), the same definition ``colorizer.evaluate`` uses, never
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
import json
import logging
import math
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from colorizer.color import rgb_to_lab
from colorizer.evaluate import gray_rgb
from colorizer.metrics import AucMeter, EvaluationPrior, evaluation_prior
from colorizer.model import Colorizer
from train.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, write_parts
from train.config import TrainConfig, parse_args
from train.data import TrainBatches, load_val_images, open_rows
from train.prior import prior_from_config, read_prior, write_prior

__all__ = ["main", "train", "hardware", "get_lr", "to_lab", "validation_prior", "evaluate", "sample_grid"]

logger = logging.getLogger("train")


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


@torch.no_grad()
def evaluate(
    model: Colorizer,
    val: torch.Tensor,
    device: torch.device,
    batch_size: int = 16,
    autocast=None,
    prior: EvaluationPrior | None = None,
) -> dict[str, float]:
    """Validation figures on ``(N, S, S, 3)`` uint8 photos, ab compared at full crop
    resolution: ``val_loss``, ``val_auc`` and ``val_auc_rebal``, the AuC with pixels
    weighted by the inverse of the *validation set's own* empirical prior over the
    grid-10 ab bins (``prior``, from ``validation_prior(val)``; computed here when None),
    as ``colorizer.evaluate`` defines it -- not by the model's training prior."""
    if prior is None:
        prior = validation_prior(val)
    was_training = model.training
    model.eval()
    raw, rebal = AucMeter(), AucMeter()
    losses, n = 0.0, 0
    for start in range(0, len(val), batch_size):
        rgb = val[start : start + batch_size].to(device)
        l, ab, mask = to_lab(rgb)
        with autocast() if autocast else torch.autocast(device.type, enabled=False):
            out = model(l)
            loss = model.loss(out, ab, mask)
        pred = F.interpolate(model.decode(out.float()), size=ab.shape[-2:], mode="bilinear", align_corners=False)
        raw.update(pred, ab)
        rebal.update(pred, ab, prior.pixel_weights(ab))
        losses += float(loss) * len(rgb)
        n += len(rgb)
    model.train(was_training)
    return {"val_loss": losses / n, "val_auc": raw.value(), "val_auc_rebal": rebal.value()}


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
        [np.asarray(p.colorize()) for p in preds],
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


def _log_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as ``cfg`` says; returns the final validation figures."""
    from accelerate import Accelerator

    # ------------------------------------------------------------------ devices
    cuda = torch.cuda.is_available() and not cfg.cpu
    precision = ("bf16" if cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main_proc = accelerator.is_main_process
    torch.manual_seed(cfg.seed + rank)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not cfg.resume:
        raise ValueError(
            f"{out} already has checkpoints ({ckpt.name}): pass --resume to continue, or choose a new --out"
        )
    if cfg.resume and ckpt is None:
        logger.warning("--resume: no checkpoint in %s, starting from scratch", out)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ data (errors surface here, before training)
    rows = open_rows(cfg, "train")
    val_rows = open_rows(cfg, "val")
    val = load_val_images(val_rows, cfg) if val_rows is not None else None
    if val is None:
        logger.warning("no validation data (give --val-dir, --holdout or --val-split): validation is off")
    elif main_proc:
        logger.info("validation: %d photos at %d px", len(val), cfg.val_size)
    # the rebalanced AuC's prior: the validation photos' own, counted once
    val_prior = validation_prior(val) if val is not None and main_proc else None

    # ------------------------------------------------------------------ prior
    prior_path = out / "prior.json"
    if cfg.prior == "uniform":
        prior = None
    elif cfg.prior:
        prior = read_prior(cfg.prior, cfg.grid)
    elif prior_path.is_file():  # computed at the start of this run (resume)
        prior = read_prior(prior_path, cfg.grid)
    else:
        if main_proc:
            record = prior_from_config(cfg, cfg.prior_images, progress=True)
            write_prior(record, prior_path)
            logger.info("prior: %d photos, %d pixels -> %s", record["images"], record["pixels"], prior_path)
        accelerator.wait_for_everyone()
        prior = read_prior(prior_path, cfg.grid)

    # ------------------------------------------------------------------ model and optimiser
    model = Colorizer(
        objective=cfg.objective,
        width=cfg.width,
        grid=cfg.grid,
        k=cfg.k,
        sigma=cfg.sigma,
        prior=prior,
        lam=cfg.lam,
        rebalance=cfg.rebalance,
        temperature=cfg.temperature,
        input_size=cfg.input_size,
        regression_loss=cfg.regression_loss,
    )
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=cuda or None,
    )
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    step, data_state, elapsed = 0, None, 0.0
    if cfg.resume and ckpt is not None:  # after prepare: the optimiser state lands on the parameters' device
        state = load_checkpoint(ckpt, raw, getattr(optimizer, "optimizer", optimizer))
        step, elapsed = state["step"], state.get("elapsed_s", 0.0)
        data_file = ckpt / f"data_rank{rank}.json"
        if not data_file.is_file():
            raise ValueError(
                f"{ckpt} has no data position for process {rank}: resume with as many processes as it was made with"
            )
        data_state = json.loads(data_file.read_text())
        if main_proc:
            logger.info("resumed from %s (step %d)", ckpt, step)
    if cfg.compile:
        model = torch.compile(model)
    batches = TrainBatches(rows, cfg, rank, world, pin_memory=cuda, state=data_state)

    def save(tag: str) -> None:
        """Checkpoint: every process writes its data position, the main one the rest."""
        folder = out / "checkpoints" / f"step_{step:07d}"
        tmp = folder.with_name(folder.name + ".tmp")
        if main_proc:
            tmp.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        (tmp / f"data_rank{rank}.json").write_text(json.dumps(batches.state_dict()))
        accelerator.wait_for_everyone()
        if main_proc:
            state = {
                "step": step,
                "elapsed_s": elapsed,
                "world_size": world,
                "reason": tag,
                "config": dataclasses.asdict(cfg),
            }
            write_parts(tmp, raw, optimizer, state)
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            tmp.rename(folder)
            prune_checkpoints(out, cfg.keep_checkpoints)
            tqdm.write(f"checkpoint {folder} ({tag})")
        accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ loop
    log_path, tb = out / "log.csv", None
    if main_proc:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", disable=not main_proc, dynamic_ncols=True)
    autocast = accelerator.autocast
    figures: dict[str, float] = {}
    window_loss, window_n, window_t0, window_wait0 = 0.0, 0, time.perf_counter(), batches.wait_s
    model.train()
    interrupt = _DeferredInterrupt()
    mid_step = False  # from taking a batch until the step is counted: no consistent checkpoint then
    try:
        with interrupt:
            while step < cfg.max_steps:
                t_step = time.perf_counter()
                lr = get_lr(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                rgb = next(batches).to(device, non_blocking=True)  # (B, S, S, 3) uint8
                mid_step = True
                l, ab, mask = to_lab(rgb)  # (B, 1, S, S), (B, 2, S, S), (B,)
                with autocast():
                    output = model(l)  # (B, Q, S/4, S/4) logits or (B, 2, S/4, S/4) ab
                    loss = raw.loss(output, ab, mask)
                accelerator.backward(loss)
                if cfg.grad_clip > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                mid_step = False
                loss_value = loss.item()  # synchronises: the wait share below is GPU idle time
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"loss is {loss_value} at step {step}; lower --lr or check the data")
                elapsed += time.perf_counter() - t_step
                window_loss += loss_value
                window_n += 1
                bar.update(1)

                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    dt = time.perf_counter() - window_t0
                    wait = batches.wait_s - window_wait0
                    row = {
                        "step": step,
                        "loss": window_loss / window_n,
                        "lr": lr,
                        "img_per_s": window_n * cfg.batch_size * world / dt,
                        "wait_share": wait / dt,
                        "elapsed_s": round(elapsed, 2),
                        **{f"skipped_{k}": v for k, v in batches.skipped_total().items()},
                    }
                    bar.set_postfix(
                        loss=f"{row['loss']:.3f}", img_s=f"{row['img_per_s']:.1f}", wait=f"{row['wait_share']:.0%}"
                    )
                    if main_proc:
                        _log_row(
                            log_path,
                            {k: row.get(k, "") for k in ("step", "loss", "lr", "img_per_s", "wait_share", "elapsed_s")},
                        )
                        if tb is not None:
                            for k in ("loss", "lr", "img_per_s", "wait_share"):
                                tb.add_scalar(f"train/{k}", row[k], step)
                    window_loss, window_n, window_t0, window_wait0 = 0.0, 0, time.perf_counter(), batches.wait_s

                t_side = time.perf_counter()  # validation and checkpoints stay out of the throughput figures
                if (
                    val is not None
                    and main_proc
                    and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.max_steps)
                ):
                    figures = evaluate(raw, val, device, cfg.batch_size, autocast, val_prior)
                    sample_grid(raw, val, device, out / "samples" / f"step_{step:07d}.png", cfg.sample_images)
                    _log_row(out / "val.csv", {"step": step, **figures})
                    if tb is not None:
                        for k, v in figures.items():
                            tb.add_scalar(f"val/{k}", v, step)
                    skipped = batches.skipped_total()
                    tqdm.write(
                        f"step {step}: "
                        + ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
                        + (f"; skipped photos {skipped}" if skipped else "")
                    )

                if step % cfg.ckpt_every == 0 and step < cfg.max_steps:
                    save("periodic")
                window_t0 += time.perf_counter() - t_side

                stop = interrupt.requested
                if world > 1:  # every process stops after the same step, or the checkpoint's collectives hang
                    stop = bool(accelerator.reduce(torch.tensor([float(stop)], device=device), "sum").item() > 0)
                if stop and step < cfg.max_steps:
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        bar.close()
        if mid_step:  # weights may be updated while the step count and data position are not
            raise KeyboardInterrupt(
                f"stopped in the middle of step {step + 1}: no checkpoint written; --resume continues "
                "from the last checkpoint"
            ) from None
        save("interrupted")
        raise
    bar.close()

    # ------------------------------------------------------------------ final model
    save("final")
    if main_proc:
        raw.eval()
        model_dir = out / "model"
        raw.save_pretrained(str(model_dir))
        (out / "final.json").write_text(
            json.dumps(
                {"step": step, "elapsed_s": elapsed, **figures, "skipped": batches.skipped_total(),
                 "hardware": hardware(accelerator.device, accelerator.num_processes), "torch": torch.__version__},
                indent=1,
            )
            + "\n"
        )
        tqdm.write(f"saved {model_dir}")
        if cfg.push_to_hub:
            raw.push_to_hub(cfg.push_to_hub)
            tqdm.write(f"pushed to https://huggingface.co/{cfg.push_to_hub}")
        if tb is not None:
            tb.close()
    accelerator.end_training()
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
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0
