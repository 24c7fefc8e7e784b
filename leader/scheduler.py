"""EDDL's dynamic data distribution: hand each ready worker the indexes of its next batch.

There are no static partitions. Every epoch is a seeded permutation of the training set's
indexes (``order(epoch)``), consumed front to back by a cursor. A worker that asks for work gets
the next range of that order, sized so the task takes about ``task_seconds`` at the worker's
estimated speed: ``samples = samples_per_second × (task_seconds - overhead)`` (rounded down to a
multiple of ``granularity``, clamped to ``[min_samples, max_samples]``). ``overhead`` is the
worker's fixed cost per task as it reports it (moving the model in and the update out: small
over a LAN, most of a microcontroller's task over a serial link), smoothed per worker; at least
``min_compute_fraction`` of the target goes to training, so a worker whose transfers alone take
longer than the target still trains a useful amount per transfer. The speed is the worker's
:class:`~eddl.profiler.estimator.RuntimeEstimator`, fed with the real duration of each finished
task. Until then the micro-benchmark the worker reported when it joined stands in, for a first
*probe* task of ``probe_fraction`` of the target time (a benchmark ran alone and errs fast);
with neither, a probe of ``probe_fraction × default_samples``. Fast workers therefore take bigger
ranges and never wait for slow ones, and a join or a leave needs no repartitioning. Near the end
of the job's data (an epoch limit), tasks shrink so that every worker finishes the last of it
at about the same moment (:meth:`Scheduler._tail`).

Work taken back (a worker left or expired, a task ran far past its deadline, an update was
refused) goes to the front of a re-queue and is handed out before the cursor moves on, split if
the next worker wants less than the whole range. Nothing is lost: each position of an epoch is
in exactly one of *not yet handed out*, *in flight*, *re-queued* or *done*, and
:meth:`Scheduler.checkpoint` writes re-queued and in-flight ranges together as "to do", so a
restarted leader hands out again whatever was not finished.

The ``static`` distribution is the baseline for the benchmark: at the start of each epoch the
order is cut into equal shards, one per live worker, and each worker only ever gets ranges of
``default_samples`` from its own shard; a worker whose shard is used up waits for the epoch to end.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError
from eddl.profiler.estimator import RuntimeEstimator

__all__ = [
    "EstimatorFactory",
    "Range",
    "Scheduler",
    "Task",
    "ThroughputEstimator",
]


class ThroughputEstimator(Protocol):
    """What the scheduler needs from a speed estimator (``RuntimeEstimator`` fits)."""

    def observe(self, amount: float, seconds: float, at: float) -> None: ...

    def samples_per_second(self, now: float) -> float | None: ...


EstimatorFactory = Callable[[], ThroughputEstimator]


@dataclass(frozen=True)
class Range:
    """Positions ``[start, stop)`` of epoch ``epoch``'s order."""

    epoch: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def to_list(self) -> list[int]:
        return [self.epoch, self.start, self.stop]


@dataclass
class Task:
    """One unit of work: train on ``indexes`` (positions ``range`` of the epoch's order).

    ``base_version`` and ``layer`` are filled in by the coordinator (the model version the
    worker must train from, and in single-layer mode the layer it updates).
    """

    task_id: str
    node_id: str
    session: int
    range: Range
    indexes: np.ndarray
    issued_at: float
    base_version: int = 0
    layer: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return len(self.range)


