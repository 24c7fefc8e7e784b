"""A leader that is not the root refuses every call with ``not-leader`` and the root's address;
workers and the ``eddl`` CLI follow that hint to the root (real gRPC, real CLI process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from eddl.leader.config import LeaderConfig
from eddl.leader.server import LeaderDaemon
from eddl.net import REASON_KEY, open_channel
from eddl.net.redirect import LEADER_HINT_KEY, not_leader
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, running_cluster, wait_until


@contextlib.asynccontextmanager
async def standby(tmp: Path, root: str) -> AsyncIterator[str]:
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp / "standby",
        join_token=TOKEN,
        security="off",
        follow=root,
        grace_s=0.2,
    )
    daemon = LeaderDaemon(config)
    server = await daemon.start()
    try:
        yield server.address
    finally:
        await daemon.stop(0.2)


async def _refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _chunks() -> AsyncIterator[cluster_pb2.UpdateChunk]:
    yield cluster_pb2.UpdateChunk()


@pytest.mark.slow
async def test_every_rpc_of_a_standby_is_refused_with_the_roots_address(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster, standby(tmp_path, cluster.address) as addr:
        async with open_channel(addr) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            admin = admin_pb2_grpc.AdminStub(ch)
            env = common_pb2.Envelope(node_id="n1")
            calls = {
                "Join": stub.Join(
                    cluster_pb2.JoinRequest(envelope=env, join_token=TOKEN), timeout=10
                ),
                "Heartbeat": stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=env), timeout=10),
                "GetTask": stub.GetTask(cluster_pb2.GetTaskRequest(envelope=env), timeout=10),
                "PushUpdate": stub.PushUpdate(_chunks(), timeout=10),
                "SubmitJob": admin.SubmitJob(
                    admin_pb2.SubmitJobRequest(spec_json=json.dumps(DIGITS_JOB)), timeout=10
                ),
                "JobStatus": admin.JobStatus(admin_pb2.JobStatusRequest(), timeout=10),
            }
            for name, call in calls.items():
                exc = await _refusal(call)
                metadata = dict(exc.trailing_metadata() or ())
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, name
                assert metadata[REASON_KEY] == "not-leader", name
                assert metadata[LEADER_HINT_KEY] == cluster.address, name
                redirect = not_leader(exc, addr)
                assert redirect is not None and redirect.hint == cluster.address
            stream = admin.WatchJob(admin_pb2.WatchJobRequest(job_id="j"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stream:
                    pass
            assert not_leader(info.value) is not None
        # Nothing reached the root, and the standby claimed no term of its own.
        assert cluster.coordinator.store.jobs() == [] and len(cluster.coordinator.membership) == 0


@pytest.mark.slow
async def test_a_worker_and_the_cli_sent_to_a_standby_end_up_at_the_root(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster, standby(tmp_path, cluster.address) as addr:
        worker = await cluster.add_worker("w0", leaders=[addr])
        assert worker.link.address == cluster.address
        job_id = await cluster.submit({**DIGITS_JOB, "target_accuracy": 0.5})
        await wait_until(lambda: worker.tasks_done > 0, 30, "the worker trained at the root")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eddl.cli",
            "status",
            "--json",
            "--leader",
            addr,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()
        assert f"asking {cluster.address}" in err.decode()
        status = json.loads(out)
        assert status["job_id"] == job_id and "w0" in {n["node_id"] for n in status["nodes"]}
