"""The owner of the leader's state stays responsive while versions are evaluated beside it."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from eddl.leader.config import LeaderConfig
from eddl.leader.events import EventKind
from eddl.leader.jobs import JobSpec
from eddl.leader.runtime import JobRuntime, build_runtime
from eddl.leader.server import LeaderDaemon
from eddl.learn.params import Params
from eddl.net import open_channel
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, Cluster

EVALUATE_S = 2.0
HEARTBEAT_S = 0.2  # with a patience of 2, a node is gone after ~0.4 s of silence
JOB = {
    **{k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"},
    "aggregation": "async",
    "rounds": 4,
}


class SlowEvaluation:
    """``build_runtime`` whose evaluation takes ``EVALUATE_S``; says while one runs."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.versions: list[float] = []

    def __call__(self, spec: JobSpec) -> JobRuntime:
        runtime = build_runtime(spec)
        evaluate = runtime.evaluate
        assert evaluate is not None

        def slow(params: Params) -> float:
            self.running.set()
            try:
                time.sleep(EVALUATE_S)
                return evaluate(params)
            finally:
                self.running.clear()

        return replace(runtime, evaluate=slow)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_heartbeats_and_get_task_are_answered_while_versions_take_2_s_to_evaluate(
    tmp_path: Path,
) -> None:
    factory = SlowEvaluation()
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        heartbeat_interval_s=HEARTBEAT_S,
        grace_s=0.2,
        security="off",  # in-process plaintext clients (the daemons default to mtls)
    )
    daemon = LeaderDaemon(config, runtime_factory=factory)
    server = await daemon.start()
    cluster = Cluster(daemon, server.address, tmp_path)
    latencies: dict[str, list[float]] = {"Heartbeat": [], "GetTask": []}
    try:
        for node_id in ("w0", "w1"):
            await cluster.add_worker(node_id)
        job_id = await cluster.submit(JOB)
        async with open_channel(server.address) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            term = cluster.coordinator.term
            env = common_pb2.Envelope(node_id="probe", term=term)
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN), timeout=10
            )
            for _ in range(600):  # bounded: ~0.05 s a round, the job ends within seconds
                if cluster.status(job_id)["status"] not in ("running", "ending"):
                    break
                evaluating = factory.running.is_set()
                started = time.perf_counter()
                await stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=env), timeout=5)
                beat_s = time.perf_counter() - started
                started = time.perf_counter()
                await stub.GetTask(cluster_pb2.GetTaskRequest(envelope=env, wait_ms=0), timeout=5)
                task_s = time.perf_counter() - started
                if evaluating and factory.running.is_set():
                    latencies["Heartbeat"].append(beat_s)
                    latencies["GetTask"].append(task_s)
                await asyncio.sleep(0.05)
        status = await cluster.wait_job(job_id, 30)
        events = cluster.coordinator.events(job_id)
    finally:
        for node_id in list(cluster.workers):
            await cluster.stop_worker(node_id)
        await daemon.stop(0.2)
    assert status["status"] == "completed", status
    kinds = [e.kind for e in events]
    assert EventKind.NODE_EXPIRED not in kinds, [e.message for e in events]
    evaluated = [e for e in events if e.kind is EventKind.MODEL_EVALUATED]
    # The final accuracy is the last version's, measured after training was done.
    assert evaluated and evaluated[-1].data["version"] == status["version"]
    assert status["accuracy"] == evaluated[-1].data["accuracy"]
    completed = next(e for e in events if e.kind is EventKind.JOB_COMPLETED)
    assert completed.seq > evaluated[-1].seq
    # Measured while an evaluation ran: every answer came long before one evaluation ended.
    assert len(latencies["Heartbeat"]) >= 10, latencies
    for rpc, seconds in latencies.items():
        worst = max(seconds)
        ordered = sorted(seconds)
        print(
            f"{rpc}: {len(seconds)} calls during evaluations, median "
            f"{ordered[len(ordered) // 2] * 1000:.1f} ms, worst {worst * 1000:.1f} ms"
        )
        assert worst < EVALUATE_S / 2, f"{rpc} took {worst * 1000:.0f} ms during an evaluation"
