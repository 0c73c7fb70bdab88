"""Turing-test statistics: fool rates with 95% Wilson score intervals.

The fool rate is the share of trials in which the colorized photo was taken for
the real one. A perfect colorizer cannot be told apart, so its fool rate is 50%
(the ceiling); Zhang et al. (2016) report 32% for their full model. Practice
trials are left out; attention checks are reported on their own as a pass rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["Rate", "wilson_interval", "rate", "fool_rates", "attention_pass_rate", "failed_attention", "Z95"]

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


@dataclass(frozen=True)
class Rate:
    """A share with its 95% Wilson interval. ``rate``, ``low``, ``high`` in [0, 1];
    ``rate`` is NaN when ``n`` is 0."""

    group: str
    hits: int
    n: int
    rate: float
    low: float
    high: float

    def as_row(self) -> list:
        """[group, n, hits, rate %, low %, high %] for tables."""
        pct = lambda x: round(100 * x, 1)  # noqa: E731
        return [self.group, self.n, self.hits, pct(self.rate), pct(self.low), pct(self.high)]


def wilson_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``hits / n`` (Wilson 1927).

    Returns (low, high) in [0, 1]; (0, 1) when n is 0. Unlike the normal
    approximation it stays inside [0, 1] and behaves at 0 and n hits.
    """
    if n < 0 or hits < 0 or hits > n:
        raise ValueError(f"need 0 <= hits <= n, got hits={hits}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if hits == 0 else max(0.0, centre - half)  # exact at the ends, not 1e-17 off
    high = 1.0 if hits == n else min(1.0, centre + half)
    return low, high


def rate(group: str, hits: int, n: int) -> Rate:
    """A ``Rate`` from counts."""
    low, high = wilson_interval(hits, n)
    return Rate(group, hits, n, hits / n if n else math.nan, low, high)


def _temperature_label(t: float | None) -> str:
    return "-" if t is None else f"{t:g}"


GROUPINGS: dict[str, Callable[[dict], str]] = {
    "model": lambda v: v["model"],
    "temperature": lambda v: _temperature_label(v["temperature"]),
    "condition": lambda v: f"{v['model']} T={_temperature_label(v['temperature'])}",
    "photo": lambda v: v["photo"],
}


def fool_rates(votes: Iterable[dict], by: str | None = None) -> list[Rate]:
    """Fool rates of the test trials (``kind == "trial"``), overall or grouped.

    Args:
        votes: dicts with keys kind, fooled, model, temperature, photo.
        by: None (one "all" row), or "model", "temperature", "condition" (model and
            temperature), "photo".
    Returns:
        one ``Rate`` per group, sorted by group name.
    """
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"by must be None or one of {sorted(GROUPINGS)}, got {by!r}")
    key = (lambda v: "all") if by is None else GROUPINGS[by]
    counts: dict[str, list[int]] = {}
    for v in votes:
        if v["kind"] != "trial":
            continue
        c = counts.setdefault(key(v), [0, 0])
        c[0] += bool(v["fooled"])
        c[1] += 1
    if by is None and not counts:
        counts["all"] = [0, 0]
    return [rate(g, hits, n) for g, (hits, n) in sorted(counts.items())]


def attention_pass_rate(votes: Iterable[dict]) -> Rate:
    """Share of attention checks answered correctly (the real photo told from the
    obviously wrong one)."""
    checks = [v for v in votes if v["kind"] == "attention"]
    return rate("attention", sum(not v["fooled"] for v in checks), len(checks))


def failed_attention(votes: Iterable[dict]) -> set[str]:
    """Session ids of participants who failed at least one attention check."""
    return {v["session_id"] for v in votes if v["kind"] == "attention" and v["fooled"]}
