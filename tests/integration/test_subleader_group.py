"""A sub-leader's group over real gRPC: bad updates from members are refused and change
nothing; a silent member's range goes to another member; the group answers its leader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from eddl.data.datasets import load_dataset
from eddl.leader.servicers.group import GroupServicer
from eddl.leader.subleader import SubLeader, SubLeaderSettings
from eddl.leader.uplink import Uplink
from eddl.net import encode_tensors, open_channel, params_nbytes
from eddl.net.server import start_server
from eddl.net.tensors import array_from_tensor
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.worker.transfer import receive_model
from tests.integration.cluster_support import (
    DIGITS_JOB,
    TOKEN,
    Cluster,
    cluster_stub,
    running_cluster,
    wait_until,
)

SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0, default_task_samples=64, round_deadline=60.0)
CLUSTER = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name


@dataclass
class Group:
    root: Cluster
    sub: SubLeader
    stub: cluster_pb2_grpc.ClusterStub


@contextlib.asynccontextmanager
async def running_group(tmp: Path, dataset_size: int = 1 << 24) -> AsyncIterator[Group]:
    async with running_cluster(tmp, admin_token="admin", heartbeat_interval_s=5.0) as root:
        await root.submit(SLOW_JOB, token="admin")
        async with cluster_stub(root.address) as up:
            settings = SubLeaderSettings(
                "sub-1", TOKEN, dataset_size=dataset_size, heartbeat_s=0.2, upstream_wait_s=0.5
            )
            sub = SubLeader(settings, Uplink(up, "sub-1"))
            servicer = GroupServicer(sub, [])
            server = await start_server(
                "127.0.0.1:0",
                [(cluster_pb2_grpc.add_ClusterServicer_to_server, servicer)],
                [CLUSTER],
            )
            servicer.leaders = [server.address, root.address]
            relay = asyncio.create_task(sub.run())
            try:
                async with open_channel(server.address) as ch:
                    yield Group(root, sub, cluster_pb2_grpc.ClusterStub(ch))
            finally:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
                await server.stop(0.2)


def env(node: str, job: str = "", version: int = 0, term: int = 1) -> common_pb2.Envelope:
    return common_pb2.Envelope(job_id=job, model_version=version, term=term, node_id=node)


async def join(stub: cluster_pb2_grpc.ClusterStub, node: str) -> cluster_pb2.JoinReply:
    reply: cluster_pb2.JoinReply = await stub.Join(
        cluster_pb2.JoinRequest(envelope=env(node), role="worker", join_token=TOKEN), timeout=10
    )
    return reply


async def task_for(stub: cluster_pb2_grpc.ClusterStub, node: str) -> cluster_pb2.Task:
    for _ in range(20):  # bounded: the sub-leader first draws a task from the root
        reply = await stub.GetTask(
            cluster_pb2.GetTaskRequest(envelope=env(node), wait_ms=500), timeout=10
        )
        if reply.WhichOneof("outcome") == "task":
            return reply.task
    raise AssertionError(f"{node} got no task")


def push(
    task: cluster_pb2.Task, node: str, params: dict[str, np.ndarray], **header: object
) -> list[cluster_pb2.UpdateChunk]:
    values: dict[str, object] = {
        "envelope": env(node, task.envelope.job_id, task.envelope.model_version),
        "task_id": task.task_id,
        "num_samples": len(task.indexes),
        "num_tensors": len(params),
        "total_bytes": params_nbytes(params),
    }
    values.update(header)
    out = [cluster_pb2.UpdateChunk(header=cluster_pb2.UpdateHeader(**values))]
    return out + [cluster_pb2.UpdateChunk(chunk=c) for c in encode_tensors(params, 4096)]


async def stream(messages: list[cluster_pb2.UpdateChunk]) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    for m in messages:
        yield m


async def refused(
    stub: cluster_pb2_grpc.ClusterStub, messages: list[cluster_pb2.UpdateChunk]
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PushUpdate(stream(messages), timeout=10)
    return info.value.code().name


def state(sub: SubLeader) -> tuple[object, ...]:
    round_size = None if sub.sink is None else sub.sink.round_size()
    return (sorted(sub.in_flight), round_size, sub.source.left(), sub.source.requeued())


async def test_bad_member_updates_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with running_group(tmp_path) as g:
        reply = await join(g.stub, "m1")
        assert list(reply.leaders)[1] == g.root.address  # the way home when this group dies
        await join(g.stub, "m2")
        task = await task_for(g.stub, "m1")
        model = cluster_pb2.PullModelRequest(
            envelope=env("m1", task.envelope.job_id, task.envelope.model_version)
        )
        _, params = await receive_model(g.stub.PullModel(model, timeout=10), 1 << 24)
        before = state(g.sub)
        n = len(task.indexes)
        assert (
            await refused(g.stub, push(task, "m1", params, num_samples=n + 1)) == "INVALID_ARGUMENT"
        )
        wrong_base = env("m1", task.envelope.job_id, task.envelope.model_version + 1)
        assert (
            await refused(g.stub, push(task, "m1", params, envelope=wrong_base))
            == "INVALID_ARGUMENT"
        )
        assert await refused(g.stub, push(task, "m2", params)) == "NOT_FOUND"  # not m2's task
        assert await refused(g.stub, push(task, "m1", params, task_id="nope")) == "NOT_FOUND"
        stale = env("m1", task.envelope.job_id, task.envelope.model_version, term=7)
        assert (
            await refused(g.stub, push(task, "m1", params, envelope=stale)) == "FAILED_PRECONDITION"
        )
        bad = {k: v[:1] for k, v in params.items()}
        assert await refused(g.stub, push(task, "m1", bad)) == "INVALID_ARGUMENT"
        assert state(g.sub) == before
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await g.stub.Join(
                cluster_pb2.JoinRequest(envelope=env("m3"), role="worker", join_token="wrong"),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # as the root answers
        assert "m3" not in g.sub.members
        ack = await g.stub.PushUpdate(stream(push(task, "m1", params)), timeout=10)
        assert ack.outcome == "round"


async def test_a_silent_members_range_goes_to_another_and_the_group_answers_the_root(
    tmp_path: Path,
) -> None:
    async with running_group(tmp_path) as g:
        await join(g.stub, "m1")
        await join(g.stub, "m2")
        lost = await task_for(g.stub, "m1")

        # m1 goes silent; m2 beats until the sub-leader drops m1 (two missed beats).
        async def m1_gone() -> bool:
            await g.stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=env("m2")), timeout=5)
            return "m1" not in g.sub.members

        await wait_until(m1_gone, 20.0, "m1 to be dropped", step=0.05)
        # m2 now trains every range of the upstream task, m1's among them, and the group answers.
        seen: list[int] = []
        version = g.root.status(lost.envelope.job_id)["version"]
        for _ in range(20):  # bounded: an upstream task holds at most a few ranges
            await g.stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=env("m2")), timeout=5)
            task = await task_for(g.stub, "m2")
            seen += list(task.indexes)
            model = cluster_pb2.PullModelRequest(
                envelope=env("m2", task.envelope.job_id, task.envelope.model_version)
            )
            _, params = await receive_model(g.stub.PullModel(model, timeout=10), 1 << 24)
            await g.stub.PushUpdate(stream(push(task, "m2", params)), timeout=10)
            if set(lost.indexes) <= set(seen) and g.sub.answers >= 1:
                break
        assert set(lost.indexes) <= set(seen)
        await wait_until(lambda: g.sub.answers >= 1, 20.0, "the group's answer")
        await wait_until(
            lambda: g.root.status(lost.envelope.job_id)["version"] > version, 20.0, "a new version"
        )


async def test_an_upstream_task_the_group_cannot_hold_is_reported_failed_to_the_root(
    tmp_path: Path,
) -> None:
    # A sub-leader whose bound on indexes is below the dataset's: it must refuse the task
    # upstream (the root re-queues the samples), not keep it or crash.
    async with running_group(tmp_path, dataset_size=10) as g:
        await join(g.stub, "m1")
        await wait_until(
            lambda: g.root.coordinator.job_status(None)["failed_tasks"] >= 1,
            20.0,
            "the failure report at the root",
        )
        assert g.sub.source.held() == [] and g.sub.in_flight == {}


async def fetch(
    stub: cluster_pb2_grpc.ClusterStub, node: str, job: str, indexes: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    request = cluster_pb2.FetchSamplesRequest(
        envelope=env(node, job), dataset="digits", indexes=indexes
    )
    batches = [b async for b in stub.FetchSamples(request, timeout=10)]
    assert all(b.envelope.node_id == node for b in batches)
    x = np.concatenate([array_from_tensor(b.x) for b in batches])
    y = np.concatenate([array_from_tensor(b.y) for b in batches])
    return x, y


async def test_members_fetch_samples_through_the_group_and_each_crosses_upward_once(
    tmp_path: Path,
) -> None:
    digits = load_dataset("digits")
    async with running_group(tmp_path, dataset_size=len(digits.y_train)) as g:
        await join(g.stub, "m1")
        await join(g.stub, "m2")
        task = await task_for(g.stub, "m1")
        job = task.envelope.job_id
        idx = list(task.indexes)[:40]
        x, y = await fetch(g.stub, "m1", job, idx)
        np.testing.assert_array_equal(x, digits.x_train[idx])
        np.testing.assert_array_equal(y, digits.y_train[idx])
        assert g.sub.samples.fetched == len(set(idx))
        # The second member's rows come from the group: nothing more crosses upward.
        x2, _ = await fetch(g.stub, "m2", job, idx[::-1])
        np.testing.assert_array_equal(x2, digits.x_train[idx[::-1]])
        assert g.sub.samples.fetched == len(set(idx))

        # Bad requests are refused and change nothing.
        held = (g.sub.samples.held, g.sub.samples.fetched, g.sub.samples.served)
        bad = [
            ("m3", job, idx, "NOT_FOUND"),  # not a member
            ("m1", "other-job", idx, "FAILED_PRECONDITION"),
            ("m1", job, [len(digits.y_train)], "INVALID_ARGUMENT"),
            ("m1", job, [], "INVALID_ARGUMENT"),
            ("m1", job, [0] * (g.sub.settings.max_task_samples + 1), "INVALID_ARGUMENT"),
        ]
        for node, job_id, indexes, code in bad:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await fetch(g.stub, node, job_id, indexes)
            assert info.value.code().name == code, (node, job_id, len(indexes))
        assert (g.sub.samples.held, g.sub.samples.fetched, g.sub.samples.served) == held
