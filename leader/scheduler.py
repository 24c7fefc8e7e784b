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

The parts are plain modules: :mod:`~eddl.leader.sizing` (how big a task is),
:mod:`~eddl.leader.source` (which positions come next: the seeded permutation here),
:mod:`~eddl.leader.ledger` (in flight, done, taken back). The ``Scheduler`` composes them.

The ``static`` distribution is the baseline for the benchmark: at the start of each epoch the
order is cut into equal shards, one per live worker, and each worker only ever gets ranges of
``default_samples`` from its own shard; a worker whose shard is used up waits for the epoch to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from eddl.leader.jobs import JobSpec
from eddl.leader.ledger import Ledger, Task
from eddl.leader.runtime import JobRuntime
from eddl.leader.sizing import (
    Busy,
    EstimatorFactory,
    RoundTarget,
    TaskSizer,
    ThroughputEstimator,
)
from eddl.leader.source import PermutationSource, Range
from eddl.profiler.estimator import RuntimeEstimator

__all__ = [
    "EstimatorFactory",
    "Range",
    "RoundTarget",
    "Scheduler",
    "Task",
    "ThroughputEstimator",
    "job_scheduler",
]


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
        source: PermutationSource | None = None,
        round_samples: int = 0,
    ) -> None:
        self.sizer = TaskSizer(
            task_seconds=task_seconds,
            min_samples=min_samples,
            max_samples=max_samples,
            default_samples=default_samples,
            granularity=granularity,
            estimator_factory=estimator_factory,
            now=now,
            probe_fraction=probe_fraction,
            min_compute_fraction=min_compute_fraction,
            round_samples=round_samples,
        )
        # Positions never handed out beyond this many passes (None: no limit).
        limit = (
            None if limit_epochs is None or source is not None else int(limit_epochs * num_samples)
        )
        self.source = source or PermutationSource(
            num_samples,
            seed=seed,
            limit=limit,
            distribution=distribution,
            in_flight=lambda: self.ledger.ranges_in_flight(),
        )
        self.ledger = Ledger(self.source, num_samples)
        self.num_samples = num_samples
        self.seed = seed
        self.distribution = distribution
        self.default_samples = default_samples
        self._limited = limit is not None
        self._now = now
        self._prefix = task_prefix
        self._next_task = 1

    # -- speed (the sizer's) ---------------------------------------------------------------
    def estimator(self, node_id: str) -> ThroughputEstimator:
        return self.sizer.estimator(node_id)

    def set_prior(self, node_id: str, samples_per_second: float | None) -> None:
        self.sizer.set_prior(node_id, samples_per_second)

    def measured(self, node_id: str) -> bool:
        return self.sizer.measured(node_id)

    def samples_per_second(self, node_id: str) -> float | None:
        return self.sizer.samples_per_second(node_id)

    def overhead(self, node_id: str) -> float:
        return self.sizer.overhead(node_id)

    def round_target(self) -> RoundTarget:
        """What a sync round's tasks aim at (:meth:`TaskSizer.round_target`)."""
        if not self.sizer.round_samples:
            return RoundTarget(self.sizer.task_seconds)
        return self.sizer.round_target(self.source.workers)

    def size_for(
        self, node_id: str, seconds: float | None = None, *, training: bool = False
    ) -> int:
        """Samples a task for ``node_id`` should hold to take about ``seconds`` (default: the
        round's target, :meth:`round_target`, which async tasks follow too; ``training``:
        ``seconds`` of training alone)."""
        if self.distribution == "static":
            return self.default_samples
        if seconds is None and self.sizer.round_samples:
            target = self.round_target()
            seconds, training = target.seconds, target.training
        return self.sizer.size_for(node_id, seconds, training=training)

    # -- handing out -------------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of indexes for ``epoch`` (the same on every leader)."""
        return self.source.order(epoch)

    def assign(
        self,
        node_id: str,
        session: int = 0,
        *,
        target: RoundTarget | None = None,
    ) -> Task | None:
        """The next task for ``node_id`` (sized for ``target``, default :meth:`round_target`),
        or ``None`` when there is nothing for it right now.

        ``None`` when the epoch limit is reached, or in static mode when the worker's shard is
        used up until the epoch ends.
        """
        seconds, training = (None, False) if target is None else (target.seconds, target.training)
        size = self._tail(node_id, self.size_for(node_id, seconds, training=training))
        rng = self.source.take(node_id, size)
        if rng is None:
            return None
        task_id = f"{self._prefix}{self._next_task}"
        self._next_task += 1
        task = Task(task_id, node_id, session, rng, self.source.indexes(rng), self._now())
        self.ledger.issue(task)
        return task

    def _tail(self, node_id: str, size: int) -> int:
        # Without an epoch limit there is no end to balance: the next epoch follows at once.
        left = self.source.left()
        if self.distribution != "dynamic" or left is None:
            return size
        # Read only near the end of the data (see TaskSizer.tail).
        busy = (Busy(t.node_id, t.issued_at, t.num_samples) for t in self.ledger.in_flight())
        return self.sizer.tail(node_id, size, left, busy, self.source.workers)

    def set_static_workers(self, node_ids: Iterable[str]) -> None:
        """The live workers (static mode shares each new epoch's shards among them, in order;
        the end-of-data rule sums their speeds)."""
        self.source.set_workers(node_ids)

    # -- finishing -------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        return self.ledger.get(task_id)

    def adopt(
        self, task_id: str, node_id: str, session: int, verify: Callable[[Task], None]
    ) -> Task:
        """The in-flight task ``task_id``, or one the previous root handed to ``node_id`` whose
        range still waits to be handed out again, once ``verify`` passes (:meth:`Ledger.adopt`)."""
        return self.ledger.adopt(task_id, node_id, session, self._now(), verify)

    def complete(
        self, task_id: str, *, seconds: float | None = None, overhead: float = 0.0
    ) -> Task:
        """Mark a task done and learn the worker's speed from it; returns the task.

        ``seconds`` is the training time the worker reports; by default the wall time since the
        task was handed out (what the schedule really costs). ``overhead`` is the task's fixed
        cost the worker reports beside it (transfers), smoothed into :meth:`overhead`. A second
        completion of the same task raises :class:`DuplicateUpdateError`.
        """
        task = self.ledger.get(task_id)
        wall = self._now() - task.issued_at
        took = wall if seconds is None else seconds
        self.sizer.observe(task.node_id, task.num_samples, took, overhead, wall)
        return self.ledger.complete(task_id)

    def take_back(self, task_id: str, reason: str) -> Task:
        """Re-queue an in-flight task's range at the front; its update will be refused."""
        return self.ledger.take_back(task_id, reason)

    def take_back_node(self, node_id: str, reason: str) -> list[Task]:
        """Re-queue every in-flight task of ``node_id`` (it left or expired), at once."""
        tasks = self.ledger.take_back_node(node_id, reason)
        self.source.forget_worker(node_id)
        return tasks

    def overdue(self, older_than: float) -> list[Task]:
        """In-flight tasks handed out more than ``older_than`` seconds ago."""
        now = self._now()
        return [t for t in self.ledger.in_flight() if now - t.issued_at > older_than]

    # -- progress --------------------------------------------------------------------------
    @property
    def completed_epochs(self) -> int:
        """Epochs whose every sample has been trained (in order: epoch 0 first)."""
        return self.ledger.completed_epochs

    @property
    def epochs(self) -> float:
        """Passes over the training set so far, counting partly done epochs by their share."""
        return self.ledger.samples_done / self.num_samples

    @property
    def samples_done(self) -> int:
        return self.ledger.samples_done

    @property
    def exhausted(self) -> bool:
        """The epoch limit is reached and every handed-out range is done."""
        return self._limited and not self.ledger.in_flight() and self.source.drained()

    def in_flight(self) -> list[Task]:
        return self.ledger.in_flight()

    def requeued(self) -> list[Range]:
        return self.source.requeued()

    # -- checkpoint ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """JSON-safe progress: cursor, done counts and every unfinished range as "to do"."""
        todo = [*self.source.requeued(), *self.ledger.ranges_in_flight()]
        todo += self.source.shard_ranges()
        return {
            **self.source.checkpoint(),
            **self.ledger.checkpoint(),
            "todo": [r.to_list() for r in todo],
            "next_task": self._next_task,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint`'s output; in-flight work becomes re-queued work."""
        self.ledger.restore(state)
        todo = (Range(int(e), int(a), int(b)) for e, a, b in state["todo"])
        self.source.restore(state, todo)
        self._next_task = int(state.get("next_task", 1))


def job_scheduler(
    spec: JobSpec,
    runtime: JobRuntime,
    *,
    now: Callable[[], float],
    estimator_factory: EstimatorFactory,
    task_prefix: str,
    version: Callable[[], int] = lambda: 0,
) -> Scheduler:
    """The scheduler of a job, as its spec and its data say (``version``: the job's model
    version, which a meta-learning job's source samples its devices by)."""
    meta = runtime.meta
    return Scheduler(
        runtime.num_train,
        seed=spec.seed,
        task_seconds=spec.task_seconds,
        min_samples=spec.min_task_samples,
        max_samples=spec.max_task_samples,
        default_samples=spec.default_task_samples,
        granularity=runtime.granularity,
        distribution=spec.distribution,
        estimator_factory=estimator_factory,
        now=now,
        task_prefix=task_prefix,
        limit_epochs=spec.max_epochs,
        source=None if meta is None else meta.task_source(version),
        round_samples=round_budget(spec, runtime),
    )


def round_budget(spec: JobSpec, runtime: JobRuntime) -> int:
    """The sync rule's ``sum_samples`` (0 without one): the samples a round should hold."""
    params = spec.sync_params if runtime.sync_params is None else runtime.sync_params
    value = params.get("sum_samples", 0)
    return value if isinstance(value, int) and value > 0 else 0
