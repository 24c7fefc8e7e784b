"""The sync meter's worker count: a sub-leader's push stands for the members whose updates it
folded (``TaskStats.workers``), so forming groups keeps the count and members leaving lower it;
only a sub-leader whose offer the root admitted may declare that figure."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from eddl.leader.groupdirector import GroupDirector
from eddl.leader.groupedge import GroupEdge
from eddl.leader.splitting import (
    NodeLink,
    SplitConfig,
    SplitDecision,
    SplitFigures,
    SplitPolicy,
)
from eddl.leader.syncmeter import SyncMeter
from eddl.profiler.interface import InterfaceCounter
from eddl.proto.v1 import cluster_pb2, common_pb2

pytestmark = pytest.mark.usefixtures("every_log_level")


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


def test_only_a_node_the_meter_is_told_leads_may_stand_for_several_workers() -> None:
    meter = SyncMeter(RecordingPolicy(), lambda decision: None, clock=lambda: 0.0)
    with capture_logs() as logs:
        # By default nobody leads: a declared count is ignored and logged.
        assert meter._declared("w1", 256) == 1
        meter.leads = lambda node: node == "sub-1"
        assert meter._declared("w1", 200) == 1
        assert meter._declared("sub-1", 5) == 5
        assert meter._declared("sub-1", 10_000) == 256  # the group bound
        assert meter._declared("w1", 1) == meter._declared("w1", 0) == 1
    ignored = [e for e in logs if e["event"] == "declared workers ignored"]
    assert [(e["node"], e["workers"]) for e in ignored] == [("w1", 256), ("w1", 200)]


def _edge(acts: bool) -> GroupEdge:
    meter = SyncMeter(SplitPolicy(), lambda decision: None, clock=lambda: 0.0)
    director = GroupDirector(patience=60.0)
    director.offer("sub-1", "127.0.0.1:7001", 0.0)
    director.offer("sub-2", "127.0.0.1:7002", 0.0)
    # A --can-lead worker's own offer over mTLS: its sub-leader has not joined.
    director.offer("w9.lead", "127.0.0.1:7009", 0.0, worker=True, owner="w9")
    return GroupEdge(director, meter, print, home=lambda: "", clock=lambda: 1.0, acts=acts)


@pytest.mark.parametrize("acts", [True, False])
def test_only_a_sub_leader_whose_offer_the_root_admitted_leads(acts: bool) -> None:
    edge = _edge(acts)
    assert edge.leads("sub-1") and edge.leads("sub-2")
    assert not edge.leads("w1")  # no offer: a worker
    assert not edge.leads("w9.lead") and not edge.leads("w9")  # pending, and its owner
    promote = SplitDecision("promote", 1, "test", SplitFigures(4, None, None, None, 1.0, 0), 1.0)
    nodes = [NodeLink(f"w{i}", 1e6, 10.0) for i in range(4)]
    edge.director.apply(promote, nodes, 1.0)
    demote = SplitDecision("demote", 0, "test", SplitFigures(1, None, None, None, 0.0, 1), 2.0)
    edge.director.apply(demote, nodes, 2.0)
    # Demoted, it still folds its members' updates until they are home: still counted.
    assert edge.leads("sub-1") and not edge.leads("w1")


class Counters:
    """An interface's counters as psutil reports them, moved by the test."""

    def __init__(self) -> None:
        self.received = self.sent = 0

    def __call__(self) -> dict[str, Any]:
        return {"veth0": SimpleNamespace(bytes_recv=self.received, bytes_sent=self.sent)}


class LinkPolicy(SplitPolicy):
    def __init__(self) -> None:
        super().__init__()
        self.shares: list[float] = []

    def observe_link(self, at: float, utilisation: float) -> None:
        self.shares.append(utilisation)
        super().observe_link(at, utilisation)


