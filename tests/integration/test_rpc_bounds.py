"""The reproduced crashes of a leader, each now a clear refusal that changes nothing.

Real gRPC on 127.0.0.1:0: WatchJob after 2^63, PullModel of version 2^64 - 1, a job whose model
would take 272 TiB, a job JSON nested 500 levels, an update header declaring 2^32 - 1 tensors,
undecodable bytes. After each, the model, the members and the jobs are as before and the leader
still answers. A handler that raises something unexpected answers INTERNAL with an incident id
only, never the exception's text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.leader.service import LeaderService
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, Cluster, running_cluster

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, admin_token="admin") as c:
        yield c


def _state(cluster: Cluster, job_id: str) -> tuple[Any, ...]:
    status = cluster.status(job_id)
    params = cluster.coordinator.model(job_id).params
    jobs = cluster.coordinator.job_status(None)["job_id"]
    return (
        status["version"],
        status["status"],
        {k: v.tobytes() for k, v in params.items()},
        sorted(n.node_id for n in cluster.coordinator.membership.nodes()),
        jobs,
    )


async def _refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def _one_by_one(messages: list[Any]) -> AsyncIterator[Any]:
    for m in messages:
        yield m


async def test_named_reproductions_are_invalid_and_change_nothing(cluster: Cluster) -> None:
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    term = cluster.coordinator.term
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        stub = cluster_pb2_grpc.ClusterStub(ch)
        env = common_pb2.Envelope(node_id="n1", term=term, job_id=job_id)
        await stub.Join(
            cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN), timeout=10
        )
        before = _state(cluster, job_id)
        huge_model = {**SLOW_JOB, "model": {**SLOW_JOB["model"], "sizes": [64, 10**12, 10]}}
        nested = {**SLOW_JOB, "hyper": {"lr": 0.2, "deep": json.loads("[" * 500 + "]" * 500)}}
        header = cluster_pb2.UpdateHeader(
            envelope=env, task_id="t-1", num_samples=8, num_tensors=2**32 - 1, total_bytes=16
        )
        cases = {
            "after_seq 2^63": _collect(
                admin.WatchJob(admin_pb2.WatchJobRequest(job_id=job_id, after_seq=2**63))
            ),
            "model_version 2^64-1": _collect(
                stub.PullModel(
                    cluster_pb2.PullModelRequest(
                        envelope=common_pb2.Envelope(job_id=job_id, model_version=2**64 - 1)
                    )
                )
            ),
            "sizes 10^12": admin.SubmitJob(
                admin_pb2.SubmitJobRequest(spec_json=json.dumps(huge_model), admin_token="admin")
            ),
            "500 levels": admin.SubmitJob(
                admin_pb2.SubmitJobRequest(spec_json=json.dumps(nested), admin_token="admin")
            ),
            "2^32 tensors": stub.PushUpdate(
                _one_by_one([cluster_pb2.UpdateChunk(header=header)]), timeout=10
            ),
            "job id of 10,000 characters": admin.JobStatus(
                admin_pb2.JobStatusRequest(job_id="j" * 10_000)
            ),
        }
        for name, call in cases.items():
            code, details = await _refused(call)
            # A declared size over a limit is RESOURCE_EXHAUSTED; the rest INVALID_ARGUMENT.
            want = grpc.StatusCode.RESOURCE_EXHAUSTED if name == "2^32 tensors" else INVALID
            assert code == want, (name, code, details)
            assert 0 < len(details) <= 512, name
            assert _state(cluster, job_id) == before, name
        # Still answering, with the same job and model.
        status = await admin.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10)
        assert status.state == "running"


async def test_field_bounds_name_the_field(cluster: Cluster) -> None:
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        stub = cluster_pb2_grpc.ClusterStub(ch)
        code, details = await _refused(
            _collect(admin.WatchJob(admin_pb2.WatchJobRequest(job_id=job_id, after_seq=2**64 - 1)))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "after_seq" in details
        beat = cluster_pb2.HeartbeatRequest(
            envelope=common_pb2.Envelope(node_id="n1", term=cluster.coordinator.term),
            load=cluster_pb2.NodeLoad(cpu_percent=float("inf")),
        )
        code, details = await _refused(stub.Heartbeat(beat))
        assert (code, "cpu_percent" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)
        big = admin_pb2.SubmitJobRequest(spec_json=" " * (64 * 1024 + 1), admin_token="admin")
        code, details = await _refused(admin.SubmitJob(big))
        assert (code, "spec_json" in details) == (grpc.StatusCode.INVALID_ARGUMENT, True)


async def test_undecodable_bytes_are_invalid_not_internal(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        for method in ("/eddl.v1.Admin/JobStatus", "/eddl.v1.Cluster/Join"):
            raw = ch.unary_unary(method)  # no serializer: the bytes go out as they are
            code, details = await _refused(raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=10))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, method
            assert details.startswith("malformed request message")
        upload = ch.stream_unary("/eddl.v1.Probe/Upload")
        code, _ = await _refused(upload(iter([b"\x0a\x01x", b"\x0a\xff"]), timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_unexpected_exception_is_internal_with_an_incident_id_only(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "state-that-must-not-leak"

    async def broken(self: LeaderService, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(secret)

    monkeypatch.setattr(LeaderService, "nodes", broken)
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        code, details = await _refused(admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=10))
        assert code == grpc.StatusCode.INTERNAL
        assert details.startswith("internal error (incident ")
        assert secret not in details and "RuntimeError" not in details
        monkeypatch.undo()
        listed = await admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
        assert list(listed.nodes) == []
