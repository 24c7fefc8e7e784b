"""A worker's update re-sent to a new root after a failover, over real gRPC on a real etcd.

Two candidates; the root hands out two tasks and takes one update (a version, whose checkpoint
holds the other task in flight), replicates it, and stops. The new root takes the in-flight
task's update when it is re-sent (its range is not handed out again), acknowledges a re-sent
update it counted already as a duplicate (the model and the samples trained do not change),
and refuses another node's claim to a task and a re-send that fails its checks (nothing
changes: the right re-send is taken afterwards).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from eddl.leader.server import LeaderDaemon
from eddl.net import encode_tensors, open_channel, params_nbytes
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.etcd_procs import EtcdMember, free_port
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, ha_candidate, wait_until

pytestmark = pytest.mark.slow

JOB = {**DIGITS_JOB, "aggregation": "async", "async_params": {"buffer_size": 1},
       "target_accuracy": 1.0, "max_epochs": 50.0}  # fmt: skip


class Node:
    """One worker speaking the cluster protocol by hand to whichever root it is given."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.term = 0

    def env(self, job: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=job, model_version=version, node_id=self.node_id, term=self.term
        )

    async def join(self, stub: cluster_pb2_grpc.ClusterStub) -> None:
        request = cluster_pb2.JoinRequest(envelope=self.env(), role="worker", join_token=TOKEN)
        reply = await stub.Join(request, timeout=20)
        self.term = reply.envelope.term

    async def task(self, stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.Task:
        request = cluster_pb2.GetTaskRequest(envelope=self.env(), wait_ms=3000)
        reply = await stub.GetTask(request, timeout=20)
        assert reply.WhichOneof("outcome") == "task", reply
        return reply.task

    async def push(
        self,
        stub: cluster_pb2_grpc.ClusterStub,
        task: cluster_pb2.Task,
        params: dict[str, Any],
        extra_samples: int = 0,
    ) -> cluster_pb2.PushUpdateReply:
        header = cluster_pb2.UpdateHeader(
            envelope=self.env(task.envelope.job_id, task.envelope.model_version),
            task_id=task.task_id,
            num_samples=len(task.indexes) + extra_samples,
            num_tensors=len(params),
            total_bytes=params_nbytes(params),
        )

        async def stream() -> AsyncIterator[cluster_pb2.UpdateChunk]:
            yield cluster_pb2.UpdateChunk(header=header)
            for chunk in encode_tensors(params, 4096):
                yield cluster_pb2.UpdateChunk(chunk=chunk)

        reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(stream(), timeout=30)
        return reply


def job_of(daemon: LeaderDaemon, job_id: str) -> dict[str, Any]:
    assert daemon.coordinator is not None
    return daemon.coordinator.job_status(job_id)


def params_of(daemon: LeaderDaemon, job_id: str) -> dict[str, bytes]:
    assert daemon.coordinator is not None
    return {k: v.tobytes() for k, v in daemon.coordinator.model(job_id).params.items()}


async def test_a_new_root_takes_a_re_sent_update_once_and_acknowledges_a_counted_one(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    n1, n2 = Node("n1"), Node("n2")
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(ha_candidate(tmp_path, etcd, "a", free_port(), "off"))
        assert a.leadership is not None and a.ha is not None
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        b = await stack.enter_async_context(ha_candidate(tmp_path, etcd, "b", free_port(), "off"))
        assert b.leadership is not None
        await wait_until(lambda: len(a.ha.status()["standbys"]) == 1, 20, "a sees b")  # type: ignore[union-attr]
        async with open_channel(a.config.advertise) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            reply = await admin.SubmitJob(
                admin_pb2.SubmitJobRequest(spec_json=json.dumps(JOB)), timeout=60
            )
            job_id = str(reply.envelope.job_id)
            stub = cluster_pb2_grpc.ClusterStub(channel)
            await n1.join(stub)
            await n2.join(stub)
            t1, t2 = await n1.task(stub), await n2.task(stub)
            base = a.coordinator.model(job_id).params  # type: ignore[union-attr]
            p1 = {k: v + np.float32(0.01) for k, v in base.items()}
            p2 = {k: v - np.float32(0.01) for k, v in base.items()}
            first = await n1.push(stub, t1, p1)
            assert first.outcome == "aggregated" and first.envelope.model_version == 1
            assert a.ha.status()["degraded"] is False  # version 1 is on b
        trained_on_a = job_of(a, job_id)["samples_trained"]
        assert trained_on_a == len(t1.indexes)
        await a.stop(0.2)  # the root goes; b takes over in a higher term

        await wait_until(b.leadership.is_root, 30, "b acting as root")
        async with open_channel(b.config.advertise) as channel:
            stub = cluster_pb2_grpc.ClusterStub(channel)
            await n1.join(stub)
            await n2.join(stub)
            assert n2.term > t2.envelope.term
            # n1's update was counted in version 1: sent again, it is a duplicate.
            before = params_of(b, job_id)
            again = await n1.push(stub, t1, p1)
            assert again.outcome == "duplicate" and again.envelope.model_version == 1
            assert params_of(b, job_id) == before
            assert job_of(b, job_id)["samples_trained"] == trained_on_a
            # Another node cannot claim n2's task.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await n1.push(stub, t2, p2)
            assert "not handed to node 'n1'" in (info.value.details() or "")
            # A bad re-send of n2's task is refused and changes nothing.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await n2.push(stub, t2, p2, extra_samples=1)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert job_of(b, job_id)["samples_trained"] == trained_on_a
            # n2's task was in flight in version 1's checkpoint: its re-sent update counts.
            taken = await n2.push(stub, t2, p2)
            assert taken.outcome == "aggregated" and taken.envelope.model_version == 2
            status = job_of(b, job_id)
            assert status["samples_trained"] == len(t1.indexes) + len(t2.indexes)
            twice = await n2.push(stub, t2, p2)
            assert twice.outcome == "duplicate" and twice.envelope.model_version == 2
            assert job_of(b, job_id)["samples_trained"] == status["samples_trained"]
            # Its range is not handed out again: n1's next task starts after both.
            fresh = await n1.task(stub)
            done = set(t1.indexes) | set(t2.indexes)
            assert not done & set(fresh.indexes)
