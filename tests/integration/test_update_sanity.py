"""Update sanity over real gRPC: a joined node that pushes 1e6 weights, then NaN, is refused
each time (INVALID_ARGUMENT), counted, quarantined after three refusals in a row with an event
saying why, and the job still completes with the honest workers, its model bounded."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from eddl.cli.statusview import job_placement, status_dict
from eddl.net import encode_tensors, open_channel, params_nbytes
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, Cluster, running_cluster

EVIL = "evil"
# Ten versions whatever the accuracy: long enough for three hostile tasks.
JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
JOB.update(rounds=10)


def _env(cluster: Cluster, job: str = "", version: int = 0) -> common_pb2.Envelope:
    return common_pb2.Envelope(
        job_id=job, model_version=version, node_id=EVIL, term=cluster.coordinator.term
    )


async def _stream(messages: list[Any]) -> Any:
    for m in messages:
        yield m


async def _beat(cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub) -> None:
    while True:  # cancelled by the test; one beat per heartbeat interval
        await stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=_env(cluster)), timeout=5)
        await asyncio.sleep(0.1)


async def _next_task(cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.Task:
    for _ in range(60):  # bounded: a sync round hands one task per node
        reply = await stub.GetTask(
            cluster_pb2.GetTaskRequest(envelope=_env(cluster), wait_ms=1000), timeout=10
        )
        if reply.WhichOneof("outcome") == "task":
            return reply.task
    raise AssertionError("no task for the hostile node")


def _update(
    cluster: Cluster, task: cluster_pb2.Task, params: dict[str, np.ndarray]
) -> list[cluster_pb2.UpdateChunk]:
    header = cluster_pb2.UpdateHeader(
        envelope=_env(cluster, task.envelope.job_id, task.envelope.model_version),
        task_id=task.task_id,
        num_samples=len(task.indexes),
        num_tensors=len(params),
        total_bytes=params_nbytes(params),
    )
    out = [cluster_pb2.UpdateChunk(header=header)]
    return out + [cluster_pb2.UpdateChunk(chunk=c) for c in encode_tensors(params, 1 << 16)]


async def test_huge_and_nan_updates_are_refused_counted_and_quarantined(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        await cluster.add_worker("w1")
        await cluster.add_worker("w2")
        async with open_channel(cluster.address) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=_env(cluster), role="worker", join_token=TOKEN),
                timeout=10,
            )
            beats = asyncio.create_task(_beat(cluster, stub))
            job_id = await cluster.submit(JOB)
            try:
                for value in (1e6, 1e6, np.nan):
                    task = await _next_task(cluster, stub)
                    shapes = cluster.coordinator.model(job_id).params
                    poison = {k: np.full_like(v, value) for k, v in shapes.items()}
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.PushUpdate(_stream(_update(cluster, task, poison)), timeout=10)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                reply = await stub.GetTask(
                    cluster_pb2.GetTaskRequest(envelope=_env(cluster), wait_ms=200), timeout=10
                )
                assert reply.WhichOneof("outcome") == "retry_after_ms"
                status = cluster.status(job_id)
                assert status["sanity"]["refused"] == {EVIL: 3}
                assert "3 updates refused in a row" in status["sanity"]["quarantined"][EVIL]
                events = [e for e in cluster.coordinator.events(job_id)]
                quarantine = [e for e in events if e.kind.value == "node_quarantined"]
                assert [e.data["node_id"] for e in quarantine] == [EVIL]
                final = await cluster.wait_job(job_id, 120)
                # What `eddl status` prints.
                admin = admin_pb2_grpc.AdminStub(ch)
                info = status_dict(
                    await admin.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10),
                    await admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=10),
                )
                lines = job_placement(info["detail"])
                assert f"updates refused (sanity)  {EVIL} 3" in lines
                assert any(line.startswith(f"quarantined: {EVIL}: 3 updates") for line in lines)
            finally:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await beats
        assert final["status"] == "completed" and final["version"] == 10
        assert final["accuracy"] > 0.8  # the accepted poison of the same kind left 0.097
        params = cluster.coordinator.model(job_id).params
        assert max(float(np.abs(v).max()) for v in params.values()) < 100
        assert EVIL not in final["work"]
