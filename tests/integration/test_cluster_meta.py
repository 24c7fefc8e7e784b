"""TinyMetaFed and Reptile jobs over real gRPC: rounds of sampled devices, sparse uploads on
the wire, few-shot accuracy as the job's accuracy, and bad sparse records refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import eddl.leader.servicers.upload as upload
from eddl.leader.servicers.updatewire import read_update_body
from eddl.net import open_channel
from eddl.net.sparse import encode_sparse, wire_bytes
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import TOKEN, Cluster, running_cluster

META_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "tinymetafed",
    "aggregation": "sync",
    "rounds": 4,
    "task_seconds": 0.3,
    "round_deadline": 5.0,
    "model": {"devices": 6, "held_out": 3, "samples": 5},
    "hyper": {"devices_per_round": 2, "top_p": 10, "local_layers": 1, "shots": 3},
}
# digits, 5-way: 64-40-32-5; the head (W2, b2) stays on the devices.
SHARED = {"W0": (64, 40), "b0": (40,), "W1": (40, 32), "b1": (32,)}


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[list[cluster_pb2.UpdateChunk]]:
    """Every PushUpdate stream the leader's servicer reads, message by message."""
    streams: list[list[cluster_pb2.UpdateChunk]] = []

    async def spy(header: Any, read: int, stream: Any, limit: int) -> Any:
        seen = [cluster_pb2.UpdateChunk(header=header)]
        streams.append(seen)

        async def tee() -> AsyncIterator[cluster_pb2.UpdateChunk]:
            async for message in stream:
                seen.append(message)
                yield message

        return await read_update_body(header, read, tee(), limit)

    monkeypatch.setattr(upload, "read_update_body", spy)
    return streams


@pytest.mark.parametrize("kernel", ["lsgd", "lsgd-q8"])
async def test_tinymetafed_job_completes_with_few_shot_accuracy_and_sparse_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    streams = _spy(monkeypatch)
    job = {**META_JOB, "hyper": {**META_JOB["hyper"], "kernel": kernel}}
    async with running_cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.add_worker(f"w{i}")
        job_id = await cluster.submit(job)
        status = await cluster.wait_job(job_id, 120)
    assert status["status"] == "completed", status
    assert status["version"] == 4
    meta = status["result"]["meta"]
    assert 0.0 <= status["accuracy"] <= 1.0
    assert meta["few_shot"] == status["accuracy"]
    assert meta["uploads"] == meta["sparse_uploads"] == 8  # 2 devices x 4 rounds
    assert set(meta["device_of"]) == {"w0", "w1", "w2"}
    # On the wire: header + sparse records only, shared layers only, ~10% of the entries.
    assert len(streams) == 8
    counted = 0
    for stream in streams:
        kinds = [m.WhichOneof("body") for m in stream]
        assert kinds[0] == "header" and set(kinds[1:]) == {"sparse"}, kinds
        names = {m.sparse.name for m in stream[1:]}
        assert names <= set(SHARED) and not names & {"W2", "b2"}
        sent = sum(m.sparse.count for m in stream[1:])
        assert sent == int(np.ceil(0.10 * sum(int(np.prod(s)) for s in SHARED.values())))
        counted += sum(m.ByteSize() for m in stream)
    assert meta["upload_bytes"] == counted  # measured at the leader, not estimated
    assert 0 < meta["upload_bytes_per_device_round"] < 0.2 * meta["dense_model_bytes"]


async def test_reptile_job_uploads_dense_tensors_and_reports_few_shot_mse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = _spy(monkeypatch)
    job = {
        **META_JOB,
        "dataset": "sine",
        "algorithm": "reptile",
        "rounds": 3,
        "model": {"devices": 4, "held_out": 2, "samples": 10},
        "hyper": {"devices_per_round": 2, "shots": 5, "lr": 0.02},
    }
    async with running_cluster(tmp_path) as cluster:
        for i in range(2):
            await cluster.add_worker(f"w{i}")
        job_id = await cluster.submit(job)
        status = await cluster.wait_job(job_id, 120)
    assert status["status"] == "completed", status
    meta = status["result"]["meta"]
    assert status["accuracy"] is None  # sine is scored by MSE, reported beside
    assert meta["metric"] == "mse" and meta["few_shot"] > 0
    assert meta["uploads"] == 6 and meta["sparse_uploads"] == 0
    for stream in streams:
        assert {m.WhichOneof("body") for m in stream[1:]} == {"chunk"}