def test_the_interface_gives_the_busier_directions_share_once_per_period() -> None:
    counters, policy = Counters(), LinkPolicy()
    meter = SyncMeter(
        policy,
        lambda decision: None,
        capacity_bytes_per_s=1000.0,
        period=1.0,
        clock=lambda: 0.0,
        interface=InterfaceCounter("veth0", counters),
    )
    meter._count(10_000)  # the metered calls' bytes are not the figure with an interface
    counters.received, counters.sent = 600, 200
    meter._tick(0.5)  # within the period: no figure yet
    assert policy.shares == []
    meter._tick(1.0)
    counters.received, counters.sent = 800, 2_200  # 200 in, 2,000 out over the next 2 s
    meter._tick(3.0)
    assert policy.shares == [0.6, 1.0]
    counters.received = counters.sent = 2_200  # nothing out, 1,400 in over 2 s
    meter._tick(5.0)
    assert policy.shares[-1] == 0.7


def test_without_an_interface_the_metered_calls_bytes_are_the_figure() -> None:
    policy = LinkPolicy()
    meter = SyncMeter(policy, lambda decision: None, capacity_bytes_per_s=1000.0, clock=lambda: 0.0)
    meter._count(300)
    meter._count(200)
    meter._tick(1.0)
    assert policy.shares == [0.5]
    with pytest.raises(ValueError, match="need the link's capacity"):
        SyncMeter(policy, print, interface=InterfaceCounter("veth0", Counters()))


class Figures(SplitPolicy):
    """The split policy, keeping the tasks outstanding the meter tells it of."""

    def __init__(self, config: SplitConfig) -> None:
        super().__init__(config)
        self.outstanding: list[int] = []

    def observe_workers(self, workers: int, outstanding: int = 0) -> None:
        self.outstanding.append(outstanding)
        super().observe_workers(workers, outstanding)


async def test_a_handed_task_is_outstanding_until_the_hold_when_no_update_comes() -> None:
    now = [0.0]
    policy = Figures(SplitConfig(window=5, hold=30))
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: now[0])

    async def task(request: Any, context: Any) -> cluster_pb2.GetTaskReply:
        return cluster_pb2.GetTaskReply(task=cluster_pb2.Task(task_id="t1"))

    async def later(request: Any, context: Any) -> cluster_pb2.GetTaskReply:
        return cluster_pb2.GetTaskReply(retry_after_ms=100)

    for node in ("w1", "w2"):
        request = cluster_pb2.GetTaskRequest(envelope=common_pb2.Envelope(node_id=node))
        await meter._task(task)(request, None)
    request = cluster_pb2.GetTaskRequest(envelope=common_pb2.Envelope(node_id="w3"))
    await meter._task(later)(request, None)  # no task handed: nothing outstanding
    now[0] = 20.0
    await meter._task(task)(request, None)
    now[0] = 21.0  # the meter tells the policy once a period (1 s)
    meter._tick(now[0])
    assert policy.outstanding[-1] == 3
    now[0] = 31.0  # w1's and w2's tasks were handed more than the hold (30 s) ago
    meter._tick(now[0])
    assert policy.outstanding[-1] == 1 and list(meter._holding) == ["w3"]


async def test_an_update_for_the_handed_task_ends_it_and_one_for_another_task_does_not() -> None:
    policy = Figures(SplitConfig(window=5, hold=30))
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: 1.0)

    async def task(request: Any, context: Any) -> cluster_pb2.GetTaskReply:
        return cluster_pb2.GetTaskReply(task=cluster_pb2.Task(task_id="t1"))

    async def take(requests: Any, context: Any) -> cluster_pb2.PushUpdateReply:
        async for _chunk in requests:
            pass
        return cluster_pb2.PushUpdateReply(outcome="aggregated")

    async def update(task_id: str) -> Any:
        header = cluster_pb2.UpdateHeader(
            envelope=common_pb2.Envelope(node_id="w1"),
            task_id=task_id,
            stats=cluster_pb2.TaskStats(samples=8, seconds=0.5),
        )
        yield cluster_pb2.UpdateChunk(header=header)

    request = cluster_pb2.GetTaskRequest(envelope=common_pb2.Envelope(node_id="w1"))
    await meter._task(task)(request, None)
    await meter._push(take)(update("another-task"), None)
    assert list(meter._holding) == ["w1"]
    await meter._push(take)(update("t1"), None)
    assert list(meter._holding) == []
