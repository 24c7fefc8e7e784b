"""One synchronous round: who got a task in it, what came back, and when it may close.

Round ``v`` opens with the first task handed out for model version ``v``. Each live worker
gets at most one task per round. The round may close (its updates folded into version
``v + 1``) when

* every task handed out for it is back or was taken back, and
* every live worker has asked for work in it, or ``task_seconds`` have passed since it opened
  (right after a version, workers are still pulling it; a worker that asked and got nothing
  counts as having asked);

or at the round deadline with whatever arrived. Tasks handed out late in the round get only the
time left until the round's target end (at least a quarter of the target), so a worker that asks
late gets less work instead of delaying everyone.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from eddl.leader.sizing import RoundTarget

__all__ = ["SyncRound"]


@dataclass
class SyncRound:
    version: int
    opened_at: float | None = None
    tasks: set[str] = field(default_factory=set)
    settled: set[str] = field(default_factory=set)
    asked: set[str] = field(default_factory=set)

    def budget(self, now: float, target: RoundTarget) -> RoundTarget | None:
        """What a task handed out now aims at (None: a full task, the round is new): what is
        left of the round's ``target``, at least a quarter of it."""
        if self.opened_at is None:
            return None
        seconds = max(target.seconds - (now - self.opened_at), 0.25 * target.seconds)
        return RoundTarget(seconds, target.training)

    def handed(self, node_id: str, task_id: str, now: float) -> None:
        if self.opened_at is None:
            self.opened_at = now
        self.tasks.add(task_id)
        self.asked.add(node_id)

    def nothing_for(self, node_id: str) -> None:
        """``node_id`` asked but there was no data for it: the round does not wait for it."""
        if self.opened_at is not None:
            self.asked.add(node_id)

    def settle(self, task_id: str) -> None:
        """The task's update arrived, or the task was taken back."""
        if task_id in self.tasks:
            self.settled.add(task_id)

    def sits_out(self, node_id: str) -> None:
        """``node_id`` takes no part in this round (the sizing rule left it out)."""
        self.asked.add(node_id)

    def forget(self, node_id: str) -> None:
        """The node left: it is no longer expected, and may ask again if it rejoins."""
        self.asked.discard(node_id)

    @property
    def outstanding(self) -> set[str]:
        return self.tasks - self.settled

    def complete(self, now: float, workers: Collection[str], task_seconds: float) -> bool:
        """Every task is back and nobody else is still expected."""
        if not self.tasks or self.outstanding:
            return False
        absent = set(workers) - self.asked
        opened = self.opened_at if self.opened_at is not None else now
        return not absent or now - opened >= task_seconds

    def past(self, now: float, deadline: float) -> bool:
        return self.opened_at is not None and now - self.opened_at > deadline
