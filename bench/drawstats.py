"""Scores over several independent draws: mean, spread, and a paired comparison of two methods.

A *draw* is one seed of a benchmark: other devices, other held-out tasks, another
initialisation. Two methods run on the same draws, so their difference is taken draw by draw
(paired) and judged against its own spread: :func:`paired` says a method is *better beyond
noise* when the mean difference is in its favour and its two-sided 95% Student-t interval
excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Paired", "Spread", "paired", "spread"]

# Two-sided 95% quantiles of Student's t, t(0.975, df), for df = 1..19.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093,
)  # fmt: skip
MAX_DRAWS = len(_T975) + 1


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float
    """Sample standard deviation over the draws (0 for one draw)."""
    n: int


@dataclass(frozen=True)
class Paired:
    """``a − b`` draw by draw, oriented so that a positive ``gain`` favours ``a``."""

    gain: float
    """Mean gain of ``a`` over ``b`` (accuracy: a − b; MSE: b − a)."""
    half_width: float
    """Half-width of the 95% t interval of the mean gain (inf for one draw)."""
    n: int

    @property
    def verdict(self) -> str:
        if self.gain - self.half_width > 0:
            return "better"
        if self.gain + self.half_width < 0:
            return "worse"
        return "within noise"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("spread of no draws")
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return Spread(statistics.fmean(values), sd, len(values))


def paired(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool) -> Paired:
    """The gain of ``a`` over ``b`` on the same draws, with its 95% interval."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired draws need equal, non-zero counts, got {len(a)} and {len(b)}")
    if len(a) > MAX_DRAWS:
        raise ValueError(f"at most {MAX_DRAWS} draws, got {len(a)}")
    sign = 1.0 if higher_is_better else -1.0
    gains = [sign * (x - y) for x, y in zip(a, b, strict=True)]
    if len(gains) == 1:
        return Paired(gains[0], math.inf, 1)
    half = _T975[len(gains) - 2] * statistics.stdev(gains) / math.sqrt(len(gains))
    return Paired(statistics.fmean(gains), half, len(gains))
