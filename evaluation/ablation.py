"""An ablation table from training runs and one evaluation: ``python -m evaluation.ablation``.

    python -m evaluation PHOTOS --model runs/abl-base/model --model runs/abl-lam1/model ... \
        --temperature 0.38 --out results/ablation
    python -m evaluation.ablation --evaluation results/ablation --base runs/abl-base runs/abl-* \
        --out results/ablation/ablation.md

Each row is a run, named by the settings in which its ``config.json`` differs from the
base run's (so the labels cannot drift from what was trained), with its figures from
the evaluation's ``results.json`` at each evaluated temperature, and the gray baseline
on top for reference. Steps, crops and training time come from the run's ``final.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from colorizer.errors import report_error

__all__ = ["main", "ablation_table", "differences"]

# settings that name a run or its bookkeeping, not what it learns
_IGNORED = {"out", "resume", "val_every", "ckpt_every", "log_every", "keep_checkpoints", "sample_images",
            "push_to_hub", "threads", "cpu", "config_file", "prior", "ckpt_minutes"}


def differences(config: dict, base: dict) -> str:
    """``key=value`` for every learning-relevant setting that differs from ``base``. A setting
    that ``base`` lacks (an option added after it ran) is compared with training's default,
    which the base run had in effect."""
    from train.config import TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def in_base(k: str):
        return base[k] if k in base else defaults.get(k)

    diff = [f"{k}={config[k]}" for k in sorted(config) if k not in _IGNORED and config.get(k) != in_base(k)]
    return ", ".join(diff) if diff else "base"


def ablation_table(runs: list[Path], base: Path, evaluation: Path) -> str:
    """The Markdown table (see the module docstring)."""
    results = json.loads((evaluation / "results.json").read_text())
    rows = {r["name"]: r for r in results["table"]}
    base_config = json.loads((base / "config.json").read_text())
    lines = [
        "| run | differs from base in | steps x batch | train min | T | AuC | rebal. AuC | PSNR | colourfulness |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    gray = rows.get("gray (ab = 0)")
    if gray:
        lines.append(f"| gray (ab = 0) | | | | | {gray['auc']:.3f} | {gray['auc_rebalanced']:.3f} | "
                     f"{gray['psnr']:.2f} | {gray['colorfulness']:.1f} |")
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        final = json.loads((run / "final.json").read_text())
        label = differences(config, base_config)
        model_rows = [r for r in results["table"] if r.get("model") == str(run / "model")]
        if not model_rows:
            raise ValueError(f"{run / 'model'} is not in {evaluation / 'results.json'}")
        for r in model_rows:
            t = "" if r.get("temperature") is None else f"{r['temperature']:g}"
            lines.append(
                f"| {run.name} | {label} | {final['step']} x {config['batch_size']} | {final['elapsed_s'] / 60:.1f} "
                f"| {t} | {r['auc']:.3f} | {r['auc_rebalanced']:.3f} | {r['psnr']:.2f} | {r['colorfulness']:.1f} |"
            )
    truth = results["table"][0].get("truth_colorfulness")
    note = (f"\n\n{results['settings']['photos']} held-out photos; the real photos' colourfulness is {truth:.1f}. "
            f"Rebalanced AuC uses {results['settings']['prior']}.") if truth is not None else ""
    return "\n".join(lines) + note + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (config.json, final.json, model/)")
    p.add_argument("--base", type=Path, required=True, help="the run the others are compared with")
    p.add_argument("--evaluation", type=Path, required=True, help="python -m evaluation output folder")
    p.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = p.parse_args(argv)
    try:
        runs = sorted(set(args.runs), key=lambda r: (r != args.base, str(r)))
        table = ablation_table(runs, args.base, args.evaluation)
    except (OSError, KeyError, ValueError) as e:
        return report_error("evaluation.ablation", e)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
