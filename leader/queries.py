"""The coordinator's read side: job status, nodes, events, models and samples.

A mixin of :class:`~eddl.leader.coordinator.Coordinator` (it reads the same state, under the
same ``_op``); kept apart so the commands and the questions each fit in a module.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from eddl.leader.errors import InvalidArgumentError, JobNotActiveError, UnknownJobError
from eddl.leader.events import Event
from eddl.leader.jobqueue import JobQueue
from eddl.leader.membership import Membership, Node
from eddl.leader.outbox import Outbox
from eddl.leader.replies import ModelSnapshot

__all__ = ["Queries"]


class Queries:
    store: Outbox
    job_queue: JobQueue
    membership: Membership

    def _op(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _workers(self) -> list[Node]:
        raise NotImplementedError

    def job_status(self, job_id: str | None = None) -> dict[str, Any]:
        """Status of ``job_id`` (default: the running job, else the latest one)."""
        with self._op():
            if job_id is None:
                active = self.job_queue.active
                if active is not None:
                    job_id = active.spec.job_id
                else:
                    jobs = self.store.jobs()
                    if not jobs:
                        raise UnknownJobError("no job was ever submitted")
                    job_id = jobs[-1].job_id
            run = self.job_queue.run_for(job_id)
            if run is None:
                return self.job_queue.stored_status(job_id)
            out = run.summary()
            out["workers"] = len(self._workers())
            return out

    def jobs(self) -> list[dict[str, Any]]:
        with self._op():
            return [self.job_status(r.job_id) for r in self.store.jobs()]

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every known node, with its tasks and samples in the running job (else the latest
        finished one still in memory), its speed and its current task."""
        with self._op():
            run = self.job_queue.active
            runs = self.job_queue.runs()
            counted = runs[-1] if run is None and runs else run
            out = []
            for node in self.membership.nodes():
                row = node.to_dict()
                work = None if counted is None else counted.work.of(node.node_id)
                row["tasks_done"] = 0 if work is None else work.tasks
                row["samples_trained"] = 0 if work is None else work.samples
                if run is not None:
                    row["samples_per_second"] = run.scheduler.samples_per_second(node.node_id)
                    task = run.task_of(node.node_id)
                    row["task"] = None if task is None else task.task_id
                out.append(row)
            return out

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        with self._op():
            if self.store.job(job_id) is None:
                raise UnknownJobError(f"no job {job_id!r}")
            return self.store.events(job_id, since)

    def model(self, job_id: str, version: int | None = None) -> ModelSnapshot:
        """The current global model of a job, or its ``version``: a recent one kept in memory,
        version 0 (rebuilt from the job's seed), or one still in the store."""
        with self._op():
            run = self.job_queue.run_for(job_id)
            if run is not None:
                kept = run.model_at(version)
                if kept is not None:
                    return ModelSnapshot(job_id, kept[0], kept[1])
            self.job_queue.require(job_id)
            record = (
                self.store.latest_version(job_id)
                if version is None
                else self.store.load_version(job_id, version)
            )
            if record is None:
                raise JobNotActiveError(f"job {job_id!r} has no stored version {version}")
            return ModelSnapshot(job_id, record.version, record.params)

    def samples(self, job_id: str, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training samples by index, for workers that lack the dataset."""
        with self._op():
            run = self.job_queue.running(job_id)
            fetch = run.runtime.samples
            if fetch is None:
                raise JobNotActiveError(f"job {job_id!r} serves no samples")
            idx = np.asarray(indexes)
            if idx.ndim != 1 or idx.dtype.kind not in "iu":
                raise InvalidArgumentError("indexes must be a 1-d integer array")
            if idx.size and (idx.min() < 0 or idx.max() >= run.runtime.num_train):
                raise InvalidArgumentError(
                    f"indexes must lie in [0, {run.runtime.num_train}), got "
                    f"[{idx.min()}, {idx.max()}]"
                )
            return fetch(idx.astype(np.int64))

    def _task_void(self, node: Node) -> bool:
        active = self.job_queue.active
        if active is not None and active.status == "running":
            held = active.task_of(node.node_id)
            if held is not None and held.session == node.session:
                # The node works for the running job: a task a finished job still lists for
                # it is over and done with, and must not cancel this one.
                return False
        for run in self.job_queue.runs():
            task = run.task_of(node.node_id)
            if task is not None and (task.session != node.session or run.status != "running"):
                return True
        return False
