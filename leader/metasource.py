"""The task source of a meta-learning job: which devices train in each round, on which task.

Each node that asks is a *device*: the first time it asks it is given the next device task of
the job (``0, 1, …, devices − 1``, then round again), and it keeps that task for as long as the
job runs. Round ``r`` (model version ``r``) samples ``devices_per_round`` nodes: the first of a
``default_rng([seed, 0xF00D, r])`` permutation of the live workers (and of the nodes already
handed a task in the round), so a sampled node that leaves before its task frees its place
for another and a round never waits for a node that is gone; a sampled node is handed one range
``Range(r, task, task + 1)`` (its index is its device task, so a task is one "sample" and every
device weighs the same in the Reptile mean), and a node not sampled gets nothing until the
round closes. A task taken back (its node left, or was too late) may be handed again to the
same node in the same round; nothing carries over to later rounds. Held-out devices are never
handed out: their task ids start at ``devices``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from eddl.leader.source import PermutationSource, Range

__all__ = ["MetaSource"]


class MetaSource(PermutationSource):
    """Devices per round over the live workers; see the module docstring."""

    def __init__(
        self, devices: int, devices_per_round: int, *, seed: int, version: Callable[[], int]
    ) -> None:
        super().__init__(devices, seed=seed)
        if not devices_per_round >= 1:
            raise ValueError("devices_per_round must be >= 1")
        self.devices = devices
        self.devices_per_round = devices_per_round
        self._version = version
        self.device_of: dict[str, int] = {}
        self._round = -1
        self._given: set[str] = set()  # nodes handed a task in the current round

    def _eligible(self, r: int) -> set[str]:
        """The nodes round ``r`` samples: the first ``devices_per_round`` of a seeded
        permutation of the live workers (and of those already handed a task this round)."""
        pool = sorted(set(self._workers) | self._given)
        order = np.random.default_rng([self.seed, 0xF00D, r]).permutation(len(pool))
        return {pool[int(i)] for i in order[: self.devices_per_round]}

    @property
    def sampled(self) -> tuple[str, ...]:
        """The nodes sampled for the current round."""
        return tuple(sorted(self._eligible(self._version())))

    def device(self, node_id: str) -> int:
        """The device task ``node_id`` holds (given on first sight, kept while the job runs)."""
        task = self.device_of.get(node_id)
        if task is None:
            task = self.device_of[node_id] = len(self.device_of) % self.devices
        return task

    def take(self, node_id: str, size: int) -> Range | None:
        r = self._version()
        if r != self._round:
            self._round, self._given = r, set()
        if size < 1 or node_id in self._given or len(self._given) >= self.devices_per_round:
            return None
        if node_id not in self._eligible(r):
            return None
        self._given.add(node_id)
        task = self.device(node_id)
        return Range(r, task, task + 1)

    def give_back(self, rng: Range) -> None:
        if rng.epoch != self._round:
            return  # a past round's device task: that round is closed
        for node, task in self.device_of.items():
            if task == rng.start and node in self._given:
                self._given.discard(node)
                return

    def indexes(self, rng: Range) -> np.ndarray:
        return np.arange(rng.start, rng.stop, dtype=np.int64)

    def forget_worker(self, node_id: str) -> None:
        self._given.discard(node_id)

    def left(self) -> int | None:
        return None

    def drained(self) -> bool:
        return False

    def requeued(self) -> list[Range]:
        return []

    def shard_ranges(self) -> list[Range]:
        return []

    def set_workers(self, node_ids: Iterable[str]) -> None:
        self._workers = list(node_ids)

    def checkpoint(self) -> dict[str, Any]:
        return {"epoch": self._round, "cursor": 0, "devices": dict(self.device_of)}

    def restore(self, state: dict[str, Any], todo: Iterable[Range]) -> None:
        # A resumed job starts its round afresh; nodes keep the device tasks they held.
        devices = state.get("devices") or {}
        self.device_of = {str(k): int(v) % self.devices for k, v in devices.items()}
        self._round, self._given = -1, set()
