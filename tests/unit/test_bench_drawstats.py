"""Mean, spread and the paired verdict over benchmark draws (bench/drawstats.py)."""

from __future__ import annotations

import math

import pytest

from bench.drawstats import MAX_DRAWS, paired, spread


def test_spread_is_mean_and_sample_sd() -> None:
    s = spread([1.0, 2.0, 3.0])
    assert s.mean == pytest.approx(2.0)
    assert s.sd == pytest.approx(1.0)
    assert s.n == 3
    assert spread([4.0]).sd == 0.0
    with pytest.raises(ValueError):
        spread([])


def test_consistent_gain_is_better_and_its_mirror_worse() -> None:
    a = [0.95, 0.96, 0.97, 0.94, 0.95]
    b = [0.93, 0.935, 0.95, 0.925, 0.93]
    p = paired(a, b, higher_is_better=True)
    assert p.gain == pytest.approx(0.02)
    assert p.verdict == "better"
    assert paired(b, a, higher_is_better=True).verdict == "worse"
    # Lower is better (MSE): the same numbers flip.
    assert paired(a, b, higher_is_better=False).verdict == "worse"


def test_gain_that_changes_sign_across_draws_is_within_noise() -> None:
    a = [2.6, 1.9, 3.0, 2.2, 2.5]
    b = [2.4, 2.5, 2.6, 2.3, 2.4]
    p = paired(a, b, higher_is_better=False)
    assert p.gain - p.half_width < 0 < p.gain + p.half_width
    assert p.verdict == "within noise"


def test_interval_uses_student_t_for_the_draw_count() -> None:
    # Gains 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303.
    p = paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], higher_is_better=True)
    assert p.half_width == pytest.approx(4.303 / math.sqrt(3))
    one = paired([1.0], [0.0], higher_is_better=True)
    assert one.half_width == math.inf and one.verdict == "within noise"


def test_bad_draw_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="equal"):
        paired([1.0, 2.0], [1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="equal"):
        paired([], [], higher_is_better=True)
    many = [1.0] * (MAX_DRAWS + 1)
    with pytest.raises(ValueError, match="at most"):
        paired(many, many, higher_is_better=True)
