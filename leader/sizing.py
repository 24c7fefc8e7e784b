"""Task sizing: how many samples a node's next task holds, from its measured speed.

``samples = clamp(floor(sps × max(seconds − overhead, seconds × min_compute_fraction) /
granularity) × granularity, min_samples, max_samples)``; a node known only by its join-time
micro-benchmark gets a probe of ``probe_fraction`` of that, a node known by nothing a probe of
``probe_fraction × default_samples``. Near the end of a job's data, :meth:`TaskSizer.tail`
shrinks tasks so that every worker finishes the last of it together. With a round budget of
``round_samples`` (the sync rule's ``sum_samples``), :meth:`TaskSizer.round_target` picks what
a sync round's tasks aim at, for time to accuracy rather than throughput: each worker's share of
the budget in training time, or the job's ``task_seconds``. See
docs/leader-logic.md#scheduling-dynamic-distribution and #time-to-accuracy for why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from eddl.profiler.estimator import RuntimeEstimator

__all__ = ["Busy", "EstimatorFactory", "RoundTarget", "TaskSizer", "ThroughputEstimator"]

#: Workers take part in short sync rounds as long as their rounds make at least this share less
#: progress per second than the best choice (see :meth:`TaskSizer.round_target`).
SIT_OUT_TOLERANCE = 0.1
#: Cells (worker x round) that rating the short rounds works on at once: ~8 MB per array.
_BLOCK_CELLS = 1 << 20


class ThroughputEstimator(Protocol):
    """What the sizer needs from a speed estimator (``RuntimeEstimator`` fits)."""

    def observe(self, amount: float, seconds: float, at: float) -> None: ...

    def samples_per_second(self, now: float) -> float | None: ...


EstimatorFactory = Callable[[], ThroughputEstimator]


@dataclass(frozen=True)
class Busy:
    """A task in flight, as the end-of-data rule sees it."""

    node_id: str
    issued_at: float
    samples: int


@dataclass(frozen=True)
class RoundTarget:
    """What the tasks of a sync round (and async tasks) aim at.

    ``training``: ``seconds`` are seconds of training, so that the round holds the budget
    whatever each task costs beyond its training (each worker trains its share of it);
    otherwise ``seconds`` are the task's whole time, the worker's overhead taken off.
    """

    seconds: float
    training: bool = False
    # Workers whose smallest task takes longer than such a round trains: they sit it out.
    sit_out: frozenset[str] = frozenset()


class TaskSizer:
    """Per-node speed (measured, else the benchmark prior) and overhead, and the sizing rules."""

    def __init__(
        self,
        *,
        task_seconds: float = 1.0,
        min_samples: int = 8,
        max_samples: int = 8192,
        default_samples: int = 64,
        granularity: int = 1,
        estimator_factory: EstimatorFactory = RuntimeEstimator,
        now: Callable[[], float] = time.monotonic,
        probe_fraction: float = 0.25,
        min_compute_fraction: float = 0.25,
        round_samples: int = 0,
    ) -> None:
        if not 1 <= min_samples <= default_samples <= max_samples:
            raise ValueError("need 1 <= min_samples <= default_samples <= max_samples")
        if task_seconds <= 0 or granularity < 1:
            raise ValueError("task_seconds must be > 0 and granularity >= 1")
        if not 0 < probe_fraction <= 1:
            raise ValueError("probe_fraction must be in (0, 1]")
        if not 0 < min_compute_fraction <= 1:
            raise ValueError("min_compute_fraction must be in (0, 1]")
        if round_samples < 0:
            raise ValueError("round_samples must be >= 0")
        self.task_seconds = task_seconds
        self.round_samples = round_samples
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.default_samples = default_samples
        self.granularity = granularity
        self.probe_fraction = probe_fraction
        self.min_compute_fraction = min_compute_fraction
        self._estimator_factory = estimator_factory
        self._now = now
        self._estimators: dict[str, ThroughputEstimator] = {}
        self._priors: dict[str, float] = {}
        self._overheads: dict[str, float] = {}
        self._links: dict[str, float] = {}  # leader-seen cost per task beyond training (s)
        # What the rules read of the cluster, kept for one instant of the clock and one state
        # of the estimates (``_changes`` counts each change): a leader's command runs at one
        # instant, and its hand-outs read every worker's speed (the round target, the tail).
        self._changes = 0
        self._seen: tuple[int, float] | None = None
        self._speeds: dict[str, tuple[float | None, float | None]] = {}  # (measured, speed)
        self._targets: dict[tuple[str, ...], RoundTarget] = {}

    # -- what is known of a node -------------------------------------------------------------
    def estimator(self, node_id: str) -> ThroughputEstimator:
        self._changes += 1  # the caller may feed it
        est = self._estimators.get(node_id)
        if est is None:
            est = self._estimators[node_id] = self._estimator_factory()
        return est

    def set_prior(self, node_id: str, samples_per_second: float | None) -> None:
        """The node's micro-benchmark result (samples/s); ignored when absent or absurd."""
        if samples_per_second is not None and 0 < samples_per_second < float("inf"):
            self._priors[node_id] = float(samples_per_second)
            self._changes += 1

    def measured(self, node_id: str) -> bool:
        """Whether a finished task of ``node_id`` has been observed."""
        return self._read(node_id)[0] is not None

    def samples_per_second(self, node_id: str) -> float | None:
        """Measured speed once the node finished a task, else its micro-benchmark (or None).

        The benchmark is only a prior: one real task (with the device's real load, throttling
        and data path) says more, so the first observation replaces it rather than being
        averaged with it; later ones are smoothed by the estimator's EWMA.
        """
        return self._read(node_id)[1]

    def _read(self, node_id: str) -> tuple[float | None, float | None]:
        """The node's measured speed now and its speed (measured, else the benchmark), read
        once per instant."""
        return self._known(node_id, self._instant())

    def _known(self, node_id: str, now: float) -> tuple[float | None, float | None]:
        """:meth:`_read` at ``now``, the instant :meth:`_instant` just checked."""
        known = self._speeds.get(node_id)
        if known is None:
            est = self._estimators.get(node_id)
            measured = None if est is None else est.samples_per_second(now)
            speed = measured if measured is not None else self._priors.get(node_id)
            known = self._speeds[node_id] = (measured, speed)
        return known

    def overhead(self, node_id: str) -> float:
        """The node's fixed cost per task in seconds (0 until it reported one)."""
        return self._overheads.get(node_id, 0.0)

    def observe(
        self, node_id: str, samples: int, seconds: float, overhead: float, wall: float = 0.0
    ) -> None:
        """A finished task: ``samples`` trained in ``seconds``, plus its fixed ``overhead``;
        ``wall``: the leader's own time from handing the task out to its update (0: unknown),
        of which what the training does not explain is the task's cost of communication."""
        now = self._now()
        link = max(overhead, wall - seconds) if math.isfinite(wall) else overhead
        if math.isfinite(link) and link >= 0 and wall > 0:
            old_link = self._links.get(node_id)
            self._links[node_id] = link if old_link is None else 0.7 * old_link + 0.3 * link
        if seconds > 0 and samples > 0:
            self.estimator(node_id).observe(samples, seconds, max(now, 0.0))
        if math.isfinite(overhead) and overhead >= 0:
            old = self._overheads.get(node_id)
            self._overheads[node_id] = overhead if old is None else 0.7 * old + 0.3 * overhead
        self._changes += 1

    def _speeds_of(self, ids: Iterable[str]) -> dict[str, float]:
        """The known speeds of ``ids`` (as :meth:`samples_per_second`), in one pass."""
        now = self._instant()
        speeds: dict[str, float] = {}
        for node_id in ids:
            sps = self._known(node_id, now)[1]
            if sps is not None:
                speeds[node_id] = sps
        return speeds

    def _instant(self) -> float:
        """The clock's time; what the rules read is forgotten when it or an estimate moved."""
        now = self._now()
        if self._seen != (self._changes, now):
            self._seen = (self._changes, now)
            self._speeds.clear()
            self._targets.clear()
        return now

    # -- the rules ---------------------------------------------------------------------------
    def size_for(
        self, node_id: str, seconds: float | None = None, *, training: bool = False
    ) -> int:
        """Samples a task for ``node_id`` should hold to take about ``seconds`` (default target).

        ``training``: ``seconds`` of training alone (a share of a round's budget, rounded to the
        nearest mini-batch so that the round holds about the budget), not of the whole task."""
        sps = self.samples_per_second(node_id)
        if sps is None:
            # Nothing known about the node: a probe-sized first task. The default size is a
            # guess for a typical device; on a slow one a full default task could take many
            # times the target, and its speed is known after this one.
            probe = self.default_samples * self.probe_fraction
            return max(self.min_samples, min(self.default_samples, self._round_down(probe)))
        target = self.task_seconds if seconds is None else seconds
        if training:
            budget = target
        else:
            budget = max(target - self.overhead(node_id), target * self.min_compute_fraction)
        want = sps * budget
        if not self.measured(node_id):
            # Only the micro-benchmark so far: it ran alone, without the device's load,
            # throttling or data path, so it errs fast. A first task of a fraction of the
            # target time measures the real speed cheaply (a 4x-optimistic benchmark then
            # costs one short task, not one long round).
            want *= self.probe_fraction
        if training:
            return self._training_size(want)
        return max(self.min_samples, min(self.max_samples, self._round_down(want)))

    def round_target(self, workers: Iterable[str]) -> RoundTarget:
        """What a sync round's tasks aim at, for time to accuracy.

        ``K`` workers of speeds ``sps_w`` and a budget ``B = round_samples`` (FedAvg's
        ``sum_samples``: the round's deltas are summed while it holds at most ``B`` samples).
        A round whose tasks train ``t`` seconds holds ``N = t · Σ sps`` samples and, its deltas
        summed up to ``B`` (``η = clamp(K·B/N, 1, K)``), moves the model as far as ``η·N/K``
        samples trained in a row; it costs ``t + c``, ``c`` the median over the workers of the
        cost per task beyond training (what the leader sees from handing a task out to its
        update, less the training time the worker reports; else the worker's own reported
        overhead). A *short* round trains ``t = B / Σ sps`` on every worker, so that it holds
        ``B`` samples (each worker ``sps_w · t``) whatever its tasks cost beyond training: a
        cheaper task makes rounds shorter, never bigger. It is never shorter than the slowest
        worker's smallest task (``min_samples / sps_w``), since the round waits for that one,
        and it is timed by the tasks it hands out (shares rounded to whole mini-batches).
        The short round is taken when it makes more progress per second than tasks of
        ``task_seconds`` (whose time includes the worker's overhead). Without a budget, or
        before any worker's speed is known, ``task_seconds``.
        """
        whole = RoundTarget(self.task_seconds)
        if not self.round_samples:
            return whole
        key = tuple(workers)
        self._instant()
        kept = self._targets.get(key)
        if kept is None:
            kept = self._targets[key] = self._round_target(set(key), whole)
        return kept

    def _round_target(self, ids: set[str], whole: RoundTarget) -> RoundTarget:
        speeds = {w: r for w, r in self._speeds_of(ids).items() if r > 0}
        if not speeds:
            return whole
        costs = {**self._overheads, **self._links}
        known = sorted(costs[w] for w in ids if w in costs)
        cost = known[len(known) // 2] if known else 0.0
        fastest = sorted(speeds.items(), key=lambda item: (-item[1], item[0]))

        def progress_per_second(seconds: Any, samples: Any, k: Any) -> Any:  # numbers or arrays
            rate = np.minimum(np.maximum(k * self.round_samples / samples, 1.0), k)
            return rate * samples / k / (seconds + cost)

        # Short rounds with the j fastest workers: never shorter than the j-th's smallest
        # task (the others would only wait for it), and as long as the longest of the tasks
        # they get (each share rounded to a mini-batch: a slow worker's may be up to half a
        # batch longer than its share, and the round waits for it). The most workers whose
        # rounds make within SIT_OUT_TOLERANCE of the best progress per second take part; the
        # slower ones sit short rounds out (a worker whose smallest task alone outlasts the
        # others' whole budget would hold every round back).
        shorts, longest, held = self.short_rounds(np.array([r for _, r in fastest]))
        options = progress_per_second(longest, held, np.arange(1.0, len(fastest) + 1))
        near_best = options >= (1 - SIT_OUT_TOLERANCE) * options.max()
        j = int(np.flatnonzero(near_best)[-1]) + 1
        short, progress = float(shorts[j - 1]), float(options[j - 1])
        everyone = sum(speeds.values())
        if short < self.task_seconds and progress > progress_per_second(
            self.task_seconds, everyone * self.task_seconds, len(speeds)
        ):
            sit_out = frozenset(w for w, _ in fastest[j:])
            return RoundTarget(short, training=True, sit_out=sit_out)
        return whole

    def short_rounds(self, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For ``rates`` (samples/s, fastest first), the short round of the ``j`` fastest for
        each ``j``: its training time ``t_j = max(B / Σ_j sps, min_samples / sps_j)``, the
        longest of its tasks (each share ``sps_i · t_j`` rounded as :meth:`_training_size`
        does, over ``sps_i``) and the samples they hold. All ``j`` at once (``n × n`` in numpy,
        not ``n²`` Python steps: a leader of many workers sizes a task per update)."""
        shorts = np.maximum(self.round_samples / np.cumsum(rates), self.min_samples / rates)
        n, g = len(rates), self.granularity
        longest, held = np.empty(n), np.empty(n)
        step = max(1, _BLOCK_CELLS // n)  # rounds per block: bounded memory for many workers
        for lo in range(0, n, step):
            rounds = np.arange(lo, min(n, lo + step))
            shares = np.floor(np.outer(rates, shorts[rounds]) / g + 0.5) * g
            sizes = np.minimum(np.maximum(shares, self.min_samples), self.max_samples)
            member = np.arange(n)[:, None] <= rounds  # worker i takes part in round j: i <= j
            longest[rounds] = np.where(member, sizes / rates[:, None], -np.inf).max(axis=0)
            held[rounds] = np.where(member, sizes, 0.0).sum(axis=0)
        return shorts, longest, held

    def tail(
        self, node_id: str, size: int, left: int, busy: Iterable[Busy], workers: Iterable[str]
    ) -> int:
        """Near the end of the job's data, shrink the task so that every worker finishes
        the last of it at about the same moment.

        With ``left`` samples still to hand out, live workers of speeds ``sps_w`` each free at
        ``f_w`` (now, or the expected end of its task in flight), they all finish together at
        ``E = (left + Σ sps_w·(f_w − now)) / Σ sps_w`` from now; the asking worker gets
        ``sps·E`` samples when that is less than its usual task. Workers with no speed
        estimate yet are left out of the sum.
        """
        own = self.samples_per_second(node_id)
        if own is None:
            return size
        now = self._now()
        speeds = self._speeds_of(set(workers) - {node_id})
        total_rate = own + sum(speeds.values())
        if own * left >= size * total_rate:
            return size  # far from the end: tasks in flight only add to ``want`` below
        busy_until: dict[str, float] = {}
        for task in busy:
            sps = speeds.get(task.node_id)
            if sps is None:  # the asker, a node that left, or one with no speed yet
                continue
            end = task.issued_at + task.samples / sps
            busy_until[task.node_id] = max(busy_until.get(task.node_id, now), end)
        backlog = sum(sps * (busy_until.get(w, now) - now) for w, sps in speeds.items())
        want = own * (left + backlog) / total_rate
        if want >= size:
            return size
        return max(self.min_samples, min(size, self._round_down(want)))

    def _training_size(self, samples: float) -> int:
        """A short round's task: its share to the nearest mini-batch, clamped."""
        size = math.floor(samples / self.granularity + 0.5) * self.granularity
        return max(self.min_samples, min(self.max_samples, size))

    def _round_down(self, samples: float) -> int:
        # The small epsilon keeps 49.999... from becoming 49.
        return math.floor(samples / self.granularity + 1e-6) * self.granularity
