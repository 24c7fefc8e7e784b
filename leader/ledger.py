"""The ledger of a job's work: which ranges are in flight, done or taken back, and progress.

Each position handed out is in exactly one of *in flight* (here), *re-queued* (back in the
:class:`~eddl.leader.source.TaskSource`) or *done* (counted here, per epoch); a task id ends
either done or taken back, so a late update of a taken-back task is recognised as a duplicate.
Taking a task back is one operation (:meth:`Ledger.take_back`): the range returns to the front
of the source's re-queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError
from eddl.leader.source import Range, TaskSource

__all__ = ["Ledger", "Task"]


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


class Ledger:
    """In-flight tasks and done counts for a source of ``num_samples`` positions per epoch."""

    def __init__(self, source: TaskSource, num_samples: int) -> None:
        self.source = source
        self.num_samples = num_samples
        self._in_flight: dict[str, Task] = {}
        self._finished: dict[str, str] = {}  # task id -> "done" | "taken back: <reason>"
        self._done_per_epoch: dict[int, int] = {}
        self.completed_epochs = 0
        self.samples_done = 0

    def issue(self, task: Task) -> None:
        self._in_flight[task.task_id] = task

    def get(self, task_id: str) -> Task:
        task = self._in_flight.get(task_id)
        if task is not None:
            return task
        if task_id in self._finished:
            raise DuplicateUpdateError(f"task {task_id} is over ({self._finished[task_id]})")
        raise UnknownTaskError(f"task {task_id!r} was never handed out")

    def complete(self, task_id: str) -> Task:
        """Mark a task done; a second completion raises :class:`DuplicateUpdateError`."""
        task = self.get(task_id)
        del self._in_flight[task_id]
        self._finished[task_id] = "done"
        rng = task.range
        self.samples_done += len(rng)
        self._done_per_epoch[rng.epoch] = self._done_per_epoch.get(rng.epoch, 0) + len(rng)
        while self._done_per_epoch.get(self.completed_epochs, 0) >= self.num_samples:
            del self._done_per_epoch[self.completed_epochs]
            self.completed_epochs += 1
        return task

    def take_back(self, task_id: str, reason: str) -> Task:
        """Re-queue an in-flight task's range at the front; its update will be refused."""
        task = self.get(task_id)
        del self._in_flight[task_id]
        self._finished[task_id] = f"taken back: {reason}"
        self.source.give_back(task.range)
        return task

    def take_back_node(self, node_id: str, reason: str) -> list[Task]:
        """Re-queue every in-flight task of ``node_id``, newest first (so the oldest range
        ends at the front of the re-queue)."""
        tasks = [t for t in self._in_flight.values() if t.node_id == node_id]
        for task in sorted(tasks, key=lambda t: t.issued_at, reverse=True):
            self.take_back(task.task_id, reason)
        return tasks

    def in_flight(self) -> list[Task]:
        return list(self._in_flight.values())

    def ranges_in_flight(self) -> list[Range]:
        return [t.range for t in self._in_flight.values()]

    def checkpoint(self) -> dict[str, Any]:
        return {
            "samples_done": self.samples_done,
            "completed_epochs": self.completed_epochs,
            "done_per_epoch": {str(k): v for k, v in self._done_per_epoch.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint`; whatever was in flight is the caller's to re-queue."""
        self.samples_done = int(state["samples_done"])
        self.completed_epochs = int(state["completed_epochs"])
        self._done_per_epoch = {int(k): int(v) for k, v in state["done_per_epoch"].items()}
        self._in_flight.clear()
