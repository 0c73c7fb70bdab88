"""Several models evaluated as one: their predicted colour distributions pooled per pixel.

``python -m evaluation ... --pool 'LABEL=MODEL,MODEL[,...][:RULE]'`` adds a row for the
pool of the named models (shipped names, folders or Hub ids): every member predicts, for each
pixel, a distribution over the same colour classes (the same objective and class centres:
Zhang et al.'s joint ab bins, or the per-channel classes of a and b), and the pool's
distribution is, with equal weights,

* ``geometric`` (the default; a logarithmic opinion pool): the normalised geometric mean
  of the members' probabilities, i.e. the mean of their log-probabilities: classes every
  member finds likely keep their mass, classes one member rules out lose it;
* ``mixture`` (a linear opinion pool): the mean of the probabilities, as broad as the
  members' disagreement.

The pooled distribution is decoded like the first member's (the annealed mean at the row's
temperature), at the first member's output resolution (the others' logits resized
bilinearly, then made probabilities). Each member's network runs once per photo even when it is also a
``--model`` row of the same report (``Shared``). The pool costs the members' networks
together: it is a study of what two models know between them, not a shipped model.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorizer.pipeline import Prediction

RULES = ("geometric", "mixture")


def parse_pool(spec: str) -> tuple[str, list[str], str]:
    """``--pool``'s 'LABEL=MODEL,MODEL[,...][:RULE]' as (label, member sources, rule)."""
    label, sep, rest = spec.partition("=")
    members, rule = rest, "geometric"
    head, colon, tail = rest.rpartition(":")
    if colon and not any(c in tail for c in "/\\,"):  # a rule, not a drive letter's colon (C:/models/a)
        members, rule = head, tail.strip()
    sources = [m.strip() for m in members.split(",") if m.strip()]
    if not sep or not label.strip() or len(sources) < 2 or rule not in RULES:
        raise ValueError(f"--pool {spec!r}: expected LABEL=MODEL,MODEL[,...][:{'|'.join(RULES)}], "
                         "e.g. pooled=default,hypercolumn-eccv16")
    return label.strip(), sources, rule


def _centres(model) -> torch.Tensor:
    if model.objective == "channel_classification":
        return model.channel_centers
    if model.objective == "classification":
        return model.bin_centers
    raise ValueError(f"a pool needs models that predict colour classes, not a {model.objective} model")


def _channels(objective: str) -> int:
    """How many distributions a pixel's classes hold: a's and b's for per-channel classes, one for joint bins."""
    return 2 if objective == "channel_classification" else 1


def _log_softmax(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Logits (or unnormalised log-probabilities) ``(1, C, h, w)`` -> log-probabilities, each of
    the ``channels`` equal slices of C its own distribution (per-channel classes: a's n, then b's)."""
    return torch.cat([F.log_softmax(c, 1) for c in x.chunk(channels, 1)], 1)


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"pool rule {rule!r}: expected one of {', '.join(RULES)}")


def pool_log_probabilities(parts: Sequence[torch.Tensor], rule: str, channels: int = 1) -> torch.Tensor:
    """Pool the members' log-probabilities ``(1, C, h, w)`` (one size) by ``rule`` with equal
    weights: ``geometric`` the renormalised mean of the log-probabilities, ``mixture`` the log
    of the mean probability; ``channels`` 2 for per-channel classes (each half its own
    distribution), 1 for joint bins."""
    _check_rule(rule)
    stacked = torch.stack(list(parts))  # (M, 1, C, h, w)
    if rule == "mixture":
        return torch.logsumexp(stacked, 0) - math.log(len(parts))
    return _log_softmax(stacked.mean(0), channels)


class Shared:
    """A model whose last prediction is kept, so that a photo's network runs once however
    many rows (its own and pools') ask for it; everything else is the model's."""

    def __init__(self, model, source: str | None = None):
        self.model = model
        self.source = source
        self._last: tuple[str, Prediction] | None = None

    def analyze(self, image: Image.Image) -> Prediction:
        arr = np.asarray(image)
        key = hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()
        if self._last is None or self._last[0] != key:
            self._last = (key, self.model.analyze(image))
        return self._last[1]

    def __getattr__(self, name):
        if name.startswith("_") or name in ("model", "source"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        return getattr(self.model, name)


class PooledModel:
    """The rows' interface of a model (``analyze``, ``temperature``, ``uses_temperature``,
    ``objective``) for a pool of models with the same colour classes."""

    uses_temperature = True

    def __init__(self, members: Sequence, rule: str = "geometric"):
        if len(members) < 2:
            raise ValueError("a pool needs at least two models")
        _check_rule(rule)
        first = members[0]
        for m in members:
            if m.needs_lightness:
                raise ValueError(f"a pool decodes Lab colour classes alone; a {m.network} {m.color_space} model "
                                 "needs the photo's lightness to decode")
            if m.objective != first.objective or not torch.equal(_centres(m).cpu(), _centres(first).cpu()):
                raise ValueError("the pooled models must predict the same colour classes (objective and class "
                                 f"centres): {first.objective} with {len(_centres(first))} classes against "
                                 f"{m.objective} with {len(_centres(m))}")
        self.members, self.rule = list(members), rule
        self.objective = first.objective
        self.temperature = first.temperature

    @property
    def description(self) -> dict:
        """What the report's settings record of the pool."""
        return {"rule": self.rule, "members": [getattr(m, "source", None) or type(m).__name__ for m in self.members]}

    def analyze(self, image: Image.Image) -> Prediction:
        preds = [m.analyze(image) for m in self.members]
        size = preds[0].output.shape[-2:]
        channels = _channels(self.objective)
        parts = []
        for p in preds:
            logits = p.output.float()
            if logits.shape[-2:] != size:  # resize the logits: resized log-probabilities would not sum to 1
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            parts.append(_log_softmax(logits, channels))
        first = self.members[0]
        model = first.model if isinstance(first, Shared) else first
        return Prediction(model, preds[0].lightness, pool_log_probabilities(parts, self.rule, channels))


def load_pools(specs: Sequence[str], load: Callable[[str], object]) -> dict[str, PooledModel]:
    """``--pool`` specs -> label: ``PooledModel``, its members by ``load(source)`` (which
    should hand out one ``Shared`` per source)."""
    pools = {}
    for spec in specs:
        label, sources, rule = parse_pool(spec)
        if label in pools:
            raise ValueError(f"--pool {spec!r}: two pools named {label!r}")
        pools[label] = PooledModel([load(s) for s in sources], rule)
    return pools
