"""The ledger of a job's work: which ranges are in flight, done or taken back, and progress.

Each position handed out is in exactly one of *in flight* (here), *re-queued* (back in the
:class:`~eddl.leader.source.TaskSource`) or *done* (counted here, per epoch); a task id ends
either done or taken back, so a late update of a taken-back task is recognised as a duplicate.
Taking a task back is one operation (:meth:`Ledger.take_back`): the range returns to the front
of the source's re-queue.

A checkpoint also holds the tasks in flight and the last tasks done, each with its node, so a
root elected after a failover recognises the previous root's tasks: a worker re-sends an
update that was never acknowledged, and the new root takes it for its task when the range is
still waiting to be handed out again (:meth:`Ledger.adopt`), or acknowledges it as a
duplicate when that task was already counted in the version it resumed from
(:meth:`Ledger.done_by`). Either way no range is lost or counted twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError
from eddl.leader.source import Range, TaskSource
from eddl.log import get_logger

__all__ = ["RECENT_DONE", "Ledger", "Task"]

# Tasks done whose (task, node) the ledger remembers. A checkpoint keeps those done since the
# checkpoint before the previous one (an acknowledgement lost with a dead root is one of the
# newest), at most this many; older ids are forgotten.
RECENT_DONE = 1024

log = get_logger("leader.ledger")


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
        # (task id, node, how many tasks were done before it) of the last tasks done.
        self._recent_done: deque[tuple[str, str, int]] = deque(maxlen=RECENT_DONE)
        self._done_count = 0
        self._marks: deque[int] = deque(maxlen=2)  # _done_count at the last two checkpoints
        self._done_by: dict[str, str] = {}  # task id -> node, for the ids in _recent_done
        # Tasks of the checkpoint this ledger resumed from, in flight when it was written.
        self._inherited: dict[str, Task] = {}

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
        if len(self._recent_done) == self._recent_done.maxlen:
            self._done_by.pop(self._recent_done[0][0], None)
        self._recent_done.append((task_id, task.node_id, self._done_count))
        self._done_count += 1
        self._done_by[task_id] = task.node_id
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

    def done_by(self, task_id: str) -> str | None:
        """The node whose update of ``task_id`` was counted, while that is remembered."""
        return self._done_by.get(task_id)

    def adopt(
        self,
        task_id: str,
        node_id: str,
        session: int,
        now: float,
        verify: Callable[[Task], None] = lambda task: None,
    ) -> Task:
        """The in-flight task ``task_id`` once ``verify`` (the update's checks) passes; or a task
        in flight at the checkpoint this ledger resumed from, taken up: its update came back
        (re-sent to this root) while its range still waits in the re-queue whole.

        Refused, with nothing changed, when ``verify`` refuses, the task was not ``node_id``'s,
        or its range was handed out again meanwhile (the new holder's update counts instead).
        """
        task = self._inherited.get(task_id)
        if task is None:
            found = self.get(task_id)  # in flight here, or the refusal that says why not
            verify(found)
            return found
        if task.node_id != node_id:
            raise UnknownTaskError(f"task {task_id} was not handed to node {node_id!r}")
        if task.range not in self.source.requeued():
            del self._inherited[task_id]
            self._finished[task_id] = "taken back: its range was handed out again"
            return self.get(task_id)
        taken = replace(task, session=session, issued_at=now)
        verify(taken)
        self.source.reclaim(task.range)
        del self._inherited[task_id]
        self._in_flight[task_id] = taken
        log.info("task of the previous root taken up", task=task_id, node=node_id)
        return taken

    def checkpoint(self) -> dict[str, Any]:
        """The ledger's state for a version; each call marks a checkpoint (see RECENT_DONE)."""
        since = self._marks[0] if len(self._marks) == self._marks.maxlen else 0
        self._marks.append(self._done_count)
        return {
            "samples_done": self.samples_done,
            "completed_epochs": self.completed_epochs,
            "done_per_epoch": {str(k): v for k, v in self._done_per_epoch.items()},
            "tasks": [
                {
                    "task_id": t.task_id,
                    "node_id": t.node_id,
                    "range": t.range.to_list(),
                    "base_version": t.base_version,
                    "layer": t.layer,
                }
                for t in self._in_flight.values()
            ],
            "recent_done": [[t, n] for t, n, count in self._recent_done if count >= since],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`checkpoint`; whatever was in flight is the caller's to re-queue."""
        self.samples_done = int(state["samples_done"])
        self.completed_epochs = int(state["completed_epochs"])
        self._done_per_epoch = {int(k): int(v) for k, v in state["done_per_epoch"].items()}
        self._in_flight.clear()
        self._recent_done.clear()
        self._done_by.clear()
        self._marks.clear()
        self._done_count = 0
        for task_id, node_id in state.get("recent_done", []):
            self._recent_done.append((str(task_id), str(node_id), 0))
            self._done_by[str(task_id)] = str(node_id)
            self._finished[str(task_id)] = "done"
        self._inherited.clear()
        for t in state.get("tasks", []):
            rng = Range(*(int(n) for n in t["range"]))
            layer = t.get("layer")
            self._inherited[str(t["task_id"])] = Task(
                str(t["task_id"]), str(t["node_id"]), -1, rng, self.source.indexes(rng), 0.0,
                base_version=int(t["base_version"]), layer=None if layer is None else int(layer),
            )  # fmt: skip