# -- bad sparse records -------------------------------------------------------------------


def _env(cluster: Cluster, job: str = "", version: int = 0) -> common_pb2.Envelope:
    return common_pb2.Envelope(
        job_id=job, model_version=version, node_id="n1", term=cluster.coordinator.term
    )


async def _push(
    stub: cluster_pb2_grpc.ClusterStub,
    cluster: Cluster,
    task: cluster_pb2.Task,
    records: list[common_pb2.SparseTensor],
    *,
    declared: int | None = None,
) -> cluster_pb2.PushUpdateReply:
    env = _env(cluster, task.envelope.job_id, task.envelope.model_version)
    header = cluster_pb2.UpdateHeader(
        envelope=env,
        task_id=task.task_id,
        num_samples=len(task.indexes),
        num_tensors=len(records) if declared is None else declared,
        total_bytes=wire_bytes(records),
    )

    async def stream() -> AsyncIterator[cluster_pb2.UpdateChunk]:
        yield cluster_pb2.UpdateChunk(header=header)
        for r in records:
            yield cluster_pb2.UpdateChunk(sparse=r)

    reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(stream(), timeout=10)
    return reply


def _record(name: str, idx: list[int], vals: list[float] | None = None) -> common_pb2.SparseTensor:
    values = np.asarray(vals if vals is not None else [0.01] * len(idx), np.float32)
    return encode_sparse(name, SHARED.get(name, (32, 5)), np.asarray(idx), values)


async def test_bad_sparse_records_are_refused_and_change_nothing(tmp_path: Path) -> None:
    job = {**META_JOB, "hyper": {**META_JOB["hyper"], "devices_per_round": 1}}
    async with running_cluster(tmp_path) as cluster, open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await stub.Join(
            cluster_pb2.JoinRequest(envelope=_env(cluster), role="worker", join_token=TOKEN),
            timeout=10,
        )
        job_id = await cluster.submit(job)
        reply = await stub.GetTask(
            cluster_pb2.GetTaskRequest(envelope=_env(cluster), wait_ms=3000), timeout=10
        )
        task = reply.task
        assert task.algorithm == "tinymetafed" and list(task.indexes) == [0]
        before = cluster.coordinator.model(job_id).params
        duplicate = _record("W0", [3, 7])
        duplicate.index_gaps[1] = 0  # 3, 3: the same entry twice
        outside = _record("b0", [39])
        outside.index_gaps[0] = 40  # b0 holds 40 entries
        overlong = _record("W1", [1, 2])
        overlong.count = 3  # more entries declared than sent
        bad = {
            "duplicate index": [duplicate],
            "index outside the tensor": [outside],
            "overlong count": [overlong],
            "a local layer": [_record("W2", [0])],
            "a wrong shape": [encode_sparse("W0", (64, 41), np.array([0]), np.ones(1, np.float32))],
            "the same tensor twice": [_record("b1", [0]), _record("b1", [1])],
        }
        for why, records in bad.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _push(stub, cluster, task, records)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, why
            status = cluster.status(job_id)
            assert status["version"] == 0, why
            assert status["meta"]["uploads"] == 0, why
            assert status["tasks_in_flight"] == 1, why
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _push(stub, cluster, task, [_record("b0", [1])], declared=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = cluster.coordinator.model(job_id).params
        assert all(np.array_equal(before[n], after[n]) for n in before)
        # The same task with good records is taken, and moves θ by exactly ε · δ (ε = 1).
        good = [_record("W0", [0, 5], [0.5, -0.25]), _record("b1", [31], [0.125])]
        ack = await _push(stub, cluster, task, good)
        assert ack.envelope.model_version == 1
        new = cluster.coordinator.model(job_id).params
        assert set(new) == set(SHARED)
        diff = new["W0"].ravel() - before["W0"].ravel()
        np.testing.assert_allclose(diff[[0, 5]], [0.5, -0.25], rtol=1e-6)
        assert np.count_nonzero(diff) == 2
        assert float(new["b1"][31] - before["b1"][31]) == pytest.approx(0.125)
        assert cluster.status(job_id)["meta"]["sparse_uploads"] == 1