class Scheduler:
    """Hands out index ranges; synchronous and fast; time comes from the injected ``now``."""

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        task_seconds: float = 1.0,
        min_samples: int = 8,
        max_samples: int = 8192,
        default_samples: int = 64,
        granularity: int = 1,
        distribution: Literal["dynamic", "static"] = "dynamic",
        estimator_factory: EstimatorFactory = RuntimeEstimator,
        now: Callable[[], float] = time.monotonic,
        task_prefix: str = "t",
        limit_epochs: float | None = None,
        probe_fraction: float = 0.25,
        min_compute_fraction: float = 0.25,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training set is empty")
        if not 1 <= min_samples <= default_samples <= max_samples:
            raise ValueError("need 1 <= min_samples <= default_samples <= max_samples")
        if task_seconds <= 0 or granularity < 1:
            raise ValueError("task_seconds must be > 0 and granularity >= 1")
        if distribution not in ("dynamic", "static"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.num_samples = num_samples
        self.seed = seed
        self.task_seconds = task_seconds
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.default_samples = default_samples
        self.granularity = granularity
        self.distribution = distribution
        if not 0 < probe_fraction <= 1:
            raise ValueError("probe_fraction must be in (0, 1]")
        self.probe_fraction = probe_fraction
        if not 0 < min_compute_fraction <= 1:
            raise ValueError("min_compute_fraction must be in (0, 1]")
        self.min_compute_fraction = min_compute_fraction
        self._overheads: dict[str, float] = {}
        self._estimator_factory = estimator_factory
        self._now = now
        self._prefix = task_prefix
        self._estimators: dict[str, ThroughputEstimator] = {}
        self._priors: dict[str, float] = {}
        self._orders: dict[int, np.ndarray] = {}
        self._epoch = 0
        self._cursor = 0
        self._requeued: deque[Range] = deque()
        self._in_flight: dict[str, Task] = {}
        self._finished: dict[str, str] = {}  # task id -> "done" | "taken back: <reason>"
        self._done_per_epoch: dict[int, int] = {}
        self._completed_epochs = 0
        self._samples_done = 0
        self._next_task = 1
        self._shards: dict[str, deque[Range]] = {}
        self._static_workers: list[str] = []
        # Positions never handed out beyond this many passes (None: no limit).
        self._limit = None if limit_epochs is None else int(limit_epochs * num_samples)

    # -- speed -----------------------------------------------------------------------------
    def estimator(self, node_id: str) -> ThroughputEstimator:
        est = self._estimators.get(node_id)
        if est is None:
            est = self._estimators[node_id] = self._estimator_factory()
        return est

    def set_prior(self, node_id: str, samples_per_second: float | None) -> None:
        """The node's micro-benchmark result (samples/s); ignored when absent or absurd."""
        if samples_per_second is not None and 0 < samples_per_second < float("inf"):
            self._priors[node_id] = float(samples_per_second)

    def measured(self, node_id: str) -> bool:
        """Whether a finished task of ``node_id`` has been observed."""
        est = self._estimators.get(node_id)
        return est is not None and est.samples_per_second(self._now()) is not None

    def samples_per_second(self, node_id: str) -> float | None:
        """Measured speed once the node finished a task, else its micro-benchmark (or None).

        The benchmark is only a prior: one real task (with the device's real load, throttling
        and data path) says more, so the first observation replaces it rather than being
        averaged with it; later ones are smoothed by the estimator's EWMA.
        """
        est = self._estimators.get(node_id)
        measured = None if est is None else est.samples_per_second(self._now())
        return measured if measured is not None else self._priors.get(node_id)

    def size_for(self, node_id: str, seconds: float | None = None) -> int:
        """Samples a task for ``node_id`` should hold to take about ``seconds`` (default target)."""
        if self.distribution == "static":
            return self.default_samples
        sps = self.samples_per_second(node_id)
        if sps is None:
            # Nothing known about the node: a probe-sized first task. The default size is a
            # guess for a typical device; on a slow one a full default task could take many
            # times the target, and its speed is known after this one.
            probe = self.default_samples * self.probe_fraction
            size = math.floor(probe / self.granularity + 1e-6) * self.granularity
            return max(self.min_samples, min(self.default_samples, size))
        target = self.task_seconds if seconds is None else seconds
        budget = max(target - self.overhead(node_id), target * self.min_compute_fraction)
        want = sps * budget
        if not self.measured(node_id):
            # Only the micro-benchmark so far: it ran alone, without the device's load,
            # throttling or data path, so it errs fast. A first task of a fraction of the
            # target time measures the real speed cheaply (a 4x-optimistic benchmark then
            # costs one short task, not one long round).
            want *= self.probe_fraction
        # The small epsilon keeps 49.999... from becoming 49.
        size = math.floor(want / self.granularity + 1e-6) * self.granularity
        return max(self.min_samples, min(self.max_samples, size))

    def overhead(self, node_id: str) -> float:
        """The node's fixed cost per task in seconds (0 until it reported one)."""
        return self._overheads.get(node_id, 0.0)

    # -- handing out -------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of indexes for ``epoch`` (the same on every leader)."""
        order = self._orders.get(epoch)
        if order is None:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.num_samples).astype(np.int64)
            self._orders[epoch] = order
            for old in [e for e in self._orders if e < epoch - 2]:
                if not any(r.epoch == old for r in self._outstanding_ranges()):
                    del self._orders[old]
        return order

    def assign(
        self, node_id: str, session: int = 0, *, seconds: float | None = None
    ) -> Task | None:
        """The next task for ``node_id``, or ``None`` when there is nothing for it right now.

        ``None`` when the epoch limit is reached, or in static mode when the worker's shard is
        used up until the epoch ends.
        """
        size = self._tail(node_id, self.size_for(node_id, seconds))
        rng = self._take(node_id, size)
        if rng is None:
            return None
        task_id = f"{self._prefix}{self._next_task}"
        self._next_task += 1
        indexes = self.order(rng.epoch)[rng.start : rng.stop].copy()
        task = Task(task_id, node_id, session, rng, indexes, self._now())
        self._in_flight[task_id] = task
        return task

    def _tail(self, node_id: str, size: int) -> int:
        """Near the end of the job's data, shrink the task so that every worker finishes
        the last of it at about the same moment.

        With ``left`` samples still to hand out, live workers of speeds ``sps_w`` each free at
        ``f_w`` (now, or the expected end of its task in flight), they all finish together at
        ``E = (left + Σ sps_w·(f_w − now)) / Σ sps_w`` from now; the asking worker gets
        ``sps·E`` samples when that is less than its usual task. Without an epoch limit there
        is no end to balance (the next epoch follows at once). Workers with no speed estimate
        yet are left out of the sum.
        """
        if self.distribution != "dynamic" or self._limit is None:
            return size
        own = self.samples_per_second(node_id)
        if own is None:
            return size
        now = self._now()
        handed = self._epoch * self.num_samples + self._cursor
        left = sum(len(r) for r in self._requeued) + max(0, self._limit - handed)
        busy_until: dict[str, float] = {}
        for task in self._in_flight.values():
            sps = self.samples_per_second(task.node_id)
            if task.node_id == node_id or sps is None:
                continue
            end = task.issued_at + task.num_samples / sps
            busy_until[task.node_id] = max(busy_until.get(task.node_id, now), end)
        total_rate = own
        backlog = 0.0
        for worker in set(self._static_workers) - {node_id}:
            sps = self.samples_per_second(worker)
            if sps is None:
                continue
            total_rate += sps
            backlog += sps * (busy_until.get(worker, now) - now)
        want = own * (left + backlog) / total_rate
        if want >= size:
            return size
        shrunk = math.floor(want / self.granularity + 1e-6) * self.granularity
        return max(self.min_samples, min(size, shrunk))

    def _take(self, node_id: str, size: int) -> Range | None:
        if self.distribution == "static":
            self._maybe_reshard()
            shard = self._shards.get(node_id)
            if shard:
                return _pop_front(shard, size)
            if self._requeued:
                return _pop_front(self._requeued, size)
            return None
        if self._requeued:
            return _pop_front(self._requeued, size)
        if self._cursor >= self.num_samples:
            self._epoch += 1
            self._cursor = 0
        handed = self._epoch * self.num_samples + self._cursor
        if self._limit is not None:
            size = min(size, self._limit - handed)
            if size <= 0:
                return None
        stop = min(self.num_samples, self._cursor + size)
        rng = Range(self._epoch, self._cursor, stop)
        self._cursor = stop
        return rng

    def set_static_workers(self, node_ids: Iterable[str]) -> None:
        """Static mode: the workers that share the shards of each new epoch (in this order)."""
        self._static_workers = list(node_ids)

    def _maybe_reshard(self) -> None:
        if any(self._shards.values()) or self._requeued or self._in_flight:
            return
        if self._cursor >= self.num_samples:
            self._epoch += 1
            self._cursor = 0
        if self._cursor != 0:
            return
        if self._limit is not None and self._epoch * self.num_samples >= self._limit:
            return
        workers = self._static_workers
        if not workers:
            return
        bounds = np.linspace(0, self.num_samples, len(workers) + 1).astype(int)
        self._shards = {
            w: deque([Range(self._epoch, int(a), int(b))])
            for w, a, b in zip(workers, bounds[:-1], bounds[1:], strict=True)
            if b > a
        }
        self._cursor = self.num_samples

    # -- finishing -------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        task = self._in_flight.get(task_id)
        if task is not None:
            return task
        if task_id in self._finished:
            raise DuplicateUpdateError(f"task {task_id} is over ({self._finished[task_id]})")
        raise UnknownTaskError(f"task {task_id!r} was never handed out")

    def complete(
        self, task_id: str, *, seconds: float | None = None, overhead: float = 0.0
    ) -> Task:
        """Mark a task done and learn the worker's speed from it; returns the task.

        ``seconds`` is the training time the worker reports; by default the wall time since the
        task was handed out (what the schedule really costs). ``overhead`` is the task's fixed
        cost the worker reports beside it (transfers), smoothed into :meth:`overhead`. A second
        completion of the same task raises :class:`DuplicateUpdateError`.
        """
        task = self.get(task_id)
        now = self._now()
        took = now - task.issued_at if seconds is None else seconds
        if took > 0 and task.num_samples > 0:
            self.estimator(task.node_id).observe(task.num_samples, took, max(now, 0.0))
        if math.isfinite(overhead) and overhead >= 0:
            old = self._overheads.get(task.node_id)
            self._overheads[task.node_id] = overhead if old is None else 0.7 * old + 0.3 * overhead
        del self._in_flight[task_id]
        self._finished[task_id] = "done"
        self._count_done(task.range)
        return task

    def take_back(self, task_id: str, reason: str) -> Task:
        """Re-queue an in-flight task's range at the front; its update will be refused."""
        task = self.get(task_id)
        del self._in_flight[task_id]
        self._finished[task_id] = f"taken back: {reason}"
        self._requeued.appendleft(task.range)
        return task

    def take_back_node(self, node_id: str, reason: str) -> list[Task]:
        """Re-queue every in-flight task of ``node_id`` (it left or expired), at once."""
        tasks = [t for t in self._in_flight.values() if t.node_id == node_id]
        for task in sorted(tasks, key=lambda t: t.issued_at, reverse=True):
            self.take_back(task.task_id, reason)
        shard = self._shards.pop(node_id, None)
        if shard:
            self._requeued.extend(shard)
        return tasks

    def overdue(self, older_than: float) -> list[Task]:
        """In-flight tasks handed out more than ``older_than`` seconds ago."""
        now = self._now()
        return [t for t in self._in_flight.values() if now - t.issued_at > older_than]

    def _count_done(self, rng: Range) -> None:
        self._samples_done += len(rng)
        done = self._done_per_epoch.get(rng.epoch, 0) + len(rng)
        self._done_per_epoch[rng.epoch] = done
        while self._done_per_epoch.get(self._completed_epochs, 0) >= self.num_samples:
            del self._done_per_epoch[self._completed_epochs]
            self._completed_epochs += 1

    # -- progress --------------------------------------------------------------------------
    @property
    def completed_epochs(self) -> int:
        """Epochs whose every sample has been trained (in order: epoch 0 first)."""
        return self._completed_epochs

    @property
    def epochs(self) -> float:
        """Passes over the training set so far, counting partly done epochs by their share."""
        return self._samples_done / self.num_samples

    @property
    def samples_done(self) -> int:
        return self._samples_done

    @property
    def exhausted(self) -> bool:
        """The epoch limit is reached and every handed-out range is done."""
        if self._limit is None or self._in_flight or self._requeued:
            return False
        if any(self._shards.values()):
            return False
        return self._epoch * self.num_samples + self._cursor >= self._limit

    def in_flight(self) -> list[Task]:
        return list(self._in_flight.values())

    def requeued(self) -> list[Range]:
        return list(self._requeued)

    def _outstanding_ranges(self) -> list[Range]:
        shards = [r for q in self._shards.values() for r in q]
        return [*self._requeued, *(t.range for t in self._in_flight.values()), *shards]

    # -- checkpoint ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """JSON-safe progress: cursor, done counts and every unfinished range as "to do"."""
        return {
            "epoch": self._epoch,
            "cursor": self._cursor,
            "samples_done": self._samples_done,
            "completed_epochs": self._completed_epochs,
            "done_per_epoch": {str(k): v for k, v in self._done_per_epoch.items()},
            "todo": [r.to_list() for r in self._outstanding_ranges()],
            "next_task": self._next_task,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint`'s output; in-flight work becomes re-queued work."""
        self._epoch = int(state["epoch"])
        self._cursor = int(state["cursor"])
        self._samples_done = int(state["samples_done"])
        self._completed_epochs = int(state["completed_epochs"])
        self._done_per_epoch = {int(k): int(v) for k, v in state["done_per_epoch"].items()}
        self._requeued = deque(Range(int(e), int(a), int(b)) for e, a, b in state["todo"])
        self._in_flight.clear()
        self._shards.clear()
        self._next_task = int(state.get("next_task", 1))


def _pop_front(queue: deque[Range], size: int) -> Range:
    head = queue.popleft()
    if len(head) <= size:
        return head
    queue.appendleft(Range(head.epoch, head.start + size, head.stop))
    return Range(head.epoch, head.start, head.start + size)
