"""Task sources: where the index ranges a job hands out come from.

A :class:`TaskSource` gives ranges of positions to hand out, takes back ranges whose work must
be done again (to the front of its re-queue, split when the next asker wants less), maps a
range to the dataset indexes it stands for, and says how much is left. The root leader's
source is :class:`PermutationSource`: each epoch is a seeded permutation of the training set
consumed front to back (or, for the ``static`` baseline, cut into one shard per worker). A
sub-leader's source would hand out the positions of the task its own leader gave it; the
ledger, the sizing and the job around it stay the same.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["PermutationSource", "Range", "TaskSource"]


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


class TaskSource(ABC):
    @abstractmethod
    def take(self, node_id: str, size: int) -> Range | None:
        """At most ``size`` positions for ``node_id`` (re-queued work first), or ``None``."""

    @abstractmethod
    def give_back(self, rng: Range) -> None:
        """Work of ``rng`` must be done again: it goes to the front of the re-queue."""

    @abstractmethod
    def indexes(self, rng: Range) -> np.ndarray:
        """The dataset indexes ``rng`` stands for."""

    @abstractmethod
    def left(self) -> int | None:
        """Samples not handed out yet, re-queued ones included (None: no end)."""

    @abstractmethod
    def drained(self) -> bool:
        """Nothing is left to hand out, now or later."""

    @abstractmethod
    def requeued(self) -> list[Range]: ...

    def reclaim(self, rng: Range) -> bool:
        """Take ``rng`` out of the re-queue if it is there whole (its update came back after
        all, see :meth:`~eddl.leader.ledger.Ledger.adopt`); False: it was handed out again."""
        return False

    @abstractmethod
    def set_workers(self, node_ids: Iterable[str]) -> None:
        """The live workers, in order (the static baseline shards among them)."""

    @abstractmethod
    def checkpoint(self) -> dict[str, Any]:
        """JSON-safe position; work not handed out again yet is saved by the caller."""

    @abstractmethod
    def restore(self, state: dict[str, Any], todo: Iterable[Range]) -> None:
        """Continue from :meth:`checkpoint`, with ``todo`` re-queued."""


class PermutationSource(TaskSource):
    """The root's source: seeded per-epoch permutations, up to ``limit`` positions in all."""

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        limit: int | None = None,
        distribution: Literal["dynamic", "static"] = "dynamic",
        in_flight: Callable[[], Collection[Range]] = tuple,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training set is empty")
        if distribution not in ("dynamic", "static"):
            raise ValueError(f"unknown distribution {distribution!r}")
        self.num_samples = num_samples
        self.seed = seed
        self.distribution = distribution
        self._limit = limit
        self._in_flight = in_flight
        self._orders: dict[int, np.ndarray] = {}
        self.epoch = 0
        self.cursor = 0
        self._requeued: deque[Range] = deque()
        self._shards: dict[str, deque[Range]] = {}
        self._workers: list[str] = []

    def order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of indexes for ``epoch`` (the same on every leader)."""
        order = self._orders.get(epoch)
        if order is None:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.num_samples).astype(np.int64)
            self._orders[epoch] = order
            for old in [e for e in self._orders if e < epoch - 2]:
                if not any(r.epoch == old for r in self._outstanding()):
                    del self._orders[old]
        return order

    def indexes(self, rng: Range) -> np.ndarray:
        return self.order(rng.epoch)[rng.start : rng.stop].copy()

    def take(self, node_id: str, size: int) -> Range | None:
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
        if self.cursor >= self.num_samples:
            self.epoch += 1
            self.cursor = 0
        if self._limit is not None:
            size = min(size, self._limit - self._handed())
            if size <= 0:
                return None
        stop = min(self.num_samples, self.cursor + size)
        rng = Range(self.epoch, self.cursor, stop)
        self.cursor = stop
        return rng

    def give_back(self, rng: Range) -> None:
        self._requeued.appendleft(rng)

    def forget_worker(self, node_id: str) -> None:
        """A worker left: the rest of its static shard is re-queued for the others."""
        shard = self._shards.pop(node_id, None)
        if shard:
            self._requeued.extend(shard)

    def left(self) -> int | None:
        if self._limit is None:
            return None
        return sum(len(r) for r in self._requeued) + max(0, self._limit - self._handed())

    def drained(self) -> bool:
        if self._limit is None or self._requeued or any(self._shards.values()):
            return False
        return self._handed() >= self._limit

    def requeued(self) -> list[Range]:
        return list(self._requeued)

    def reclaim(self, rng: Range) -> bool:
        if rng not in self._requeued:
            return False
        self._requeued.remove(rng)
        return True

    def set_workers(self, node_ids: Iterable[str]) -> None:
        self._workers = list(node_ids)

    @property
    def workers(self) -> list[str]:
        return list(self._workers)

    def shard_ranges(self) -> list[Range]:
        """The static shards' ranges not handed out yet."""
        return [r for q in self._shards.values() for r in q]

    def checkpoint(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def restore(self, state: dict[str, Any], todo: Iterable[Range]) -> None:
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
        self._requeued = deque(todo)
        self._shards.clear()

    def _handed(self) -> int:
        return self.epoch * self.num_samples + self.cursor

    def _outstanding(self) -> list[Range]:
        return [*self._requeued, *self._in_flight(), *self.shard_ranges()]

    def _maybe_reshard(self) -> None:
        if any(self._shards.values()) or self._requeued or self._in_flight():
            return
        if self.cursor >= self.num_samples:
            self.epoch += 1
            self.cursor = 0
        if self.cursor != 0:
            return
        if self._limit is not None and self.epoch * self.num_samples >= self._limit:
            return
        if not self._workers:
            return
        bounds = np.linspace(0, self.num_samples, len(self._workers) + 1).astype(int)
        self._shards = {
            w: deque([Range(self.epoch, int(a), int(b))])
            for w, a, b in zip(self._workers, bounds[:-1], bounds[1:], strict=True)
            if b > a
        }
        self.cursor = self.num_samples


def _pop_front(queue: deque[Range], size: int) -> Range:
    head = queue.popleft()
    if len(head) <= size:
        return head
    queue.appendleft(Range(head.epoch, head.start + size, head.stop))
    return Range(head.epoch, head.start, head.start + size)
