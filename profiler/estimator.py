"""Rates refined from real work: an EWMA with a confidence that grows and decays.

:class:`RateEstimator` is the common core: it follows ``amount / seconds`` observations (samples
trained, bytes transferred) with an exponentially weighted moving average taken on the
*logarithm* of the rate, so a 3× slowdown and a 3× speed-up move the estimate by the same step
and one outlier cannot drag it by more than a bounded factor. The first observations are
averaged (weight ``1/(n+1)``, counting the prior as one) until that weight falls to ``alpha``;
from then on each observation weighs ``alpha``. With the default ``alpha = 0.4`` an old rate's
weight falls to 0.6⁵ ≈ 8% within five observations. A *regime change* (a device throttling, a
neighbour taking a core) is followed faster: when two observations in a row lie beyond a factor
``shift_ratio`` (1.5) of the estimate on the same side, the second weighs ``shift_alpha`` (0.7).
A 3× slowdown is then within 25% after three observations, while a lone outlier still moves the
estimate by ``alpha`` only.

Confidence says how much to trust the figure: it grows with the number of observations
(``n / (n + 1)``) and halves every ``half_life_s`` seconds since the newest one. As the evidence
ages the estimate itself relaxes (geometrically) toward the prior, the micro-benchmark, if any.

:class:`RuntimeEstimator` (samples per second of real training tasks, the figure the scheduler
uses) and :class:`TransferEstimator` (bytes per second of real transfers, the passive network
estimate) are the two uses.
"""

from __future__ import annotations

import math
import threading

__all__ = ["RateEstimator", "RuntimeEstimator", "TransferEstimator"]


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


class RateEstimator:
    """EWMA of an observed rate (``amount / seconds``), blended with an optional prior.

    Thread-safe: observations may come from task threads while the scheduler reads.
    """

    def __init__(
        self,
        prior: float | None = None,
        prior_at: float | None = None,
        alpha: float = 0.4,
        half_life_s: float = 600.0,
        shift_ratio: float = 1.5,
        shift_alpha: float = 0.7,
    ) -> None:
        for name, value in (("alpha", alpha), ("shift_alpha", shift_alpha)):
            if not 0 < value <= 1 or not math.isfinite(value):
                raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
        if not shift_ratio > 1 or not math.isfinite(shift_ratio):
            raise ValueError(f"shift_ratio must be a finite number > 1, got {shift_ratio!r}")
        self.alpha = float(alpha)
        self.shift_alpha = float(shift_alpha)
        self._log_shift = math.log(shift_ratio)
        self._streak = 0  # signed count of consecutive observations beyond shift_ratio
        self.half_life_s = _check_positive("half_life_s", half_life_s)
        self._lock = threading.Lock()
        self._prior: float | None = None
        self._prior_at: float | None = None
        self._log_rate: float | None = None
        self._n = 0
        self._last_at: float | None = None
        if prior is not None:
            self.set_prior(prior, prior_at)

    # -- feeding ------------------------------------------------------------------------------

    def set_prior(self, rate: float, at: float | None = None) -> None:
        """Set (or replace) the prior, e.g. a fresh micro-benchmark result."""
        r = _check_positive("prior", rate)
        when = None if at is None else _check_positive("prior_at", at, allow_zero=True)
        with self._lock:
            self._prior = r
            self._prior_at = when

    def observe(self, amount: float, seconds: float, at: float) -> None:
        """Record that ``amount`` units took ``seconds``, finishing at Unix time ``at``.

        Raises ``ValueError``/``TypeError`` (and changes nothing) for a non-finite, zero or
        negative amount or duration.
        """
        a = _check_positive("amount", amount)
        s = _check_positive("seconds", seconds)
        t = _check_positive("at", at, allow_zero=True)
        log_rate = math.log(a / s)
        with self._lock:
            if self._log_rate is None:
                base = None if self._prior is None else math.log(self._prior)
                self._log_rate = log_rate if base is None else 0.5 * (base + log_rate)
            else:
                # Running mean over the first observations (prior counted once), then EWMA.
                counted = self._n + (2 if self._prior is not None else 1)
                weight = max(self.alpha, 1.0 / counted)
                gap = log_rate - self._log_rate
                if abs(gap) > self._log_shift:
                    side = 1 if gap > 0 else -1
                    self._streak = self._streak + side if self._streak * side > 0 else side
                else:
                    self._streak = 0
                if abs(self._streak) >= 2:
                    weight = max(weight, self.shift_alpha)
                self._log_rate += weight * gap
            self._n += 1
            # Out-of-order reports (from parallel tasks) never move the clock backwards.
            self._last_at = t if self._last_at is None else max(self._last_at, t)

    def reset(self) -> None:
        """Forget all observations (the prior stays)."""
        with self._lock:
            self._log_rate = None
            self._n = 0
            self._last_at = None
            self._streak = 0

    # -- reading ------------------------------------------------------------------------------

    @property
    def observations(self) -> int:
        return self._n

    @property
    def prior(self) -> float | None:
        return self._prior

    @property
    def prior_at(self) -> float | None:
        return self._prior_at

    @property
    def last_observed_at(self) -> float | None:
        return self._last_at

    def _freshness(self, now: float) -> float:
        if self._last_at is None:
            return 0.0
        age = max(0.0, now - self._last_at)
        return float(0.5 ** (age / self.half_life_s))

    def confidence(self, now: float) -> float:
        """Trust in :meth:`rate` from observations, in [0, 1]: 0 with none, near 1 when many
        recent ones; halves every ``half_life_s`` without news."""
        with self._lock:
            n = self._n
            fresh = self._freshness(now)
        return (n / (n + 1.0)) * fresh

    def rate(self, now: float) -> float | None:
        """The current estimate (units per second), or ``None`` with neither data nor prior."""
        with self._lock:
            if self._log_rate is None:
                return self._prior
            if self._prior is None:
                return math.exp(self._log_rate)
            fresh = self._freshness(now)
            log_prior = math.log(self._prior)
            return math.exp(fresh * self._log_rate + (1.0 - fresh) * log_prior)

    def seconds_for(self, amount: float, now: float) -> float | None:
        """Predicted duration of ``amount`` units, or ``None`` when there is no estimate."""
        a = _check_positive("amount", amount, allow_zero=True)
        r = self.rate(now)
        return None if r is None else a / r


class RuntimeEstimator(RateEstimator):
    """Samples per second of real training tasks, with the micro-benchmark as prior.

    The scheduler reads :meth:`samples_per_second`; once tasks have been observed it follows
    them rather than the benchmark.
    """

    def samples_per_second(self, now: float) -> float | None:
        return self.rate(now)


class TransferEstimator(RateEstimator):
    """Bytes per second of real transfers to one peer (the passive network estimate)."""

    def bytes_per_second(self, now: float) -> float | None:
        return self.rate(now)
