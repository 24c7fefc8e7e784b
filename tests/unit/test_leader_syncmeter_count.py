"""The sync meter's worker count: a sub-leader's push stands for the members whose updates it
folded (``TaskStats.workers``), so forming groups keeps the count and members leaving lower it."""

from __future__ import annotations

from eddl.leader.splitting import SplitPolicy
from eddl.leader.syncmeter import SyncMeter


class RecordingPolicy(SplitPolicy):
    """The split policy, keeping the worker count of each synchronisation it is told of."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[int] = []

    def observe_sync(self, at: float, workers: int, seconds: float) -> None:
        self.counts.append(workers)
        super().observe_sync(at, workers, seconds)


def sync(meter: SyncMeter, node: str, now: float, workers: int = 1) -> None:
    meter._synced(node, 0.05, now, workers)


def test_without_groups_every_pushing_node_is_one_worker() -> None:
    policy = RecordingPolicy()
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: 0.0)
    for i, node in enumerate(["w1", "w2", "w3", "w2"]):
        sync(meter, node, 1.0 + i * 0.1)
    assert policy.counts == [1, 2, 3, 3]


def test_a_sub_leader_counts_as_the_members_its_round_folded() -> None:
    policy = RecordingPolicy()
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: 0.0)
    sync(meter, "w-home", 1.0)  # a worker left with the root
    sync(meter, "sub-1", 1.1, workers=5)
    sync(meter, "sub-2", 1.2, workers=4)
    assert policy.counts == [1, 6, 10]
    sync(meter, "sub-2", 1.3, workers=1)  # three of its members left: the count falls
    assert policy.counts[-1] == 7


def test_a_sub_leader_outside_the_window_adds_nothing() -> None:
    policy = RecordingPolicy()
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: 0.0)
    sync(meter, "sub-1", 1.0, workers=5)
    later = 1.0 + policy.config.window + 1.0
    sync(meter, "w1", later)  # sub-1's push has left the window
    assert policy.counts == [5, 1]
