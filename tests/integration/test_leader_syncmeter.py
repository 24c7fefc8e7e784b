"""The root's sync meter over real gRPC: workers' syncs and bytes feed the split policy; only
a sub-leader whose offer the root admitted may push for several workers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from eddl.leader.config import LeaderConfig
from eddl.leader.groupedge import split_edge
from eddl.leader.relay import UpwardUpdate
from eddl.leader.server import LeaderDaemon
from eddl.leader.splitting import (
    NodeLink,
    SplitConfig,
    SplitDecision,
    SplitFigures,
    SplitPolicy,
)
from eddl.leader.syncmeter import SyncMeter
from eddl.leader.uplink import Uplink
from eddl.net import params_nbytes
from eddl.profiler.interface import InterfaceCounter
from eddl.proto.v1 import cluster_pb2, common_pb2
from eddl.worker.daemon import WorkerDaemon
from tests.integration.cluster_support import (
    DIGITS_JOB,
    TOKEN,
    Cluster,
    cluster_stub,
    wait_until,
)

SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0)


async def _metered_leader(
    tmp_path: Path, meter: SyncMeter, *, heartbeat_s: float
) -> tuple[LeaderDaemon, Cluster]:
    """A plaintext leader on loopback port 0 with ``meter`` at its edge, no split."""
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="off",
        heartbeat_interval_s=heartbeat_s,
        admin_token="admin",
    )
    daemon = LeaderDaemon(config, interceptors=[meter])
    server = await daemon.start()
    return daemon, Cluster(daemon, server.address, tmp_path)


def test_a_link_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SyncMeter(SplitPolicy(), print, capacity_bytes_per_s=0.0)


async def test_syncs_over_a_busy_link_make_a_promotion_with_the_figures(tmp_path: Path) -> None:
    decisions: list[SplitDecision] = []
    policy = SplitPolicy(SplitConfig(window=3, busy_for=0, hold=0, min_group=1, max_groups=2))
    # A 2 kB/s link: every model pulled or update pushed keeps it full.
    meter = SyncMeter(policy, decisions.append, capacity_bytes_per_s=2000.0, period=0.2)
    daemon, cluster = await _metered_leader(tmp_path, meter, heartbeat_s=1.0)
    workers: list[tuple[WorkerDaemon, asyncio.Task[None]]] = []
    try:
        await cluster.submit(SLOW_JOB, token="admin")
        for i in range(4):
            w = WorkerDaemon(cluster.worker_config(f"w{i}"))
            workers.append((w, asyncio.create_task(w.run())))
        await wait_until(lambda: bool(decisions), 60.0, "a split decision")
        # With the four workers steady, BUC = n / t_sync comes out of the window.
        measured: list[tuple[int, float]] = []

        def buc() -> bool:
            got = policy.buc(time.monotonic())
            if got is not None and got[0] == 4:
                measured.append(got)
            return bool(measured)

        await wait_until(buc, 60.0, "BUC at four workers")
    finally:
        for w, task in workers:
            w.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await daemon.stop(0.2)
    first = decisions[0]
    assert first.action == "promote" and first.groups == 2
    assert first.figures.link_busy == 1.0 and "root link >= 85% busy" in first.reason
    assert first.figures.workers >= 4
    assert measured[0][1] > 0


class CountingPolicy(SplitPolicy):
    """The split policy, keeping the worker count of each synchronisation it is told of."""

    def __init__(self) -> None:
        super().__init__(SplitConfig(window=600, hold=600))
        self.counts: list[int] = []

    def observe_sync(self, at: float, workers: int, seconds: float) -> None:
        self.counts.append(workers)
        super().observe_sync(at, workers, seconds)


async def _answer(uplink: Uplink, workers: int) -> None:
    """Draw a task and answer it with its base model, declaring ``workers`` members."""
    await _push(uplink, await _draw(uplink), workers)


async def _draw(uplink: Uplink) -> tuple[Any, Any]:
    drawn = None
    for _ in range(40):  # bounded: the job starts, the round closes
        drawn = await uplink.next_task(0.5)
        if drawn is not None:
            break
    assert drawn is not None, f"{uplink.node_id} got no task"
    return drawn


async def _push(uplink: Uplink, drawn: tuple[Any, Any], workers: int) -> None:
    job, task = drawn
    _, params = await uplink.pull(job.job_id, task.base_version)
    update = UpwardUpdate(task.task_id, task.base_version, task.num_samples, params, 1)
    reply = await uplink.push(job.job_id, update, seconds=0.1, workers=workers)
    assert reply.outcome not in ("requeued", "job-failed")


@pytest.mark.usefixtures("every_log_level")
async def test_a_worker_counts_as_one_whatever_it_declares_and_a_sub_leader_as_its_group(
    tmp_path: Path,
) -> None:
    policy = CountingPolicy()
    meter = SyncMeter(policy, lambda d: None)
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="off",
        heartbeat_interval_s=5.0,
        admin_token="admin",
        split="auto",
    )
    holder: list[LeaderDaemon] = []
    edge = split_edge(config, meter, lambda: holder[0].server)
    daemon = LeaderDaemon(config, interceptors=[meter], authorized_interceptors=[edge])
    holder.append(daemon)
    server = await daemon.start()
    cluster = Cluster(daemon, server.address, tmp_path)
    try:
        await cluster.submit(SLOW_JOB, token="admin")
        async with cluster_stub(server.address) as stub:
            sub = Uplink(stub, "sub-1")
            sub.lead_address = "127.0.0.1:7001"
            liar = Uplink(stub, "w-liar")
            await sub.join(TOKEN)
            await liar.join(TOKEN)
            assert set(edge.director.offers) == {"sub-1"}
            with capture_logs() as logs:
                # The worker's declaration counts for nothing. It declares 8, the job's
                # min_task_samples: an update may not stand for more updates than its task
                # has samples (refused outright, test_subleader_folds.py).
                await _answer(liar, workers=8)
                assert policy.counts == [1]
                # Its next task is drawn before the split: once groups exist, a worker the
                # plan does not know is placed in one and asks its sub-leader for tasks.
                held = await _draw(liar)
                figures = SplitFigures(4, None, None, None, 1.0, 0)
                promote = SplitDecision("promote", 1, "test", figures, 0.0)
                members = [NodeLink("g1", 1e6, 10.0), NodeLink("g2", 1e6, 10.0)]
                formed = edge.director.apply(promote, members, edge.clock())
                assert [g.leader for g in formed.groups] == ["sub-1"]
                # Promoted: its push stands for its five members; the worker's 8 for one.
                await _answer(sub, workers=5)
                await _push(liar, held, workers=8)
            assert policy.counts == [1, 6, 6]
            assert meter._behind == {"sub-1": 5, "w-liar": 1}
            ignored = [e for e in logs if e["event"] == "declared workers ignored"]
            assert [(e["node"], e["workers"]) for e in ignored] == [("w-liar", 8)] * 2
    finally:
        await daemon.stop(0.2)


async def test_a_models_bytes_inside_a_task_reply_load_the_link(tmp_path: Path) -> None:
    # A task's model can come inside the GetTask reply, with no PullModel: the meter counts it.
    meter = SyncMeter(SplitPolicy(), print, capacity_bytes_per_s=1e9, period=600.0)
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="off",
        admin_token="admin",
    )
    daemon = LeaderDaemon(config, interceptors=[meter])
    server = await daemon.start()
    cluster = Cluster(daemon, server.address, tmp_path)
    try:
        job_id = await cluster.submit(SLOW_JOB, token="admin")
        env = common_pb2.Envelope(node_id="n1", term=cluster.coordinator.term)
        async with cluster_stub(cluster.address) as stub:
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN), timeout=10
            )
            before = meter.link_bytes
            request = cluster_pb2.GetTaskRequest(envelope=env, wait_ms=3000)
            plain = await stub.GetTask(request, timeout=10)
            assert plain.WhichOneof("outcome") == "task" and not plain.model_chunks
            small = meter.link_bytes - before
            assert 0 < small < 10_000  # a task alone: its indexes and settings
            request.inline_model_bytes = 1 << 30
            inline = await stub.GetTask(request, timeout=10)
        model = params_nbytes(cluster.coordinator.model(job_id).params)
        assert inline.model_chunks and meter.link_bytes - before - small >= model
    finally:
        await daemon.stop(0.2)


def _header(uplink: Uplink, drawn: tuple[Any, Any], task_id: str) -> cluster_pb2.UpdateChunk:
    job, task = drawn
    return cluster_pb2.UpdateChunk(
        header=cluster_pb2.UpdateHeader(
            envelope=uplink.envelope(job.job_id, task.base_version),
            task_id=task_id,
            num_samples=task.num_samples,
            num_tensors=2,
            total_bytes=1 << 20,
            stats=cluster_pb2.TaskStats(samples=task.num_samples, seconds=0.5),
            layer=-1,
        )
    )


async def _header_only(
    head: cluster_pb2.UpdateChunk, release: asyncio.Event | None
) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    """An update's stream: its header, then nothing until ``release`` is set (an update stuck
    on a full link); with no ``release``, the stream ends after the header."""
    yield head
    if release is not None:
        await release.wait()


async def test_updates_under_way_count_their_nodes_and_the_interface_sees_every_byte(
    tmp_path: Path,
) -> None:
    # A link too full for any update to arrive: the nodes whose updates are under way count as
    # synchronising, the interface's counters see bytes the gRPC edge has not counted, and
    # heartbeats keep the figures and the decisions coming while no synchronisation finishes.
    decisions: list[SplitDecision] = []
    policy = SplitPolicy(SplitConfig(window=60, busy_for=0.6, hold=0, min_group=1, max_groups=2))
    meter = SyncMeter(
        policy,
        decisions.append,
        capacity_bytes_per_s=100_000.0,
        period=0.2,
        interface=InterfaceCounter("lo"),
    )
    daemon, cluster = await _metered_leader(tmp_path, meter, heartbeat_s=5.0)
    release = asyncio.Event()
    stuck: list[Any] = []

    async def discard(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1 << 16):
            pass
        writer.close()

    # Bytes on loopback that no metered call carries, as other traffic fills a link.
    other = await asyncio.start_server(discard, "127.0.0.1", 0)
    _, traffic = await asyncio.open_connection(*other.sockets[0].getsockname()[:2])
    try:
        await cluster.submit(SLOW_JOB, token="admin")
        async with cluster_stub(cluster.address) as stub:
            nodes = [Uplink(stub, f"w{i}") for i in range(5)]
            for node in nodes:
                await node.join(TOKEN)
            drawn = [await _draw(node) for node in nodes]
            # An update for a task the node was not handed counts for nothing.
            wrong = _header(nodes[4], drawn[4], "not-its-task")
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.PushUpdate(_header_only(wrong, None), timeout=10)
            assert meter._pushed == {} and meter.nodes() == []
            for node, task in zip(nodes[:4], drawn[:4], strict=True):
                head = _header(node, task, task[1].task_id)
                stuck.append(stub.PushUpdate(_header_only(head, release), timeout=60))
            await wait_until(lambda: len(meter._pushed) == 4, 10.0, "four updates under way")
            assert {n.node_id for n in meter.nodes()} == {"w0", "w1", "w2", "w3"}
            assert all(n.bandwidth == 0.0 for n in meter.nodes())  # not measured yet
            for _ in range(200):  # bounded: at most 200 beats, about 20 s
                traffic.write(b"x" * 50_000)
                await traffic.drain()
                await nodes[4].heartbeat()
                if decisions:
                    break
                await asyncio.sleep(0.05)
            assert meter.totals().syncs == 0  # no update arrived
    finally:
        release.set()
        for call in stuck:
            call.cancel()
        traffic.close()
        other.close()
        await daemon.stop(0.2)
    first = decisions[0]
    assert first.action == "promote" and "root link >= 85% busy" in first.reason
    assert first.figures.workers == 0 and first.figures.synchronising == 4
    # Five tasks handed, none of their updates arrived (w4's went out for another task).
    assert (first.figures.outstanding, first.figures.served) == (5, 0)
    assert first.figures.link_busy is not None and first.figures.link_busy >= 0.85
