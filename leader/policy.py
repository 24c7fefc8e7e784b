"""The automatic sync/async switch, measured on what each mode costs.

The rule in brief, with the other algorithms: docs/architecture.md#the-syncasync-policy.

A job under ``aggregation = "auto"`` starts synchronous. :class:`AutoPolicy` watches, over a
sliding window of ``window_s`` seconds:

* **idle** = the fraction of worker-time spent *not* holding a task: from the arrival of a
  worker's update to the hand-out of its next task, plus the whole time of tasks that were lost
  (taken back at a deadline, from a dead worker, or refused as too stale). In synchronous mode
  this is the barrier's cost, measured: a worker that finished early waits for the round to
  close. In asynchronous mode it is only the cost of asking for the next task;
* **barrier** (asynchronous mode only) = what synchronous rounds *would* idle with the task
  times seen now: consecutive tasks are grouped into virtual rounds of one task per live
  worker, and each round idles ``1 − mean / slowest``; the predicted idle is that plus the
  idle measured in async (the cost of asking, which sync pays too);
* **spread** = slowest / median task time (hand-out to arrival), at least ``min_tasks`` tasks,
  used in async to confirm that task times are even before returning to sync;
* **staleness** = mean number of versions between the model an update started from and the
  model it is applied to: what asynchronous aggregation costs (an update computed on an old model
  is worth less; FedBuff weights it ``1/sqrt(1+s)``);
* **churn** = joins + leaves + expiries, and of those the **expiries** (workers that vanished
  without a goodbye). An expiry stalls a sync round until the worker is declared dead (the
  heartbeat patience) while every other worker waits; async does not care. That stall is
  measured where it is paid, as idle (the waits it causes and the lost task), and weighed
  against staleness like any barrier cost: a count of expiries is no trigger of its own (with
  a short patience the stall costs less than async's staleness; switching on two expiries
  made jobs 1.44x slower, see docs/leader-logic.md). A clean leave costs sync no more than
  async (in either mode its task is re-queued at once, and a round then closes with the
  rest), and a join costs sync nothing (the newcomer gets a task sized to the time left in
  the round). Any churn keeps async from returning, and expiries at ``churn_high`` mean sync
  is not "no worse";
* **bandwidth utilisation** of the leader's link (0..1), when the link's capacity is known;
* **staleness cost** = ``1 − 1/sqrt(1 + s)``, the share of an update's worth that FedBuff's own
  discount takes away at staleness ``s``: what async loses per update, as idle is what sync
  loses per worker-second. In async ``s`` is the measured staleness; in sync it is the staleness
  async would show, ``(workers − 1) / K`` (with ``K`` updates per version, each update waits
  on average for the other workers' updates to make ``(workers − 1) / K`` versions; ``K = 1``
  for FedAsync and EDDL's mix). With four workers and FedBuff's K = 3 it is 29%.

Warm-up is no evidence. A worker's first task in a job is a *probe* (a quarter of the target
time, sized before its speed is known) and it carries the worker's cold start; in a sync round
the worker then idles three quarters of the round. That is the cost of measuring, paid once per
worker, not the cost of the barrier, so the caller reports such tasks with ``warmup=True``: they
are kept out of idle and spread (a warm-up task that is *lost* still counts, its time is
wasted either way).

Rule. In sync it switches to async when **any** of: idle ≥ ``max(idle_high, staleness cost)``
(the barrier, stragglers' and expiries' stalls included, costs more than staleness would), link
≥ ``bandwidth_high``. (Spread is no trigger in sync: rounds hand late askers shorter tasks on
purpose and a worker's first task is a short probe, so there spread measures the schedule, not a
straggler; what a straggler costs sync shows in idle.) In async it switches back when **all**
of: predicted idle ≤ ``idle_low``, spread ≤ ``spread_low``, churn ≤ ``churn_low``, link ≤
``bandwidth_low`` — or when async's own cost is the larger, staleness cost ≥ predicted idle +
(``idle_high`` − ``idle_low``) (the same band as the idle thresholds) or staleness ≥
``staleness_high``, while sync is predicted no worse than its own trigger (predicted idle <
``idle_high``, spread < ``spread_high``, expiries < ``churn_high``). Either return is blocked
for ``memory_s`` after sync was last *measured* above its trigger: a prediction made from async
task times cannot see everything a real round costs, and a measurement beats a prediction until
it is old. A switch also needs ``min_dwell_s`` since the previous switch (the first switch needs
only enough evidence). Two thresholds per signal, the dwell time and the memory are what keep it
from flapping. Each switch is returned as a :class:`Switch` with a human-readable reason; the
coordinator turns it into a ``policy_switched`` event.
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
        if self.mode == "sync":
            expected = max(0, self._workers - 1) / self.async_buffer
            cost: float | None = staleness_cost(expected)
        else:
            cost = None if stale is None else staleness_cost(stale)
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
        )

    def decide(self, now: float) -> Switch | None:
        """Switch mode if the signals say so; returns the switch, or None to stay."""
        m = self.metrics(now)
        c = self.config
        if self.mode == "sync" and m.idle is not None and m.idle >= self._idle_bar(m):
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
        for queue in (self._tasks, self._lost, self._waits, self._stale):
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
        if m.bandwidth is not None and m.bandwidth >= c.bandwidth_high:
            reasons.append(f"leader link {m.bandwidth:.0%} busy >= {c.bandwidth_high:.0%}")
        return "; ".join(reasons) or None

    def _to_sync(self, m: PolicyMetrics, now: float) -> str | None:
        c = self.config
        if self._sync_costly is not None and now - self._sync_costly[0] < c.memory_s:
            return None  # sync was measured costly recently; a prediction does not overrule it
        if m.barrier is None or m.spread is None:
            return None
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
