"""Turing-test statistics against hand-computed values."""

import math

import pytest

from demo.survey.stats import Z95, attention_pass_rate, failed_attention, fool_rates, rate, wilson_interval


def test_wilson_half_of_ten():
    # p = 0.5, n = 10, z^2 = 3.8415: centre (0.5 + 0.19207) / 1.38415 = 0.5,
    # half-width 1.96 * sqrt(0.025 + 0.0096037) / 1.38415 = 0.263413.
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.236593, abs=1e-6)
    assert high == pytest.approx(0.763407, abs=1e-6)


def test_wilson_extremes_have_closed_forms():
    z2 = Z95**2
    # 0 of n: [0, z^2 / (n + z^2)]; n of n: [n / (n + z^2), 1].
    assert wilson_interval(0, 2) == pytest.approx((0.0, z2 / (2 + z2)))
    assert wilson_interval(0, 2)[1] == pytest.approx(0.657620, abs=1e-6)
    assert wilson_interval(1, 1) == pytest.approx((1 / (1 + z2), 1.0))
    assert wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + z2))


def test_wilson_one_of_three():
    # centre (1/3 + 0.640243) / 2.280486 = 0.426916; half 1.959964 * sqrt(0.0740741 + 0.106707) / 2.280486 = 0.365424
    low, high = wilson_interval(1, 3)
    assert low == pytest.approx(0.061492, abs=1e-5)
    assert high == pytest.approx(0.792340, abs=1e-5)


def test_wilson_symmetry_and_bounds():
    for n in (1, 7, 40, 1000):
        for k in range(0, n + 1, max(1, n // 7)):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
            low2, high2 = wilson_interval(n - k, n)
            assert low == pytest.approx(1 - high2, abs=1e-12) and high == pytest.approx(1 - low2, abs=1e-12)


def test_wilson_bad_input_and_no_votes():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert math.isnan(rate("x", 0, 0).rate)
    with pytest.raises(ValueError, match="hits=4, n=3"):
        wilson_interval(4, 3)
    with pytest.raises(ValueError):
        wilson_interval(-1, 3)


def _vote(kind, fooled, model="A", t=0.38, photo="p1", session="s1"):
    return {"kind": kind, "fooled": fooled, "model": model, "temperature": t, "photo": photo, "session_id": session}


@pytest.fixture
def votes():
    v = []
    # model A at T=0.38: 3 of 8 fooled; model A at T=1: 1 of 2; model B (regression, no T): 2 of 2.
    v += [_vote("trial", i < 3, "A", 0.38, photo=f"p{i % 4}") for i in range(8)]
    v += [_vote("trial", i < 1, "A", 1.0, photo="p9", session="s2") for i in range(2)]
    v += [_vote("trial", True, "B", None, photo="p0", session="s3") for _ in range(2)]
    v += [_vote("practice", True, "A", 0.38, session="s1") for _ in range(5)]  # ignored
    v += [_vote("attention", False, "hue", None, session="s1"), _vote("attention", True, "swap", None, session="s2")]
    return v


def test_fool_rates_overall_and_grouped(votes):
    (overall,) = fool_rates(votes)
    assert (overall.group, overall.hits, overall.n) == ("all", 6, 12)
    assert overall.rate == pytest.approx(0.5)

    by_model = {r.group: (r.hits, r.n) for r in fool_rates(votes, "model")}
    assert by_model == {"A": (4, 10), "B": (2, 2)}
    by_t = {r.group: (r.hits, r.n) for r in fool_rates(votes, "temperature")}
    assert by_t == {"0.38": (3, 8), "1": (1, 2), "-": (2, 2)}
    by_cond = {r.group: (r.hits, r.n) for r in fool_rates(votes, "condition")}
    assert by_cond == {"A T=0.38": (3, 8), "A T=1": (1, 2), "B T=-": (2, 2)}
    by_photo = {r.group: (r.hits, r.n) for r in fool_rates(votes, "photo")}
    # p0: trials 0, 4 (fooled: 0) + two of B (fooled) = 3/4; p1: 1, 5 -> 1/2; p2: 2, 6 -> 1/2; p3: 0/2; p9: 1/2
    assert by_photo == {"p0": (3, 4), "p1": (1, 2), "p2": (1, 2), "p3": (0, 2), "p9": (1, 2)}

    a038 = next(r for r in fool_rates(votes, "condition") if r.group == "A T=0.38")
    assert a038.rate == pytest.approx(0.375)
    assert (a038.low, a038.high) == pytest.approx(wilson_interval(3, 8))
    assert a038.as_row() == ["A T=0.38", 8, 3, 37.5, round(100 * a038.low, 1), round(100 * a038.high, 1)]


def test_fool_rates_empty_and_bad_grouping():
    (r,) = fool_rates([])
    assert (r.n, r.low, r.high) == (0, 0.0, 1.0)
    assert fool_rates([], "model") == []
    with pytest.raises(ValueError, match="'colour'"):
        fool_rates([], "colour")


def test_attention(votes):
    a = attention_pass_rate(votes)
    assert (a.hits, a.n, a.rate) == (1, 2, 0.5)
    assert failed_attention(votes) == {"s2"}
