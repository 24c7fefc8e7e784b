"""A Python worker's part of a ``tinymetafed`` or ``reptile`` round: one device's round.

The task's first index is the device task the leader gave this node; the worker rebuilds that
device's samples from the job (:mod:`eddl.metajob`: the same seed, so the same samples as
everywhere else) and runs :func:`eddl.learn.tinymetafed.device_round` from the shared layers
``θ`` it pulled. Reptile uploads ``φ = θ + δ`` as dense tensors; TinyMetaFed uploads only the
top-P entries of ``δ = φ − θ`` of the shared layers, as sparse records: the local layers it
rebuilt never leave the node. With the job option ``error_feedback`` the node keeps, per job
and device task, the entries top-P did not send (:class:`Residuals`, in memory: a restarted
node starts again from none) and adds them to its next round's delta.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from eddl.jobspec import JobSpecError
from eddl.learn.params import Params
from eddl.learn.reconstruction import ReconstructionError
from eddl.learn.tinymetafed import device_round
from eddl.metajob import MetaJob, MetaJobConfig, meta_job
from eddl.worker.executor import TaskError, TaskResult, TaskSpec

__all__ = ["Residuals", "check_meta_task", "run_meta_task"]


class Residuals:
    """Error feedback's memory on a node: the unsent entries of its last round, per
    ``(job, device task)``; the least recently used of more than ``limit`` are dropped."""

    def __init__(self, limit: int = 16) -> None:
        self._limit = limit
        self._held: OrderedDict[tuple[str, int], Params] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, job_id: str, device: int) -> Params | None:
        with self._lock:
            return self._held.pop((job_id, device), None)

    def keep(self, job_id: str, device: int, residual: Params) -> None:
        with self._lock:
            self._held[(job_id, device)] = residual
            while len(self._held) > self._limit:
                self._held.popitem(last=False)


RESIDUALS = Residuals()


def check_meta_task(task: TaskSpec) -> MetaJob:
    """The task's job, built (once per job); :class:`TaskError` for a task that cannot run."""
    try:
        job = meta_job(
            MetaJobConfig.of_wire(task.algorithm, task.dataset, task.model_json, task.hyper_json)
        )
    except JobSpecError as exc:
        raise TaskError(f"{task.algorithm} task {task.task_id}: {exc}") from exc
    if len(task.indexes) != 1 or not 0 <= task.indexes[0] < len(job.tasks.train):
        raise TaskError(
            f"{task.algorithm} task {task.task_id}: one device task in "
            f"0..{len(job.tasks.train) - 1} expected, got {list(task.indexes)[:4]}"
        )
    return job


def run_meta_task(task: TaskSpec, theta: Mapping[str, np.ndarray]) -> TaskResult:
    """Run one device's round (blocking numpy work: call it in a thread)."""
    job = check_meta_task(task)
    device = job.tasks.train[task.indexes[0]]
    try:
        job.split.check_shared(theta)
    except ReconstructionError as exc:
        raise TaskError(f"task {task.task_id}: {exc}") from exc
    shared = {n: np.asarray(a, dtype=np.float32) for n, a in theta.items()}
    start = time.perf_counter()
    feedback = job.options.sparse and job.options.error_feedback
    residual = RESIDUALS.take(task.job_id, task.indexes[0]) if feedback else None
    update = device_round(
        job.model,
        job.split,
        shared,
        device.x_train,
        device.y_train,
        job.options,
        seed=task.seed,
        residual=residual,
    )
    if update.residual is not None:
        RESIDUALS.keep(task.job_id, task.indexes[0], update.residual)
    seconds = time.perf_counter() - start
    params: Params = {}
    if update.selected is None:  # reptile: φ, dense
        params = {n: (shared[n] + update.delta[n]).astype(np.float32) for n in update.delta}
    return TaskResult(
        params=params,
        samples=update.samples,
        steps=update.steps,
        train_seconds=seconds,
        busy_seconds=seconds,
        state_bytes=0,
        sparse=update.selected,
        value_dtype=job.options.values,
    )
