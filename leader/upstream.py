"""A sub-leader's task source: the positions of the tasks its own leader handed it.

A sub-leader is a leader whose work comes from upstream. Its leader hands it a task like any
other (an :class:`UpstreamTask`: a task id, the model version to train from, the dataset
indexes); :class:`UpstreamSource` cuts that task into ranges for the workers of its group,
re-queues ranges taken back, maps a range to its dataset indexes, and counts the positions
done so that it knows when an upstream task is complete and can be answered with one update
(:mod:`eddl.leader.relay`). A range's ``epoch`` is the serial number of the upstream task it
belongs to; ``start``/``stop`` are positions within that task's indexes.

Everything an upstream task declares is bounded before it is kept; a refused task changes
nothing. A position counted done twice is refused too, so no sample reaches the upward update
twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eddl.leader.errors import DuplicateUpdateError, InvalidArgumentError
from eddl.leader.source import Range, TaskSource

__all__ = ["MAX_TASK_ID", "UpstreamSource", "UpstreamTask"]

MAX_TASK_ID = 128  # characters of an upstream task id


@dataclass(frozen=True)
class UpstreamTask:
    """A task the sub-leader's own leader handed it."""

    task_id: str
    base_version: int
    indexes: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.indexes.size)


@dataclass
class _Held:
    task: UpstreamTask
    cursor: int = 0
    done: int = 0
    spans: list[tuple[int, int]] | None = None  # positions counted done, as [start, stop)


class UpstreamSource(TaskSource):
    """Hands out the positions of upstream tasks, oldest first, re-queued ranges before all."""

    def __init__(self, dataset_size: int, *, max_task_samples: int, max_tasks: int = 4) -> None:
        if dataset_size < 1 or max_task_samples < 1 or max_tasks < 1:
            raise ValueError("dataset_size, max_task_samples and max_tasks must be >= 1")
        self.dataset_size = dataset_size
        self.max_task_samples = max_task_samples
        self.max_tasks = max_tasks
        self._held: dict[int, _Held] = {}
        self._serial = 0
        self._requeued: deque[Range] = deque()
        self._closed = False

    # -- upstream --------------------------------------------------------------------------
    def accept(self, task: UpstreamTask) -> int:
        """Keep ``task`` (after checking every field); its serial number, the ranges' epoch."""
        tid = task.task_id
        if not isinstance(tid, str) or not 0 < len(tid) <= MAX_TASK_ID:
            raise InvalidArgumentError(f"upstream task id must hold 1..{MAX_TASK_ID} characters")
        if any(h.task.task_id == tid for h in self._held.values()):
            raise InvalidArgumentError(f"upstream task {tid!r} is already held")
        if isinstance(task.base_version, bool) or not isinstance(task.base_version, int):
            raise InvalidArgumentError("upstream base version must be an integer")
        if task.base_version < 0:
            raise InvalidArgumentError(f"upstream base version {task.base_version} is < 0")
        idx = task.indexes
        if not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise InvalidArgumentError("upstream indexes must be a 1-D integer array")
        if not 0 < idx.size <= self.max_task_samples:
            raise InvalidArgumentError(
                f"upstream task holds {idx.size} samples; 1..{self.max_task_samples} accepted"
            )
        if int(idx.min()) < 0 or int(idx.max()) >= self.dataset_size:
            raise InvalidArgumentError(
                f"upstream indexes must lie in [0, {self.dataset_size}), "
                f"got [{int(idx.min())}, {int(idx.max())}]"
            )
        if len(self._held) >= self.max_tasks:
            raise InvalidArgumentError(f"{self.max_tasks} upstream tasks are already held")
        if self._closed:
            raise InvalidArgumentError("the upstream source is closed")
        self._serial += 1
        kept = UpstreamTask(tid, task.base_version, idx.astype(np.int64, copy=True))
        self._held[self._serial] = _Held(kept, spans=[])
        return self._serial

    def upstream(self, serial: int) -> UpstreamTask:
        return self._held[serial].task

    def held(self) -> list[int]:
        """Serial numbers of the upstream tasks held, oldest first."""
        return sorted(self._held)

    def record_done(self, rng: Range) -> UpstreamTask | None:
        """Count ``rng`` done; the upstream task once all its positions are, else ``None``.

        A position already counted is refused (:class:`DuplicateUpdateError`), changing nothing.
        """
        held = self._held.get(rng.epoch)
        if held is None:
            raise DuplicateUpdateError(f"range {rng.to_list()} is of no upstream task held")
        if not 0 <= rng.start < rng.stop <= held.task.num_samples:
            raise InvalidArgumentError(f"range {rng.to_list()} lies outside its upstream task")
        spans = held.spans or []
        if any(a < rng.stop and rng.start < b for a, b in spans):
            raise DuplicateUpdateError(f"range {rng.to_list()} was already counted done")
        spans.append((rng.start, rng.stop))
        held.spans = spans
        held.done += len(rng)
        if held.done < held.task.num_samples:
            return None
        return held.task

    def release(self, serial: int) -> None:
        """The upstream task was answered (or taken back upstream): forget it."""
        self._held.pop(serial, None)
        self._requeued = deque(r for r in self._requeued if r.epoch != serial)

    def close(self) -> None:
        """No more upstream tasks will come: the source drains once these are done."""
        self._closed = True

    # -- TaskSource ------------------------------------------------------------------------
    def take(self, node_id: str, size: int) -> Range | None:
        if size < 1:
            return None
        if self._requeued:
            head = self._requeued.popleft()
            if len(head) > size:
                self._requeued.appendleft(Range(head.epoch, head.start + size, head.stop))
                return Range(head.epoch, head.start, head.start + size)
            return head
        for serial in sorted(self._held):
            held = self._held[serial]
            if held.cursor < held.task.num_samples:
                stop = min(held.task.num_samples, held.cursor + size)
                rng = Range(serial, held.cursor, stop)
                held.cursor = stop
                return rng
        return None

    def give_back(self, rng: Range) -> None:
        if rng.epoch in self._held:
            self._requeued.appendleft(rng)

    def indexes(self, rng: Range) -> np.ndarray:
        return self._held[rng.epoch].task.indexes[rng.start : rng.stop].copy()

    def left(self) -> int | None:
        fresh = sum(h.task.num_samples - h.cursor for h in self._held.values())
        return fresh + sum(len(r) for r in self._requeued)

    def drained(self) -> bool:
        return self._closed and not self._held

    def requeued(self) -> list[Range]:
        return list(self._requeued)

    def set_workers(self, node_ids: Iterable[str]) -> None:
        """A sub-leader's group always takes ranges dynamically; nothing to shard."""

    def checkpoint(self) -> dict[str, Any]:
        """A sub-leader keeps no state of its own: its leader re-queues what it held."""
        return {}

    def restore(self, state: dict[str, Any], todo: Iterable[Range]) -> None:
        raise InvalidArgumentError(
            "a sub-leader does not resume: its upstream tasks go back to its own leader"
        )
