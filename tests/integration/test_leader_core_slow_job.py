"""The owner of the leader's state stays responsive while a job's data loads beside it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from eddl.leader.config import LeaderConfig
from eddl.leader.jobs import JobSpec
from eddl.leader.runtime import JobRuntime, build_runtime
from eddl.leader.server import LeaderDaemon
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN

LOAD_S = 5.0
HEARTBEAT_S = 0.2  # with a patience of 2, a node is gone after ~0.4 s of silence


class SlowFactory:
    """``build_runtime`` that first sleeps like a dataset download, and says when it runs."""

    def __init__(self) -> None:
        self.loading = threading.Event()
        self.loaded = threading.Event()

    def __call__(self, spec: JobSpec) -> JobRuntime:
        self.loading.set()
        time.sleep(LOAD_S)
        self.loaded.set()
        return build_runtime(spec)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_heartbeats_and_get_task_are_answered_while_a_job_loads_for_5_s(
    tmp_path: Path,
) -> None:
    factory = SlowFactory()
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="off",
        heartbeat_interval_s=HEARTBEAT_S,
        grace_s=0.2,
    )
    daemon = LeaderDaemon(config, runtime_factory=factory)
    server = await daemon.start()
    term = daemon.core.coordinator.term if daemon.core else 0
    nodes = ("w0", "w1")
    latencies: dict[str, list[float]] = {"Heartbeat": [], "GetTask": []}
    try:
        async with open_channel(server.address) as ch:
            cluster = cluster_pb2_grpc.ClusterStub(ch)
            admin = admin_pb2_grpc.AdminStub(ch)
            for node in nodes:
                env = common_pb2.Envelope(node_id=node, term=term)
                await cluster.Join(
                    cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN),
                    timeout=10,
                )
            submit = asyncio.ensure_future(
                admin.SubmitJob(
                    admin_pb2.SubmitJobRequest(spec_json=json.dumps(DIGITS_JOB)), timeout=30
                )
            )
            for _ in range(400):  # bounded: ~0.05 s a round, the load takes 5 s
                if submit.done():
                    break
                for node in nodes:
                    env = common_pb2.Envelope(node_id=node, term=term)
                    loading = factory.loading.is_set() and not factory.loaded.is_set()
                    started = time.perf_counter()
                    beat = await cluster.Heartbeat(
                        cluster_pb2.HeartbeatRequest(envelope=env), timeout=5
                    )
                    beat_s = time.perf_counter() - started
                    started = time.perf_counter()
                    task = await cluster.GetTask(
                        cluster_pb2.GetTaskRequest(envelope=env, wait_ms=0), timeout=5
                    )
                    task_s = time.perf_counter() - started
                    assert beat.known, f"{node} was forgotten while the job loaded"
                    if loading and not factory.loaded.is_set():
                        assert not task.HasField("task")  # no job runs yet: nothing to hand out
                        latencies["Heartbeat"].append(beat_s)
                        latencies["GetTask"].append(task_s)
                await asyncio.sleep(0.05)
            reply = await submit
            assert reply.envelope.job_id
        coordinator = daemon.core.coordinator if daemon.core else None
        assert coordinator is not None
        assert sorted(n.node_id for n in coordinator.membership.alive()) == list(nodes)
        kinds = [e.kind.value for e in coordinator.events(reply.envelope.job_id)]
        assert "node_expired" not in kinds and "job_started" in kinds
    finally:
        await daemon.stop(0.2)
    # Measured while the factory slept: the whole load was covered, and every answer came fast.
    assert len(latencies["Heartbeat"]) >= 20, latencies
    for rpc, seconds in latencies.items():
        worst = max(seconds)
        print(f"{rpc}: {len(seconds)} calls during the load, worst {worst * 1000:.1f} ms")
        assert worst < 0.1, f"{rpc} took {worst * 1000:.0f} ms while a job loaded"
