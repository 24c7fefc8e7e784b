"""Every bad input over real gRPC gets the right status code and changes no state."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from eddl.net import REASON_KEY, encode_tensors, open_channel, params_nbytes
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.worker.transfer import inline_model
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, Cluster, running_cluster

SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0)


def _env(
    cluster: Cluster, node: str = "n1", job: str = "", version: int = 0, term: int | None = None
) -> common_pb2.Envelope:
    return common_pb2.Envelope(
        job_id=job,
        model_version=version,
        node_id=node,
        term=cluster.coordinator.term if term is None else term,
    )


async def _join(stub: cluster_pb2_grpc.ClusterStub, cluster: Cluster, node: str = "n1") -> None:
    await stub.Join(
        cluster_pb2.JoinRequest(envelope=_env(cluster, node), role="worker", join_token=TOKEN),
        timeout=10,
    )


async def _code(call: Any) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    exc = info.value
    reason = dict(exc.trailing_metadata() or ()).get(REASON_KEY, "")
    return exc.code(), exc.details() or "", str(reason)


async def _stream(
    messages: list[cluster_pb2.UpdateChunk],
) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    for m in messages:
        yield m


def _snapshot(cluster: Cluster, job_id: str) -> tuple[int, dict[str, bytes], int]:
    status = cluster.status(job_id)
    params = cluster.coordinator.model(job_id).params
    return (
        status["version"],
        {k: v.tobytes() for k, v in params.items()},
        len(cluster.coordinator.membership),
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running_cluster(tmp_path, admin_token="admin") as c:
        yield c


async def test_health_and_reflection_are_served(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "eddl.v1.Cluster", "eddl.v1.Admin"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = set()
        async for reply in refl.ServerReflectionInfo(ask(), timeout=5):
            names |= {s.name for s in reply.list_services_response.service}
        assert {"eddl.v1.Cluster", "eddl.v1.Admin", "grpc.health.v1.Health"} <= names


async def test_wrong_or_missing_join_token_is_unauthenticated(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        for token in ("wrong", ""):
            code, _, _ = await _code(
                stub.Join(
                    cluster_pb2.JoinRequest(
                        envelope=_env(cluster), role="worker", join_token=token
                    ),
                    timeout=5,
                )
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED
        assert len(cluster.coordinator.membership) == 0


@pytest.mark.parametrize("node", ["", "has space", "x" * 300])
async def test_malformed_node_id_is_invalid(cluster: Cluster, node: str) -> None:
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        code, _, _ = await _code(
            stub.Join(
                cluster_pb2.JoinRequest(
                    envelope=_env(cluster, node), role="worker", join_token=TOKEN
                ),
                timeout=5,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert len(cluster.coordinator.membership) == 0


async def test_unknown_role_and_nan_benchmark_are_invalid(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        code, _, _ = await _code(
            stub.Join(
                cluster_pb2.JoinRequest(envelope=_env(cluster), role="emperor", join_token=TOKEN),
                timeout=5,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _, _ = await _code(
            stub.Join(
                cluster_pb2.JoinRequest(
                    envelope=_env(cluster),
                    role="worker",
                    join_token=TOKEN,
                    info=cluster_pb2.NodeInfo(benchmark_samples_per_second=float("nan")),
                ),
                timeout=5,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert len(cluster.coordinator.membership) == 0


async def test_unknown_node_and_stale_term_are_told_to_rejoin(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        beat = await stub.Heartbeat(
            cluster_pb2.HeartbeatRequest(envelope=_env(cluster, "ghost")), timeout=5
        )
        assert not beat.known
        code, _, reason = await _code(
            stub.GetTask(cluster_pb2.GetTaskRequest(envelope=_env(cluster, "ghost")), timeout=5)
        )
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "unknown-node")
        await _join(stub, cluster)
        code, detail, reason = await _code(
            stub.GetTask(
                cluster_pb2.GetTaskRequest(
                    envelope=_env(cluster, term=cluster.coordinator.term + 5)
                ),
                timeout=5,
            )
        )
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale-term")
        assert "term" in detail


async def _task(cluster: Cluster, stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.Task:
    reply = await stub.GetTask(
        cluster_pb2.GetTaskRequest(envelope=_env(cluster), wait_ms=3000), timeout=10
    )
    assert reply.WhichOneof("outcome") == "task", reply
    return reply.task


def _update(
    cluster: Cluster, task: cluster_pb2.Task, params: dict[str, np.ndarray], **header: Any
) -> list[cluster_pb2.UpdateChunk]:
    values: dict[str, Any] = {
        "envelope": _env(cluster, job=task.envelope.job_id, version=task.envelope.model_version),
        "task_id": task.task_id,
        "num_samples": len(task.indexes),
        "num_tensors": len(params),
        "total_bytes": params_nbytes(params),
    }
    values.update(header)
    out = [cluster_pb2.UpdateChunk(header=cluster_pb2.UpdateHeader(**values))]
    out += [cluster_pb2.UpdateChunk(chunk=c) for c in encode_tensors(params, 4096)]
    return out


async def test_bad_updates_are_refused_and_change_nothing(cluster: Cluster) -> None:
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await _join(stub, cluster)
        task = await _task(cluster, stub)
        good = {k: v.copy() for k, v in cluster.coordinator.model(job_id).params.items()}
        before = _snapshot(cluster, job_id)
        wrong_shape = {**good, "W0": np.zeros((3, 3), np.float32)}
        wrong_dtype = {**good, "W0": good["W0"].astype(np.float64)}
        missing = {k: v for k, v in good.items() if k != "b0"}
        truncated = _update(cluster, task, good)[:-1]
        cases: list[tuple[str, list[cluster_pb2.UpdateChunk], grpc.StatusCode]] = [
            (
                "nan overhead",
                _update(
                    cluster, task, good, stats=cluster_pb2.TaskStats(overhead_seconds=float("nan"))
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                "negative overhead",
                _update(cluster, task, good, stats=cluster_pb2.TaskStats(overhead_seconds=-1.0)),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            ("shape", _update(cluster, task, wrong_shape), grpc.StatusCode.INVALID_ARGUMENT),
            ("dtype", _update(cluster, task, wrong_dtype), grpc.StatusCode.INVALID_ARGUMENT),
            ("missing", _update(cluster, task, missing), grpc.StatusCode.INVALID_ARGUMENT),
            ("truncated", truncated, grpc.StatusCode.INVALID_ARGUMENT),
            ("no header", _update(cluster, task, good)[1:], grpc.StatusCode.INVALID_ARGUMENT),
            (
                "oversize",
                _update(cluster, task, good, total_bytes=2**40),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ),
            (
                "unknown job",
                _update(
                    cluster,
                    task,
                    good,
                    envelope=_env(cluster, job="nope", version=task.envelope.model_version),
                ),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                "stale term",
                _update(
                    cluster,
                    task,
                    good,
                    envelope=_env(cluster, job=job_id, term=cluster.coordinator.term + 1),
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
            ),
            (
                "unknown task",
                _update(cluster, task, good, task_id="job:nope"),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                "wrong version",
                _update(
                    cluster,
                    task,
                    good,
                    envelope=_env(cluster, job=job_id, version=task.envelope.model_version + 7),
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                "sample count",
                _update(cluster, task, good, num_samples=len(task.indexes) + 1),
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
        ]
        # (A NaN update is refused too, but counted against the node and its data re-queued:
        # tests/integration/test_update_sanity.py.)
        for name, messages, want in cases:
            code, detail, _ = await _code(stub.PushUpdate(_stream(messages), timeout=10))
            assert code == want, (name, code, detail)
            assert detail, name
            assert _snapshot(cluster, job_id) == before, name
        # The same task's good update is still accepted afterwards, and only once: sent
        # again, it is acknowledged as a duplicate and changes nothing.
        ok = await stub.PushUpdate(_stream(_update(cluster, task, good)), timeout=10)
        assert ok.outcome and ok.outcome != "duplicate"
        after = _snapshot(cluster, job_id)
        trained = cluster.status(job_id)["samples_trained"]
        again = await stub.PushUpdate(_stream(_update(cluster, task, good)), timeout=10)
        assert again.outcome == "duplicate"
        assert _snapshot(cluster, job_id) == after
        assert cluster.status(job_id)["samples_trained"] == trained


@contextlib.asynccontextmanager
async def _member_of_a_slow_job(
    cluster: Cluster,
) -> AsyncIterator[tuple[str, cluster_pb2_grpc.ClusterStub]]:
    """A slow job's id and the Cluster stub of node n1, joined."""
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await _join(stub, cluster)
        yield job_id, stub


