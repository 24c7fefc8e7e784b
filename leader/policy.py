"""The automatic sync/async switch (DESIGN §3), with hysteresis.

A job under ``aggregation = "auto"`` starts synchronous. :class:`AutoPolicy` watches, over a
sliding window of ``window_s`` seconds:

* **spread** = slowest / median task time (from hand-out to the update's arrival; a task taken
  back at a round deadline or from a dead worker counts with the time it had been out). In a
  synchronous round everyone waits for the slowest, so a spread of 3 means two thirds of the
  round is spent waiting;
* **churn** = joins + leaves + expiries. A worker that leaves mid-round stalls a synchronous
  round until its task is re-done elsewhere; asynchronous aggregation does not care;
* **bandwidth utilisation** of the leader's link (0..1), when the link's capacity is known.
  Synchronous rounds push every update at once; buffered async spreads the load.

It switches to async when any signal crosses its *high* threshold, and back to sync only when
every signal is below its *low* threshold; a switch also needs ``min_dwell_s`` since the
previous one. Two thresholds plus the dwell time are what keep it from flapping. Each switch is
returned as a :class:`Switch` with a human-readable reason; the coordinator turns it into a
``policy_switched`` event.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = ["AutoPolicy", "Mode", "PolicyConfig", "PolicyMetrics", "Switch"]

Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of the auto policy. ``*_high`` enters async, ``*_low`` returns to sync."""

    window_s: float = 20.0
    min_tasks: int = 6
    # Task times on shared machines are noisy (1.5x between identical tasks is common), so
    # the band is wide: only a real straggler (2.5x the median) flips the mode.
    spread_high: float = 2.5
    spread_low: float = 1.5
    churn_high: int = 2
    churn_low: int = 0
    bandwidth_high: float = 0.85
    bandwidth_low: float = 0.5
    min_dwell_s: float = 20.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.min_dwell_s < 0:
            raise ValueError("window_s must be > 0 and min_dwell_s >= 0")
        if self.min_tasks < 2:
            raise ValueError("min_tasks must be >= 2")
        if not 1.0 <= self.spread_low < self.spread_high:
            raise ValueError("need 1 <= spread_low < spread_high")
        if not 0 <= self.churn_low < self.churn_high:
            raise ValueError("need 0 <= churn_low < churn_high")
        if not 0.0 <= self.bandwidth_low < self.bandwidth_high <= 1.0:
            raise ValueError("need 0 <= bandwidth_low < bandwidth_high <= 1")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PolicyConfig:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown policy key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            want_int = known[name] in (int, "int")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"policy.{name}: expected a number, got {value!r}")
            if want_int and not isinstance(value, int):
                raise ValueError(f"policy.{name}: expected an integer, got {value!r}")
            values[name] = value if want_int else float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PolicyMetrics:
    """What the policy saw over its window at ``at``."""

    at: float
    tasks: int
    spread: float | None
    churn: int
    bandwidth: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Switch:
    """A decided change of mode and why."""

    at: float
    previous: Mode
    mode: Mode
    reason: str
    metrics: PolicyMetrics


class AutoPolicy:
    """Decides between sync and async from observed task times, churn and bandwidth.

    Time comes from the caller (``at`` / ``now`` arguments), so tests replay synthetic
    sequences without sleeping.
    """

    def __init__(
        self, config: PolicyConfig | None = None, *, start: Mode = "sync", started_at: float = 0.0
    ) -> None:
        self.config = config or PolicyConfig()
        self.mode: Mode = start
        self.reason = "start synchronous (DESIGN §3)" if start == "sync" else f"start {start}"
        self._last_switch_at = started_at
        self._tasks: deque[tuple[float, float]] = deque()
        self._churn: deque[float] = deque()
        self._bandwidth: deque[tuple[float, float]] = deque()
        self.switches: list[Switch] = []

    # -- observations ------------------------------------------------------------------
    def observe_task(self, seconds: float, at: float) -> None:
        """A task came back (or was taken back) ``seconds`` after it was handed out."""
        if seconds < 0 or seconds != seconds:
            raise ValueError(f"task time must be a non-negative number, got {seconds!r}")
        self._tasks.append((at, seconds))

    def observe_churn(self, at: float) -> None:
        """A node joined, left or expired."""
        self._churn.append(at)

    def observe_bandwidth(self, utilisation: float, at: float) -> None:
        """The leader's link was ``utilisation`` (0..1) busy over the last sampling period."""
        if not 0.0 <= utilisation <= 1.0:
            raise ValueError(f"utilisation must be in [0, 1], got {utilisation!r}")
        self._bandwidth.append((at, utilisation))

    # -- decision ----------------------------------------------------------------------
    def metrics(self, now: float) -> PolicyMetrics:
        self._trim(now)
        times = [s for _, s in self._tasks]
        spread: float | None = None
        if len(times) >= self.config.min_tasks:
            median = statistics.median(times)
            spread = max(times) / median if median > 0 else None
        bandwidth = statistics.fmean(u for _, u in self._bandwidth) if self._bandwidth else None
        return PolicyMetrics(now, len(times), spread, len(self._churn), bandwidth)

    def decide(self, now: float) -> Switch | None:
        """Switch mode if the signals say so; returns the switch, or None to stay."""
        m = self.metrics(now)
        c = self.config
        if now - self._last_switch_at < c.min_dwell_s:
            return None
        reason: str | None = None
        target: Mode = self.mode
        if self.mode == "sync":
            reasons = []
            if m.spread is not None and m.spread >= c.spread_high:
                reasons.append(
                    f"task-time spread {m.spread:.2f} >= {c.spread_high} over {m.tasks} tasks"
                )
            if m.churn >= c.churn_high:
                reasons.append(f"churn {m.churn} >= {c.churn_high} joins/leaves")
            if m.bandwidth is not None and m.bandwidth >= c.bandwidth_high:
                reasons.append(f"leader link {m.bandwidth:.0%} busy >= {c.bandwidth_high:.0%}")
            if reasons:
                target = "async"
                reason = "; ".join(reasons) + f" in the last {c.window_s:g} s"
        else:
            calm_spread = m.spread is not None and m.spread <= c.spread_low
            calm_churn = m.churn <= c.churn_low
            calm_bw = m.bandwidth is None or m.bandwidth <= c.bandwidth_low
            if calm_spread and calm_churn and calm_bw:
                target = "sync"
                reason = (
                    f"spread {m.spread:.2f} <= {c.spread_low}, churn {m.churn} <= "
                    f"{c.churn_low}"
                    + ("" if m.bandwidth is None else f", link {m.bandwidth:.0%} busy")
                    + f" in the last {c.window_s:g} s"
                )
        if reason is None or target == self.mode:
            return None
        switch = Switch(now, self.mode, target, reason, m)
        self.mode = target
        self.reason = reason
        self._last_switch_at = now
        # Task times measured under the old mode say little about the new one.
        self._tasks.clear()
        self.switches.append(switch)
        return switch

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._tasks and self._tasks[0][0] < horizon:
            self._tasks.popleft()
        while self._churn and self._churn[0] < horizon:
            self._churn.popleft()
        while self._bandwidth and self._bandwidth[0][0] < horizon:
            self._bandwidth.popleft()
