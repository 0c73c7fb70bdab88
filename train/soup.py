"""Average the weights of models trained from one start: ``python -m train.soup``.

    python -m train.soup --model default --model runs/soup-s1/model --model runs/soup-s2/model \
        --to runs/soup/model

A uniform model soup (Wortsman et al. 2022, "Model soups: averaging weights of multiple
fine-tuned models improves accuracy without increasing inference time"): runs of one recipe
that started from the same weights (``init_from``) and differ in seed or a training-only
setting land in one basin of the loss, where the mean of their weights is a model of its
own, as fast as each of them, often more accurate than any. Every floating tensor is the
plain mean of the models' (batch-norm statistics included); integer counters are the first
model's; the colour prior (a statistic of the training photos, used only by the training
loss) is the mean of theirs. The models must share every other setting (which fixes every
tensor's name and shape), or it is one error line. The soup is written with a card that names its
ingredients; evaluate it like any model (``python -m evaluation ... --model soup=PATH``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from colorizer.errors import first_line, report_error
from colorizer.model import Colorizer

__all__ = ["main", "soup"]

_TRAINING_ONLY = ("prior",)  # settings that only the training loss reads: averaged, not compared
_DERIVED = ("prior", "class_weights")  # buffers the soup's own constructor computes from the averaged prior


def soup(models: list[Colorizer]) -> Colorizer:
    """The uniform soup of ``models``: a new model whose every floating tensor is their mean.

    Raises:
        ValueError: fewer than two models, or models that differ in a setting other than
            the prior; one line naming the first difference.
    """
    if len(models) < 2:
        raise ValueError(f"a soup needs at least two models, got {len(models)}")
    first = models[0].settings
    for i, m in enumerate(models[1:], start=2):
        for key in sorted(set(first) | set(m.settings)):
            if key not in _TRAINING_ONLY and first.get(key) != m.settings.get(key):
                raise ValueError(f"model {i} differs from model 1 in {key} ({m.settings.get(key)!r} against "
                                 f"{first.get(key)!r}): only runs of one recipe can be averaged")
    states = [m.state_dict() for m in models]  # one constructor's settings: the same names and shapes
    priors = torch.stack([m.prior.double() / m.prior.double().sum() for m in models])
    settings = dict(first, prior=priors.mean(0).tolist())
    out = Colorizer(**settings)
    mean = {}
    for k, v in states[0].items():
        if k in _DERIVED:
            continue
        if v.is_floating_point():
            mean[k] = torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype)
        else:  # counters (num_batches_tracked): the first model's
            mean[k] = v.clone()
    missing, unexpected = out.load_state_dict(mean, strict=False)
    if unexpected or set(missing) - set(_DERIVED):
        raise ValueError(f"the soup's tensors do not fit its network (missing {missing}, unexpected {unexpected})")
    return out.eval()


def _card(names: list[str]) -> str:
    rows = "\n".join(f"| {i} | `{name}` |" for i, name in enumerate(names, start=1))
    return (f"A uniform model soup (`python -m train.soup`): the mean of the weights of {len(names)} models of one "
            f"recipe, trained from the same start.\n\n| | ingredient |\n|---:|---|\n{rows}\n\n"
            f"Evaluate it before trusting it: `python -m evaluation PHOTOS --model soup=PATH`.")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: exit 2 with one error line when a model is missing or the models differ."""
    p = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="a model to average: a shipped name or a model folder (give it twice or more)")
    p.add_argument("--to", type=Path, required=True, help="model folder to write")
    args = p.parse_args(argv)
    try:
        if (args.to / "model.safetensors").exists():
            raise ValueError(f"{args.to / 'model.safetensors'} exists: give a new folder")
        models = [Colorizer.from_pretrained(name) for name in args.model]
        result = soup(models)
        args.to.mkdir(parents=True, exist_ok=True)
        result.save_pretrained(args.to, model_card_kwargs={"results": _card(args.model)})
    except (OSError, ValueError) as e:
        return report_error("train.soup", first_line(e))
    print(args.to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