async def test_a_task_asked_for_during_its_push_comes_once_the_update_is_taken(
    cluster: Cluster,
) -> None:
    async with _member_of_a_slow_job(cluster) as (job_id, stub):
        task = await _task(cluster, stub)
        before = _snapshot(cluster, job_id)
        code, detail, _ = await _code(
            stub.GetTask(
                cluster_pb2.GetTaskRequest(
                    envelope=_env(cluster), wait_ms=100, after_task_id="x" * 257
                ),
                timeout=10,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "after_task_id" in detail
        assert _snapshot(cluster, job_id) == before
        # Asked ahead and not answered in its budget: told to retry, never the task held.
        waited = await stub.GetTask(
            cluster_pb2.GetTaskRequest(
                envelope=_env(cluster), wait_ms=200, after_task_id=task.task_id
            ),
            timeout=10,
        )
        assert waited.WhichOneof("outcome") == "retry_after_ms"
        ahead = asyncio.ensure_future(
            stub.GetTask(
                cluster_pb2.GetTaskRequest(
                    envelope=_env(cluster), wait_ms=10_000, after_task_id=task.task_id
                ),
                timeout=20,
            )
        )
        good = {k: v.copy() for k, v in cluster.coordinator.model(job_id).params.items()}
        ok = await stub.PushUpdate(_stream(_update(cluster, task, good)), timeout=10)
        assert ok.outcome == "aggregated"  # one worker: its update closes the round
        nxt = await asyncio.wait_for(ahead, 20)
        assert nxt.WhichOneof("outcome") == "task" and nxt.task.task_id != task.task_id
        assert nxt.task.envelope.model_version == ok.envelope.model_version


async def test_a_task_reply_carries_its_model_inline_when_asked_and_not_held(
    cluster: Cluster,
) -> None:
    async with _member_of_a_slow_job(cluster) as (job_id, stub):

        async def ask(**fields: Any) -> cluster_pb2.GetTaskReply:
            request = cluster_pb2.GetTaskRequest(envelope=_env(cluster), wait_ms=3000, **fields)
            reply: cluster_pb2.GetTaskReply = await stub.GetTask(request, timeout=10)
            assert reply.WhichOneof("outcome") == "task", reply
            return reply

        plain = await ask()  # not asked for: no model (the node pulls)
        assert not plain.HasField("model_header") and not plain.model_chunks
        version = plain.task.envelope.model_version
        model = cluster.coordinator.model(job_id, version).params
        size = params_nbytes(model)
        got = inline_model(await ask(inline_model_bytes=1 << 30), max_bytes=size)
        assert got is not None and got[0] == version
        assert {k: v.tobytes() for k, v in got[1].items()} == {
            k: v.tobytes() for k, v in model.items()
        }
        assert not (await ask(inline_model_bytes=size - 1)).HasField("model_header")
        held = await ask(inline_model_bytes=size, held_job_id=job_id, held_version=version)
        assert not held.HasField("model_header") and held.task.task_id == plain.task.task_id


async def test_single_message_over_the_limit_is_resource_exhausted(cluster: Cluster) -> None:
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await _join(stub, cluster)
        task = await _task(cluster, stub)
        before = _snapshot(cluster, job_id)
        big = cluster_pb2.TensorChunk(
            index=0,
            name="W0",
            dtype="uint8",
            shape=[5 << 20],
            total_bytes=5 << 20,
            data=b"\0" * (5 << 20),
        )
        messages = _update(cluster, task, {"W0": np.zeros(5 << 20, np.uint8)})[:1]
        messages.append(cluster_pb2.UpdateChunk(chunk=big))
        code, _, _ = await _code(stub.PushUpdate(_stream(messages), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _snapshot(cluster, job_id) == before


async def test_pull_and_fetch_refuse_bad_requests(cluster: Cluster) -> None:
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await _join(stub, cluster)

        async def drain(call: Any) -> None:
            async for _ in call:
                pass

        code, _, _ = await _code(
            drain(
                stub.PullModel(
                    cluster_pb2.PullModelRequest(envelope=_env(cluster, job="nope")), timeout=5
                )
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND
        code, _, _ = await _code(
            drain(
                stub.PullModel(
                    cluster_pb2.PullModelRequest(
                        envelope=_env(cluster, job=job_id), max_chunk_bytes=10
                    ),
                    timeout=5,
                )
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        for indexes, dataset in (
            ([10**6], "digits"),
            ([], "digits"),
            ([1], "mnist-10k"),
            (list(range(70000)), "digits"),
        ):
            code, _, _ = await _code(
                drain(
                    stub.FetchSamples(
                        cluster_pb2.FetchSamplesRequest(
                            envelope=_env(cluster, job=job_id), dataset=dataset, indexes=indexes
                        ),
                        timeout=5,
                    )
                )
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (indexes[:3], dataset)
        got = [
            b
            async for b in stub.FetchSamples(
                cluster_pb2.FetchSamplesRequest(
                    envelope=_env(cluster, job=job_id), dataset="digits", indexes=[5, 1, 5]
                ),
                timeout=5,
            )
        ]
        assert list(got[0].indexes) == [5, 1, 5]
        assert list(got[0].x.shape) == [3, 64]


async def test_admin_refuses_bad_jobs_tokens_and_unknown_ids(cluster: Cluster) -> None:
    async with open_channel(cluster.address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        cases = [
            ("{not json", "admin", grpc.StatusCode.INVALID_ARGUMENT),
            ("[1, 2]", "admin", grpc.StatusCode.INVALID_ARGUMENT),
            (
                json.dumps({**DIGITS_JOB, "colour": "red"}),
                "admin",
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (
                json.dumps({**DIGITS_JOB, "algorithm": "magic"}),
                "admin",
                grpc.StatusCode.INVALID_ARGUMENT,
            ),
            (json.dumps(DIGITS_JOB), "wrong", grpc.StatusCode.UNAUTHENTICATED),
        ]
        for spec, token, want in cases:
            code, detail, _ = await _code(
                admin.SubmitJob(
                    admin_pb2.SubmitJobRequest(spec_json=spec, admin_token=token), timeout=30
                )
            )
            assert code == want, (spec[:40], detail)
        assert cluster.coordinator.store.jobs() == []
        code, _, _ = await _code(
            admin.JobStatus(admin_pb2.JobStatusRequest(job_id="nope"), timeout=5)
        )
        assert code == grpc.StatusCode.NOT_FOUND
        code, _, _ = await _code(
            admin.CancelJob(
                admin_pb2.CancelJobRequest(job_id="nope", admin_token="admin"), timeout=5
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND


async def test_an_update_stream_the_client_cancels_is_not_an_internal_error(
    cluster: Cluster,
) -> None:
    """A worker that gives up half-way through its upload (stopped, or its deadline passed)
    changes nothing, and the leader does not report it as an unexpected error."""
    job_id = await cluster.submit(SLOW_JOB, token="admin")
    async with open_channel(cluster.address) as ch:
        stub = cluster_pb2_grpc.ClusterStub(ch)
        await _join(stub, cluster)
        task = await _task(cluster, stub)
        good = {k: v.copy() for k, v in cluster.coordinator.model(job_id).params.items()}
        before = _snapshot(cluster, job_id)
        messages = _update(cluster, task, good)
        sent = asyncio.Event()

        async def half() -> AsyncIterator[cluster_pb2.UpdateChunk]:
            for message in messages[: len(messages) // 2]:
                yield message
            sent.set()
            await asyncio.sleep(30)  # never finishes: the client cancels first

        with capture_logs() as logs:
            call = stub.PushUpdate(half(), timeout=30)
            await asyncio.wait_for(sent.wait(), 10)
            await asyncio.sleep(0.3)  # the leader has read what was sent
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.sleep(0.5)  # the leader's side of the cancellation runs
        assert not [e for e in logs if e.get("log_level") == "error"], logs
        assert any(e["event"] == "call cancelled by the client" for e in logs), logs
        # The model is untouched (this client sends no heartbeats: its membership may lapse).
        assert _snapshot(cluster, job_id)[:2] == before[:2]
