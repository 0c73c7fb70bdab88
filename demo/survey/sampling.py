"""Pairs of a prepared survey and the trials one participant sees.

A *pair* is a real photo and one altered version of it: a colorization (by one
model at one temperature) or, for attention checks, obviously wrong colours. A
participant's session is a few practice trials (with feedback, left out of the
statistics), then the test trials with the attention checks mixed in. Within a
session a photo appears at most once in the test block when there are enough
photos (so no one compares two colorizations of the same photo), the conditions
(model, temperature) are balanced, and the real photo is on the left in half of
each block's trials, in random order. Practice never shows a photo of the test
block (its feedback would give the answer away), so a survey with too few photos
for both blocks runs fewer practice trials, or none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

__all__ = ["Pair", "Trial", "sample_session", "PRACTICE_PREFIX"]

PRACTICE_PREFIX = "practice|"


@dataclass(frozen=True)
class Pair:
    """A real photo and an altered version of it.

    Attributes:
        pair_id: stable id, e.g. "A010|default|T0.38|3f2a9c1b0d4e" (photo, model, temperature,
            weights digest) or "A010|check:hue".
        photo: the photo's name (file stem).
        real, fake: image files (same size).
        model: the model label, or the check ("hue", "swap") for attention pairs.
        temperature: the annealed-mean temperature (None: a regression model or a check).
        kind: "trial" or "attention".
    """

    pair_id: str
    photo: str
    real: Path
    fake: Path
    model: str
    temperature: float | None
    kind: str = "trial"

    @property
    def condition(self) -> tuple[str, float | None]:
        return self.model, self.temperature


@dataclass(frozen=True)
class Trial:
    """One pair as shown: which side holds the real photo, and how the answer counts.

    ``kind`` is "practice", "trial" or "attention"; ``pair_id`` is the pair's id
    (prefixed with "practice|" for practice trials, so practice never blocks a
    test vote on the same pair)."""

    pair: Pair
    kind: str
    real_side: str

    @property
    def pair_id(self) -> str:
        return PRACTICE_PREFIX + self.pair.pair_id if self.kind == "practice" else self.pair.pair_id

    @property
    def left(self) -> Path:
        return self.pair.real if self.real_side == "left" else self.pair.fake

    @property
    def right(self) -> Path:
        return self.pair.fake if self.real_side == "left" else self.pair.real


def _balanced_sides(n: int, rng: random.Random) -> list[str]:
    """n sides, half "left" (the odd one out at random), shuffled."""
    sides = ["left", "right"] * (n // 2)
    if n % 2:
        sides.append(rng.choice(["left", "right"]))
    rng.shuffle(sides)
    return sides


def _pick_test_pairs(pairs: Sequence[Pair], n: int, rng: random.Random) -> list[Pair]:
    """n distinct pairs, conditions balanced, photos distinct while photos last."""
    by_photo: dict[str, dict[tuple, Pair]] = {}
    for p in pairs:
        by_photo.setdefault(p.photo, {})[p.condition] = p
    conditions = sorted({p.condition for p in pairs}, key=lambda c: (c[0], -1.0 if c[1] is None else c[1]))
    n = min(n, len(pairs))
    chosen: list[Pair] = []
    used: set[str] = set()
    while len(chosen) < n:
        # One round: each photo at most once, conditions dealt round-robin from a random start.
        photos = list(by_photo)
        rng.shuffle(photos)
        offset = rng.randrange(len(conditions))
        deal = [conditions[(offset + i) % len(conditions)] for i in range(len(photos))]
        rng.shuffle(deal)
        for photo, cond in zip(photos, deal):
            options = by_photo[photo]
            pair = options.get(cond)
            if pair is None or pair.pair_id in used:  # this photo lacks the condition, or it is spent
                free = [p for p in options.values() if p.pair_id not in used]
                if not free:
                    continue
                pair = rng.choice(free)
            chosen.append(pair)
            used.add(pair.pair_id)
            if len(chosen) == n:
                break
    return chosen


def sample_session(
    pairs: Sequence[Pair],
    checks: Sequence[Pair] = (),
    n_trials: int = 40,
    n_practice: int = 5,
    n_attention: int = 0,
    seed: int | None = None,
) -> list[Trial]:
    """The trials of one participant, in order.

    Args:
        pairs: the colorized pairs (kind "trial").
        checks: attention-check pairs (kind "attention").
        n_trials: test trials (capped at the number of pairs).
        n_practice: practice trials first, with feedback; drawn only from photos not in
            the test block, so fewer (or none) when the photos are too few for both.
        n_attention: attention checks mixed into the test block at random places
            (capped at the number of checks; never two of the same photo).
        seed: for a reproducible session.
    Returns:
        practice trials, then test trials and checks; in each block the real photo is
        on the left in half the trials (+-1 for odd counts).
    """
    if min(n_trials, n_practice, n_attention) < 0:
        raise ValueError(f"counts must be >= 0, got trials={n_trials}, practice={n_practice}, attention={n_attention}")
    if not pairs:
        raise ValueError("the survey has no colorized pairs; run `python -m demo.survey prepare` first")
    rng = random.Random(seed)
    test = _pick_test_pairs(pairs, n_trials, rng)

    # Practice feedback reveals which photo is real, so practice only on photos the test
    # block never shows; with too few spare photos there are fewer (or no) practice trials.
    in_test = {p.photo for p in test}
    spare = [p for p in pairs if p.photo not in in_test]
    practice = _pick_test_pairs(spare, n_practice, rng) if spare else []

    attention: list[Pair] = []
    seen: set[str] = set()
    for c in rng.sample(list(checks), len(checks)):
        if len(attention) == n_attention:
            break
        if c.photo not in seen:
            attention.append(c)
            seen.add(c.photo)

    practice_trials = [Trial(p, "practice", s) for p, s in zip(practice, _balanced_sides(len(practice), rng))]
    block = [(p, "trial") for p in test]
    for c in attention:  # never first, so the participant has settled in
        block.insert(rng.randint(1, len(block)) if block else 0, (c, "attention"))
    sides = _balanced_sides(len(block), rng)
    return practice_trials + [Trial(p, kind, s) for (p, kind), s in zip(block, sides)]
