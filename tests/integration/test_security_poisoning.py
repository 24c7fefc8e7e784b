"""The poisoning scenario against a live job over mTLS: a worker trains; another enrolled node
that knows the victim's id and current task pushes all-1e6 weights as the victim. Every push is
refused, the victim trains on, and no weight of the global model comes near 1e6."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from eddl.cli.admin_client import job_status, list_nodes, submit_job
from eddl.cluster.local import DEFAULT_JOB
from eddl.net import encode_tensors, params_nbytes
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.security.node import NodeSecurity
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import WorkerDaemon
from eddl.worker.transfer import receive_model
from tests.integration.cluster_support import wait_until
from tests.integration.security_support import authority, identity, leader

pytestmark = pytest.mark.timeout(120)
HUGE = 1e6


async def _poison(
    stub: cluster_pb2_grpc.ClusterStub, env: common_pb2.Envelope, task_id: str
) -> grpc.StatusCode:
    params = {
        "w0": np.full((64, 32), HUGE, np.float32),
        "b0": np.full(32, HUGE, np.float32),
        "w1": np.full((32, 10), HUGE, np.float32),
        "b1": np.full(10, HUGE, np.float32),
    }
    header = cluster_pb2.UpdateHeader(
        envelope=env,
        task_id=task_id,
        num_samples=100,
        num_tensors=len(params),
        total_bytes=params_nbytes(params),
    )

    async def chunks() -> AsyncIterator[cluster_pb2.UpdateChunk]:
        yield cluster_pb2.UpdateChunk(header=header)
        for c in encode_tensors(params):
            yield cluster_pb2.UpdateChunk(chunk=c)

    try:
        await stub.PushUpdate(chunks(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_node_pushing_huge_weights_as_another_is_refused_during_a_job(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        address = daemon.server.address
        auth = authority(daemon)
        admin = identity(auth, "ops", "admin")
        victim = WorkerDaemon(
            WorkerConfig(leaders=[address], node_id="victim", bind="", poll_ms=200),
            security=NodeSecurity("mtls", identity(auth, "victim", "worker")),
        )
        runner = asyncio.create_task(victim.run())
        try:
            spec: dict[str, Any] = {**DEFAULT_JOB, "target_accuracy": 0.999, "max_epochs": 1e4}
            job_id = await submit_job(address, spec, identity=admin)

            async def version() -> int:
                status = await job_status(address, job_id, identity=admin)
                return int(status.envelope.model_version)

            async def at_least(n: int) -> bool:
                return await version() >= n

            await wait_until(lambda: at_least(2), 60, "version 2", step=0.1)
            assert daemon.leadership is not None
            term = daemon.leadership.term
            mallory = NodeSecurity("mtls", identity(auth, "mallory", "worker"))
            async with mallory.channel(address) as ch:
                stub = cluster_pb2_grpc.ClusterStub(ch)
                refused = []
                for _ in range(5):
                    nodes = await list_nodes(address, identity=admin)
                    row = next(n for n in nodes.nodes if n.node_id == "victim")
                    v = await version()
                    env = common_pb2.Envelope(
                        job_id=job_id,
                        model_version=v,
                        term=term,
                        node_id="victim",
                    )
                    refused.append(await _poison(stub, env, row.current_task))
                    beat = cluster_pb2.HeartbeatRequest(envelope=env)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.Heartbeat(beat, timeout=10)
                    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused == [grpc.StatusCode.PERMISSION_DENIED] * 5
            after = await version()
            await wait_until(lambda: at_least(after + 2), 60, "training to go on", step=0.1)
            async with victim.link.security.channel(address) as ch:
                stream = cluster_pb2_grpc.ClusterStub(ch).PullModel(
                    cluster_pb2.PullModelRequest(
                        envelope=common_pb2.Envelope(job_id=job_id, node_id="victim"), latest=True
                    ),
                    timeout=10,
                )
                _, params = await receive_model(stream, 1 << 26)
            largest = max(float(np.abs(p).max()) for p in params.values())
            assert largest < 100.0, largest
        finally:
            victim.request_stop()
            await asyncio.wait_for(runner, 30)
