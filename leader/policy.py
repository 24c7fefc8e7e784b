"""The automatic sync/async switch, measured on what each mode costs.

In brief: docs/architecture.md#the-syncasync-policy. A job under ``aggregation = "auto"``
starts synchronous. :class:`AutoPolicy` watches, over a sliding window of ``window_s`` s:

* **idle** = the fraction of worker-time spent *not* holding a task: from the arrival of a
  worker's update to the hand-out of its next task, plus the whole time of tasks that were lost
  (taken back at a deadline, from a dead worker, or refused as too stale). In synchronous mode
  this is the barrier's cost, measured: a worker that finished early waits for the round to
  close. In asynchronous mode it is only the cost of asking for the next task;
* **barrier** (async only) = the predicted sync idle: consecutive task times grouped into
  virtual rounds of one task per live worker, each idling ``1 − mean / slowest``, plus the idle
  measured in async (the cost of asking, which sync pays too);
* **spread** = slowest / median task time, at least ``min_tasks`` tasks (async: are task
  times even enough to return to sync?);
* **staleness** = mean versions between an update's base model and the one it is applied to;
* **churn** = joins + leaves + expiries, and of those the **expiries** (workers that vanished
  without a goodbye). An expiry's stall of a sync round is measured where it is paid, as idle;
  a count of expiries is no trigger of its own, and a clean leave or a join costs sync nothing
  more than async (docs/leader-logic.md). Any churn keeps async from returning, and expiries at
  ``churn_high`` mean sync is not "no worse";
* **bandwidth utilisation** of the leader's link (0..1), when the link's capacity is known;
* **staleness cost** = ``1 − 1/sqrt(1 + s)``, the share of an update's worth FedBuff's
  discount takes away: measured ``s`` in async, in sync the staleness async would show,
  ``(workers − 1) / K`` (``K`` updates per version, 1 for FedAsync and EDDL's mix);
* **progress ratio** (FedBuff, ``K >= 2`` only) = predicted progress per second of async over
  sync, counting a version as one step whatever the number of updates it sums (eight deltas
  summed from one base moved the model no further than three, measured) and an async version
  at ``1/sqrt(1 + s)`` of a fresh one: in sync ``n·S((N − 1)/K) / (K·(1 − idle))`` with ``n``
  the measured updates per version (async makes ``N/K`` versions per task time where sync
  makes one per round, and loses no time to the barrier); in async ``N·S(s)·(1 − idle) /
  (K·(1 − predicted idle))`` with ``s`` measured. Until the first switch, sync not yet
  measured is predicted from the cluster's shape (``n = N``, no idle: idle only raises the
  ratio). Off for ``K = 1`` rules, whose version applies part of one update (not measured).

Warm-up is no evidence: a worker's first task (a short probe carrying its cold start) is
reported with ``warmup=True`` and kept out of idle and spread, as is the wait after it (a lost
one still counts as idle).

Rule (docs/leader-logic.md has it with its reasons). sync -> async on **any** of: idle ≥
``max(idle_high, staleness cost)``, progress ratio ≥ ``rate_high``, link ≥ ``bandwidth_high``
(spread is no trigger in sync: rounds size tasks on purpose). async -> sync, never while the
progress ratio is above ``rate_low``, on **all** of: predicted idle ≤ ``idle_low``, spread ≤
``spread_low``, churn ≤ ``churn_low``, link ≤ ``bandwidth_low``; or, while sync is predicted no
worse than its trigger, on staleness cost ≥ predicted idle + (``idle_high`` − ``idle_low``),
staleness ≥ ``staleness_high`` or progress ratio ≤ ``1 / rate_high``. A return is blocked for
``memory_s`` after sync was last *measured* above a trigger (a measurement beats a prediction
until it is old), and any switch needs ``min_dwell_s`` since the last. Each switch is a
:class:`Switch` with a human-readable reason; the coordinator makes it a ``policy_switched``
event.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

from eddl.policyconfig import PolicyConfig

__all__ = ["AutoPolicy", "Mode", "PolicyConfig", "PolicyMetrics", "Switch", "staleness_cost"]

Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class PolicyMetrics:
    """What the policy saw over its window at ``at`` (``None``: not enough evidence)."""

    at: float
    tasks: int
    spread: float | None
    churn: int
    bandwidth: float | None
    idle: float | None = None
    barrier: float | None = None
    staleness: float | None = None
    expiries: int = 0
    staleness_cost: float | None = None
    updates_per_version: float | None = None
    progress_ratio: float | None = None

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
    """Decides between sync and async from observed idle time, task times, churn, staleness
    and bandwidth.

    Time comes from the caller (``at`` / ``now`` arguments), so tests replay synthetic
    sequences without sleeping.
    """

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        start: Mode = "sync",
        started_at: float = 0.0,
        async_buffer: int = 1,
    ) -> None:
        if isinstance(async_buffer, bool) or not isinstance(async_buffer, int) or async_buffer < 1:
            raise ValueError(f"async_buffer must be an integer >= 1, got {async_buffer!r}")
        self.config = config or PolicyConfig()
        # Updates per version of the job's async rule (FedBuff's K; 1 for FedAsync, EDDL mix).
        self.async_buffer = async_buffer
        self.mode: Mode = start
        self.reason = "start synchronous" if start == "sync" else f"start {start}"
        self._last_switch_at: float | None = None
        self._started_at = started_at
        self._tasks: deque[tuple[float, float]] = deque()
        self._lost: deque[tuple[float, float]] = deque()
        self._waits: deque[tuple[float, float]] = deque()
        self._stale: deque[tuple[float, int]] = deque()
        self._churn: deque[tuple[float, bool]] = deque()
        self._bandwidth: deque[tuple[float, float]] = deque()
        self._versions: deque[tuple[float, int]] = deque()
        self._workers = 0
        # When sync was last measured too costly (idle above its trigger), and how costly.
        self._sync_costly: tuple[float, float] | None = None
        self.switches: list[Switch] = []

    # -- observations ------------------------------------------------------------------
    def observe_task(
        self, seconds: float, at: float, *, lost: bool = False, warmup: bool = False
    ) -> None:
        """A task came back ``seconds`` after it was handed out; ``lost``: it was taken back
        (its time is wasted, and counts as idle); ``warmup``: a worker's probe task, which
        says nothing about the barrier (ignored unless lost)."""
        _check_seconds(seconds)
        if lost:
            self._lost.append((at, seconds))
        elif not warmup:
            self._tasks.append((at, seconds))

    def observe_wait(self, seconds: float, at: float, *, warmup: bool = False) -> None:
        """A worker held no task for ``seconds`` (update sent -> next task handed out);
        ``warmup``: the wait followed a probe task (ignored, see the module docstring)."""
        _check_seconds(seconds)
        if not warmup:
            self._waits.append((at, seconds))

    def observe_staleness(self, versions: int, at: float) -> None:
        """An update was applied ``versions`` versions after the one it started from."""
        if versions < 0:
            raise ValueError(f"staleness must be >= 0, got {versions!r}")
        self._stale.append((at, int(versions)))

    def observe_churn(self, at: float, *, expiry: bool = False) -> None:
        """A node joined or left (``expiry=False``), or expired (``expiry=True``)."""
        self._churn.append((at, expiry))

    def observe_bandwidth(self, utilisation: float, at: float) -> None:
        """The leader's link was ``utilisation`` (0..1) busy over the last sampling period."""
        if not 0.0 <= utilisation <= 1.0:
            raise ValueError(f"utilisation must be in [0, 1], got {utilisation!r}")
        self._bandwidth.append((at, utilisation))

    def observe_version(self, updates: int, at: float) -> None:
        """A model version was made from ``updates`` updates (a round's, or the async buffer's)."""
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            raise ValueError(f"updates must be an integer >= 0, got {updates!r}")
        self._versions.append((at, updates))

    def set_workers(self, count: int) -> None:
        """Live workers: the size of a virtual round when predicting sync's barrier."""
        self._workers = max(0, int(count))

    # -- decision ----------------------------------------------------------------------
    def metrics(self, now: float) -> PolicyMetrics:
        self._trim(now)
        c = self.config
        times = [s for _, s in self._tasks]
        spread: float | None = None
        if len(times) >= c.min_tasks:
            median = statistics.median(times)
            spread = max(times) / median if median > 0 else None
        idle: float | None = None
        lost = sum(s for _, s in self._lost)
        if len(times) + len(self._lost) >= c.min_tasks and len(self._waits) >= c.min_tasks // 2:
            waited = sum(s for _, s in self._waits) + lost
            total = waited + sum(times)
            idle = waited / total if total > 0 else None
        barrier: float | None = None
        if self.mode == "async" and len(times) >= c.min_tasks:
            barrier = _barrier(times, max(2, self._workers))
            if idle is not None:
                barrier = min(1.0, barrier + idle)
        stale = statistics.fmean(s for _, s in self._stale) if self._stale else None
        bandwidth = statistics.fmean(u for _, u in self._bandwidth) if self._bandwidth else None
        expiries = sum(1 for _, expired in self._churn if expired)
        per_version = None
        if len(self._versions) >= max(2, c.min_tasks // 4):
            per_version = statistics.fmean(u for _, u in self._versions)
        k, ratio = self.async_buffer, None
        if self.mode == "sync":
            expected = max(0, self._workers - 1) / k
            cost: float | None = staleness_cost(expected)
            if idle is not None and per_version is not None:
                n, busy = per_version, max(0.01, 1 - idle)
            else:  # the shape of the cluster: rounds of one update per worker, no idle
                n, busy = (self._workers if self._last_switch_at is None else 0), 1.0
            if k >= 2 and n > 0:
                ratio = n * (1 - staleness_cost(expected)) / (k * busy)
        else:
            cost = None if stale is None else staleness_cost(stale)
            if k >= 2 and cost is not None and barrier is not None:
                busy = 1 - (idle or 0.0)
                ratio = max(2, self._workers) * (1 - cost) * busy / (k * max(0.01, 1 - barrier))
        return PolicyMetrics(
            now,
            len(times),
            spread,
            len(self._churn),
            bandwidth,
            idle,
            barrier,
            stale,
            expiries,
            cost,
            per_version,
            ratio,
        )

    def decide(self, now: float) -> Switch | None:
        """Switch mode if the signals say so; returns the switch, or None to stay."""
        m = self.metrics(now)
        c = self.config
        slow = m.updates_per_version is not None and (m.progress_ratio or 0.0) >= c.rate_high
        if self.mode == "sync" and m.idle is not None and (m.idle >= self._idle_bar(m) or slow):
            self._sync_costly = (now, m.idle)
        if self._last_switch_at is not None and now - self._last_switch_at < c.min_dwell_s:
            return None
        reason = self._to_async(m) if self.mode == "sync" else self._to_sync(m, now)
        if reason is None:
            return None
        target: Mode = "async" if self.mode == "sync" else "sync"
        reason += f" in the last {c.window_s:g} s"
        switch = Switch(now, self.mode, target, reason, m)
        self.mode = target
        self.reason = reason
        self._last_switch_at = now
        # Observations made under the old mode say little about the new one.
        for queue in (self._tasks, self._lost, self._waits, self._stale, self._versions):
            queue.clear()
        self.switches.append(switch)
        return switch

    def _idle_bar(self, m: PolicyMetrics) -> float:
        """Idle at which sync costs more than async: idle_high, or the staleness cost."""
        return max(self.config.idle_high, m.staleness_cost or 0.0)

    def _to_async(self, m: PolicyMetrics) -> str | None:
        c = self.config
        reasons = []
        bar = self._idle_bar(m)
        if m.idle is not None and m.idle >= bar:
            spread = "" if m.spread is None else f"; task-time spread {m.spread:.2f}"
            why = (
                f"{bar:.0%}"
                if bar <= c.idle_high
                else f"{bar:.0%} (what staleness would cost async: {self._workers} workers, "
                f"{self.async_buffer} update(s) per version)"
            )
            expired = (
                ""
                if not m.expiries
                else f"; {m.expiries} worker(s) expired without leaving, each stalling a round"
            )
            reasons.append(
                f"sync barrier: workers idle {m.idle:.0%} >= {why} of the time "
                f"waiting for rounds to close{spread}{expired}"
            )
        if m.progress_ratio is not None and m.progress_ratio >= c.rate_high:
            reasons.append(self._progress(m, "async", m.progress_ratio, c.rate_high))
        if m.bandwidth is not None and m.bandwidth >= c.bandwidth_high:
            reasons.append(f"leader link {m.bandwidth:.0%} busy >= {c.bandwidth_high:.0%}")
        return "; ".join(reasons) or None

    def _progress(self, m: PolicyMetrics, better: Mode, ratio: float, bar: float) -> str:
        """The progress-ratio reason, with the figures it was computed from."""
        k, worth = self.async_buffer, 1 - (m.staleness_cost or 0.0)
        if self.mode == "sync":
            sync = (
                "sync not measured yet: rounds of one update per worker at best"
                if m.updates_per_version is None or m.idle is None
                else f"sync: {m.updates_per_version:.1f} updates per version, workers idle "
                f"{m.idle:.0%}"
            )
            figures = (
                f"{sync}; async: {self._workers} workers, {k} updates per version, "
                f"expected staleness {max(0, self._workers - 1) / k:.1f}, worth {worth:.0%}"
            )
        else:
            figures = (
                f"async: {self._workers} workers, {k} updates per version, staleness "
                f"{m.staleness:.1f}, worth {worth:.0%}; predicted sync idle {m.barrier:.0%}"
            )
        other = "sync" if better == "async" else "async"
        return (
            f"progress: {better} predicted {ratio:.2f}x as fast as {other} (versions per second, "
            f"each counted at its worth) >= {bar:.2f} ({figures})"
        )

    def _to_sync(self, m: PolicyMetrics, now: float) -> str | None:
        c = self.config
        if self._sync_costly is not None and now - self._sync_costly[0] < c.memory_s:
            return None  # sync was measured costly recently; a prediction does not overrule it
        if m.barrier is None or m.spread is None:
            return None
        if m.progress_ratio is not None and m.progress_ratio > c.rate_low:
            return None  # async is still predicted to make faster progress
        link = "" if m.bandwidth is None else f", link {m.bandwidth:.0%} busy"
        calm = (
            m.barrier <= c.idle_low
            and m.spread <= c.spread_low
            and m.churn <= c.churn_low
            and (m.bandwidth is None or m.bandwidth <= c.bandwidth_low)
        )
        if calm:
            return (
                f"predicted sync idle {m.barrier:.0%} <= {c.idle_low:.0%}, spread "
                f"{m.spread:.2f} <= {c.spread_low}, churn {m.churn} <= {c.churn_low}{link}"
            )
        sync_no_worse = (
            m.barrier < c.idle_high
            and m.spread < c.spread_high
            and m.expiries < c.churn_high
            and (m.bandwidth is None or m.bandwidth < c.bandwidth_high)
        )
        if m.staleness is None or m.staleness_cost is None or not sync_no_worse:
            return None
        band = c.idle_high - c.idle_low
        tail = (
            f" while predicted sync idle is {m.barrier:.0%} < {c.idle_high:.0%} (spread "
            f"{m.spread:.2f}, churn {m.churn}{link})"
        )
        if m.progress_ratio is not None and m.progress_ratio * c.rate_high <= 1.0:
            return self._progress(m, "sync", 1 / m.progress_ratio, c.rate_high) + tail
        if m.staleness >= c.staleness_high:
            return f"async staleness {m.staleness:.1f} >= {c.staleness_high:g} versions" + tail
        if m.staleness_cost >= m.barrier + band:
            return (
                f"async staleness {m.staleness:.1f} versions costs {m.staleness_cost:.0%} of "
                f"each update >= predicted sync idle {m.barrier:.0%} + {band:.0%}" + tail
            )
        return None

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window_s
        for queue in (
            self._tasks,
            self._lost,
            self._waits,
            self._stale,
            self._bandwidth,
            self._churn,
            self._versions,
        ):
            while queue and queue[0][0] < horizon:
                queue.popleft()


def staleness_cost(staleness: float) -> float:
    """Share of an update's worth lost at ``staleness`` versions: ``1 − 1/sqrt(1 + s)``."""
    return 1.0 - 1.0 / math.sqrt(1.0 + max(0.0, staleness))


def _check_seconds(seconds: float) -> None:
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"task time must be a non-negative number, got {seconds!r}")


def _barrier(times: list[float], group: int) -> float:
    """Idle fraction of sync rounds made of consecutive groups of ``group`` task times."""
    waited = total = 0.0
    for i in range(0, len(times) - group + 1, group):
        chunk = times[i : i + group]
        slowest = max(chunk)
        waited += sum(slowest - t for t in chunk)
        total += slowest * len(chunk)
    if total <= 0:
        slowest = max(times)
        return 0.0 if slowest <= 0 else 1.0 - statistics.fmean(times) / slowest
    return waited / total
