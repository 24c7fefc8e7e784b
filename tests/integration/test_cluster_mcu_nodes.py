"""Microcontroller nodes over real gRPC: a gateway joins each device as role "mcu".

The clients here speak the Cluster protocol the way a gateway does for its devices (Join with
an McuProfile, GetTask, Heartbeat without a dynamic profile, Leave), against an in-process
leader on 127.0.0.1:0 training the shipped digits dataset.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.cli.statusview import describe_device, job_placement, status_dict
from eddl.mcu.plan import arena_need, tifed_setup
from eddl.net import open_channel
from eddl.proto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    profile_pb2,
)
from tests.integration.cluster_support import TOKEN, Cluster, running_cluster

# Digits TIFeD 64-32-10 with mini-batches of 25 needs 19,025 arena bytes.
TIFED_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "tifed",
    "model": {"sizes": [64, 32, 10]},
    "hyper": {"batch_size": 25},
    "rounds": 1000,
    "max_epochs": 1000.0,
    "aggregation": "sync",
    "task_seconds": 0.5,
    "round_deadline": 30.0,
    "default_task_samples": 50,
    "min_task_samples": 25,
}
SGD_JOB: dict[str, Any] = {
    **TIFED_JOB,
    "algorithm": "sgd",
    "model": {"sizes": [64, 32, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    "hyper": {"lr": 0.2, "batch_size": 8},
}
BIG = 53_248
SMALL = 16_384


def mcu_profile(arena: int = BIG, board: str = "ram64", **fields: Any) -> profile_pb2.McuProfile:
    values: dict[str, Any] = {
        "gateway_id": "pi1",
        "device": "socket://127.0.0.1:5555",
        "board": board,
        "firmware_version": "0.3.0",
        "ram_bytes": 65_536,
        "flash_bytes": 262_144,
        "arena_bytes": arena,
        "max_payload": 1024,
        "algorithms": ["tifed", "tifed-single"],
        "tick_hz": 1_000_000,
        "max_layers": 4,
        "benchmark_model": "tifed 64-32-10",
        "max_buffer": 250,
    }
    values.update(fields)
    return profile_pb2.McuProfile(**values)


def env(cluster: Cluster, node: str, job: str = "") -> common_pb2.Envelope:
    return common_pb2.Envelope(node_id=node, job_id=job, term=cluster.coordinator.term)


def join_request(
    cluster: Cluster,
    node: str,
    mcu: profile_pb2.McuProfile | None,
    *,
    role: str = "mcu",
    sps: float = 0.0,
) -> cluster_pb2.JoinRequest:
    profile = profile_pb2.Profile(
        static=profile_pb2.StaticProfile(node_id=node, role=role, total_memory_bytes=65_536)
    )
    if mcu is not None:
        profile.mcu.CopyFrom(mcu)
    return cluster_pb2.JoinRequest(
        envelope=common_pb2.Envelope(node_id=node),
        role=role,
        join_token=TOKEN,
        info=cluster_pb2.NodeInfo(hostname="pi1", benchmark_samples_per_second=sps),
        profile=profile,
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path) as c:
        yield c


@pytest.fixture
async def stub(cluster: Cluster) -> AsyncIterator[cluster_pb2_grpc.ClusterStub]:
    async with open_channel(cluster.address) as ch:
        yield cluster_pb2_grpc.ClusterStub(ch)


async def join_mcu(
    stub: cluster_pb2_grpc.ClusterStub,
    cluster: Cluster,
    node: str,
    arena: int = BIG,
    sps: float = 0.0,
    **fields: Any,
) -> None:
    await stub.Join(join_request(cluster, node, mcu_profile(arena, **fields), sps=sps), timeout=10)


async def get_task(
    stub: cluster_pb2_grpc.ClusterStub, cluster: Cluster, node: str, wait_ms: int = 100
) -> cluster_pb2.GetTaskReply:
    reply: cluster_pb2.GetTaskReply = await stub.GetTask(
        cluster_pb2.GetTaskRequest(envelope=env(cluster, node), wait_ms=wait_ms), timeout=10
    )
    return reply


def cluster_profiles(cluster: Cluster) -> list[str]:
    assert cluster.leader.service is not None
    return cluster.leader.service.reports.nodes()


async def refused(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_fitting_tifed_job_gives_mcu_nodes_tasks_and_status_shows_them(
    cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub
) -> None:
    await join_mcu(stub, cluster, "pi1.mcu0", BIG, board="ram64")
    await join_mcu(stub, cluster, "pi1.mcu1", 131_072, board="ram160", ram_bytes=163_840)
    job_id = await cluster.submit(TIFED_JOB)
    for node in ("pi1.mcu0", "pi1.mcu1"):
        reply = await get_task(stub, cluster, node, wait_ms=2000)
        assert reply.HasField("task"), reply
        assert reply.task.algorithm == "tifed" and reply.task.layer == -1
        assert json.loads(reply.task.model_json)["sizes"] == [64, 32, 10]
        # The gateway's beats carry the device's load, never a psutil dynamic profile.
        beat = await stub.Heartbeat(
            cluster_pb2.HeartbeatRequest(
                envelope=env(cluster, node), load=cluster_pb2.NodeLoad(samples_per_second=40.0)
            ),
            timeout=10,
        )
        assert beat.known and beat.envelope.job_id == job_id
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        nodes = await admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
        status = await admin.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10)
    info = status_dict(status, nodes)
    rows = {n["node_id"]: n for n in info["nodes"]}
    assert rows["pi1.mcu0"]["role"] == "mcu" and rows["pi1.mcu0"]["current_task"]
    assert rows["pi1.mcu1"]["mcu"]["arena_bytes"] == 131_072
    assert describe_device(rows["pi1.mcu0"]) == (
        "ram64, arena 53,248 B, tifed/tifed-single via pi1"
    )
    assert rows["pi1.mcu0"]["profile"]["profile"]["mcu"]["board"] == "ram64"


@pytest.mark.parametrize(
    ("job", "arena", "why"),
    [
        (SGD_JOB, BIG, "runs tifed, tifed-single, not sgd"),
        (TIFED_JOB, SMALL, "needs 19,025 arena bytes; the device has 16,384"),
    ],
    ids=["sgd", "too-big"],
)
async def test_job_an_mcu_cannot_run_never_reaches_it_while_a_worker_gets_one(
    cluster: Cluster,
    stub: cluster_pb2_grpc.ClusterStub,
    job: dict[str, Any],
    arena: int,
    why: str,
) -> None:
    await join_mcu(stub, cluster, "pi1.mcu0", arena)
    await stub.Join(join_request(cluster, "w1", None, role="worker"), timeout=10)
    job_id = await cluster.submit(job)
    for _ in range(3):
        reply = await get_task(stub, cluster, "pi1.mcu0")
        assert not reply.HasField("task") and reply.retry_after_ms > 0 and not reply.done
    worker = await get_task(stub, cluster, "w1", wait_ms=2000)
    assert worker.HasField("task") and worker.task.algorithm == job["algorithm"]
    status = cluster.status(job_id)
    assert why in status["unable_nodes"]["pi1.mcu0"]
    assert status["tasks_in_flight"] == 1
    (line,) = job_placement(status)
    assert line.startswith("cannot run this job: pi1.mcu0: ") and line.endswith(why)


async def test_submit_is_refused_when_only_unfit_mcus_are_joined(
    cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub
) -> None:
    await join_mcu(stub, cluster, "pi1.mcu0", SMALL, board="ram16")
    await join_mcu(stub, cluster, "pi1.mcu1", BIG, algorithms=["tifed"])
    big = {**TIFED_JOB, "model": {"sizes": [64, 128, 10]}}
    need = arena_need(tifed_setup([64, 128, 10], 25, 25))
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        code, message = await refused(
            admin.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=json.dumps(big)), timeout=30)
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        why = f"64-128-10 with mini-batches of 25 needs {need:,} arena bytes; the device has"
        assert message == (
            f"no node can run this job (tifed): pi1.mcu0 (mcu ram16): {why} 16,384; "
            f"pi1.mcu1 (mcu ram64): {why} 53,248"
        )
        single = {**TIFED_JOB, "algorithm": "tifed-single"}
        code, message = await refused(
            admin.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=json.dumps(single)), timeout=30)
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "pi1.mcu1 (mcu ram64): runs tifed, not tifed-single" in message
    assert cluster.coordinator.store.jobs() == []
    assert cluster.coordinator.job_queue.active is None


@pytest.mark.parametrize(
    ("speeds", "groups"),
    [
        ([40.0, 10.0], {"0": ["n0"], "1": ["n1"]}),
        ([40.0, 10.0, 20.0], {"0": ["n0"], "1": ["n1", "n2"]}),
        ([40.0, 30.0, 20.0, 10.0], {"0": ["n0", "n3"], "1": ["n1", "n2"]}),
    ],
    ids=["2", "3", "4"],
)
async def test_single_layer_assignment_balances_groups_by_speed(
    cluster: Cluster,
    stub: cluster_pb2_grpc.ClusterStub,
    speeds: list[float],
    groups: dict[str, list[str]],
) -> None:
    nodes = [f"n{i}" for i in range(len(speeds))]
    for node, sps in zip(nodes, speeds, strict=True):
        await join_mcu(stub, cluster, node, BIG, sps=sps)
    job_id = await cluster.submit({**TIFED_JOB, "algorithm": "tifed-single"})
    for node in nodes:
        reply = await get_task(stub, cluster, node, wait_ms=2000)
        assert reply.HasField("task") and reply.task.algorithm == "tifed-single"
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        status = await admin.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10)
    detail = json.loads(status.detail_json)
    assert detail["layer_groups"] == groups
    shown = "; ".join(f"{layer}: {', '.join(members)}" for layer, members in groups.items())
    assert job_placement(detail) == [f"layer groups  {shown}"]
    assigned = [e for e in cluster.coordinator.events(job_id) if e.kind.value == "layer_groups"]
    assert [e.data["node_id"] for e in assigned] == nodes


@pytest.mark.parametrize(
    ("request_of", "match"),
    [
        (lambda c: join_request(c, "pi1.mcu0", None), "role mcu needs an McuProfile"),
        (lambda c: join_request(c, "pi1.mcu0", mcu_profile(arena=0)), "arena_bytes must be > 0"),
        (
            lambda c: join_request(c, "pi1.mcu0", mcu_profile(algorithms=["tifed", "backprop9"])),
            "['backprop9'] unknown",
        ),
        (lambda c: join_request(c, "pi1.mcu0", mcu_profile(max_layers=0)), "max_layers"),
        (lambda c: join_request(c, "pi1.mcu0", mcu_profile(board="")), "board is required"),
        (
            lambda c: join_request(c, "w1", mcu_profile(), role="worker"),
            "only for role mcu, not worker",
        ),
    ],
    ids=["no-profile", "no-arena", "unknown-algorithm", "no-layers", "no-board", "on-worker"],
)
async def test_bad_mcu_profile_is_refused_and_changes_nothing(
    cluster: Cluster,
    stub: cluster_pb2_grpc.ClusterStub,
    request_of: Any,
    match: str,
) -> None:
    await join_mcu(stub, cluster, "pi1.mcu9", BIG)
    before = [n.to_dict() for n in cluster.coordinator.membership.nodes()]
    code, message = await refused(stub.Join(request_of(cluster), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and match in message
    assert [n.to_dict() for n in cluster.coordinator.membership.nodes()] == before
    assert set(cluster_profiles(cluster)) == {"pi1.mcu9"}


async def test_mcu_leave_requeues_its_task_and_a_rejoin_gets_work(
    cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub
) -> None:
    await join_mcu(stub, cluster, "pi1.mcu0", BIG)
    job_id = await cluster.submit(TIFED_JOB)
    first = await get_task(stub, cluster, "pi1.mcu0", wait_ms=2000)
    assert first.HasField("task")
    # The gateway lost the device: it says so for that node.
    left = await stub.Leave(
        cluster_pb2.LeaveRequest(envelope=env(cluster, "pi1.mcu0"), reason="device lost"),
        timeout=10,
    )
    assert left.requeued_tasks == 1
    assert "pi1.mcu0" not in cluster.coordinator.membership
    said = [e.message for e in cluster.coordinator.events(job_id) if e.kind.value == "node_left"]
    assert said == ["pi1.mcu0 left (device lost)"]
    async with open_channel(cluster.address) as ch:
        nodes = await admin_pb2_grpc.AdminStub(ch).ListNodes(
            admin_pb2.ListNodesRequest(), timeout=10
        )
    assert [n.state for n in nodes.nodes] == ["gone (device lost)"]
    assert cluster.status(job_id)["requeued_ranges"] == 1
    # The device is back: its gateway joins it again and it gets the re-queued data first.
    await join_mcu(stub, cluster, "pi1.mcu0", BIG)
    again = await get_task(stub, cluster, "pi1.mcu0", wait_ms=2000)
    assert again.HasField("task") and again.task.task_id != first.task.task_id
    assert list(again.task.indexes) == list(first.task.indexes)[: len(again.task.indexes)]
    assert cluster.status(job_id)["requeued_ranges"] == 0
