"""Membership, scheduling and every aggregation mode through real gRPC, in one process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eddl.net import Reassembler, encode_tensors, open_channel, params_nbytes
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, running_cluster, wait_until


def _without_target(**changes: Any) -> dict[str, Any]:
    job = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
    job.update(changes)
    return job


def _kinds(cluster: Any, job_id: str) -> list[str]:
    return [e.kind.value for e in cluster.coordinator.events(job_id)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aggregation", "rule"), [("sync", "fedbuff"), ("async", "fedbuff"), ("async", "fedasync")]
)
async def test_each_aggregation_mode_trains_digits(
    tmp_path: Path, aggregation: str, rule: str
) -> None:
    async with running_cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.add_worker(f"w{i}")
        job_id = await cluster.submit(
            {**DIGITS_JOB, "aggregation": aggregation, "async_rule": rule}
        )
        status = await cluster.wait_job(job_id, 90)
        assert status["status"] == "completed", status
        assert status["accuracy"] >= 0.9
        assert status["mode"] == aggregation
        described = str(status["aggregation"]["rule"]).lower()
        assert (rule if aggregation == "async" else "fedavg") in described


@pytest.mark.slow
async def test_auto_switches_to_async_under_churn_and_says_why(tmp_path: Path) -> None:
    policy = {"window_s": 30.0, "churn_high": 2, "churn_low": 0, "min_dwell_s": 0.1}
    job = _without_target(aggregation="auto", rounds=100000, max_epochs=100000.0, policy=policy)
    async with running_cluster(tmp_path) as cluster:
        await cluster.add_worker("steady", throttle=3)
        job_id = await cluster.submit(job)
        assert cluster.status(job_id)["mode"] == "sync"
        for i in range(3):  # churn: workers come and crash (each one stalls a round)
            await cluster.add_worker(f"c{i}")
            await cluster.kill_worker(f"c{i}")
        await wait_until(lambda: cluster.status(job_id)["mode"] == "async", 20, "switch")
        switch = [
            e for e in cluster.coordinator.events(job_id) if e.kind.value == "policy_switched"
        ]
        # Each crash stalled a round until the worker was declared dead: measured as idle.
        assert switch and "sync barrier" in switch[0].message
        assert "expired without leaving" in switch[0].message


@pytest.mark.slow
async def test_auto_takes_no_evidence_from_probes_joins_leaves_or_a_count_of_expiries(
    tmp_path: Path,
) -> None:
    # A high idle bar (and progress-ratio bar) keeps the mode on churn alone; a long window
    # keeps every observation.
    policy = {
        "window_s": 120.0,
        "min_tasks": 4,
        "idle_high": 0.95,
        "idle_low": 0.5,
        "rate_high": 100.0,
    }
    job = _without_target(aggregation="auto", rounds=100000, max_epochs=100000.0, policy=policy)
    async with running_cluster(tmp_path) as cluster:
        await cluster.add_worker("a")
        job_id = await cluster.submit(job)
        for name in ("b", "c", "d"):
            await cluster.add_worker(name)  # joins: churn, but nothing sync pays more for
        run = cluster.coordinator.job_queue.active
        assert run is not None and run.policy is not None
        await wait_until(lambda: run.version >= 6, 30, "six versions")
        # Read between awaits: the servicers run on this loop, so nothing moves meanwhile.
        aggregated = sum(
            int(e.data["updates"])
            for e in cluster.coordinator.events(job_id)
            if e.kind.value == "model_updated"
        )
        m = run.policy.metrics(cluster.coordinator._now())
        assert run.mode == "sync" and m.expiries == 0 and m.churn >= 3
        # Every update is in the policy's figures except each worker's first (its probe).
        assert m.tasks + 4 == aggregated + run.aggregator.round_size()
        await cluster.stop_worker("b")  # a clean leave: its task is re-queued, nothing stalls
        m = run.policy.metrics(cluster.coordinator._now())
        assert run.mode == "sync" and m.expiries == 0 and m.churn >= 4
        await cluster.kill_worker("c")
        await cluster.kill_worker("d")
        policy = run.policy
        await wait_until(
            lambda: policy.metrics(cluster.coordinator._now()).expiries == 2, 20, "two expiries"
        )
        # Expiries cost sync the stalls they cause, which this idle bar never reaches: two of
        # them are no reason to pay async's staleness.
        after = run.version
        await wait_until(lambda: run.version >= after + 3, 30, "three more versions")
        assert run.mode == "sync"
        kinds = [e.kind.value for e in cluster.coordinator.events(job_id)]
        assert kinds.count("node_expired") == 2 and "policy_switched" not in kinds


@pytest.mark.slow
async def test_faster_workers_get_proportionally_more_samples(tmp_path: Path) -> None:
    job = _without_target(rounds=16, max_epochs=100000.0, task_seconds=0.25, round_deadline=5.0)
    async with running_cluster(tmp_path) as cluster:
        # Throttled far enough that a task is smaller than an epoch of digits (1438 samples):
        # tasks never cross an epoch boundary, so unthrottled ones would all be "the rest".
        fast = await cluster.add_worker("fast", throttle=50)
        slow = await cluster.add_worker("slow", throttle=200)
        job_id = await cluster.submit(job)
        status = await cluster.wait_job(job_id, 90)
        assert status["status"] == "completed", status
        # Sized from measured speed: the 4x-slower worker gets clearly less data.
        assert fast.samples_done > 2 * slow.samples_done, (fast.samples_done, slow.samples_done)


@pytest.mark.slow
async def test_join_leave_and_expiry_requeue_work(tmp_path: Path) -> None:
    job = _without_target(rounds=30, max_epochs=100000.0)
    async with running_cluster(tmp_path) as cluster:
        await cluster.add_worker("a")
        job_id = await cluster.submit(job)
        for attempt in range(3):  # bounded: a victim may push its task just before it dies
            victim = f"victim-{attempt}"
            await cluster.add_worker(victim, throttle=30)
            holds = lambda v=victim: any(  # noqa: E731
                n["node_id"] == v and n.get("task") for n in cluster.coordinator.list_nodes()
            )
            await wait_until(holds, 20, f"{victim} to hold a task")
            await cluster.kill_worker(victim)  # no Leave: only missed heartbeats tell
            if holds():  # dead with its task: only the expiry can give it back
                break
        else:
            pytest.fail("no victim died holding a task in 3 tries")
        await wait_until(lambda: "node_expired" in _kinds(cluster, job_id), 10, "expiry")
        assert "task_requeued" in _kinds(cluster, job_id)
        await cluster.add_worker("b")
        await cluster.stop_worker("b")  # a clean Leave
        assert "node_left" in _kinds(cluster, job_id)
        status = await cluster.wait_job(job_id, 90)
        assert status["status"] == "completed"


@pytest.mark.slow
async def test_fifty_megabyte_model_round_trips_over_grpc(tmp_path: Path) -> None:
    job = {
        "dataset": "mnist-10k",
        "algorithm": "sgd",
        "rounds": 1,
        "aggregation": "sync",
        "model": {"sizes": [784, 16000, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    }
    # This test plays the worker by hand and sends no heartbeats: a patient leader.
    async with running_cluster(tmp_path, heartbeat_interval_s=30.0) as cluster:
        job_id = await cluster.submit(job)
        term = cluster.coordinator.term
        env = common_pb2.Envelope(job_id=job_id, node_id="big", term=term)
        async with open_channel(cluster.address) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN), timeout=10
            )
            reply = await stub.GetTask(
                cluster_pb2.GetTaskRequest(envelope=env, wait_ms=5000), timeout=20
            )
            task = reply.task
            messages = [
                m
                async for m in stub.PullModel(
                    cluster_pb2.PullModelRequest(envelope=env), timeout=60
                )
            ]
            header = messages[0].header
            assert header.total_bytes >= 50 * 10**6
            assert max(m.ByteSize() for m in messages) < 2 * 2**20
            r = Reassembler(header.num_tensors, header.total_bytes, max_total_bytes=2**30)
            for m in messages[1:]:
                r.add(m.chunk)
            params = r.finish()
            ref = cluster.coordinator.model(job_id).params
            assert all(np.array_equal(params[k], ref[k]) for k in ref)
            params["b1"] += np.float32(0.5)

            async def update() -> Any:
                yield cluster_pb2.UpdateChunk(
                    header=cluster_pb2.UpdateHeader(
                        envelope=common_pb2.Envelope(
                            job_id=job_id,
                            node_id="big",
                            term=term,
                            model_version=task.envelope.model_version,
                        ),
                        task_id=task.task_id,
                        num_samples=len(task.indexes),
                        num_tensors=len(params),
                        total_bytes=params_nbytes(params),
                    )
                )
                for c in encode_tensors(params):
                    yield cluster_pb2.UpdateChunk(chunk=c)
                    await asyncio.sleep(0)

            ack = await stub.PushUpdate(update(), timeout=60)
            assert ack.envelope.model_version == 1
            np.testing.assert_array_equal(
                cluster.coordinator.model(job_id).params["b1"], params["b1"]
            )


@pytest.mark.slow
async def test_cancelled_job_voids_the_task_a_worker_is_running(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        # So slow that its task would run for many seconds unless the leader's word stops it.
        worker = await cluster.add_worker("slow", throttle=20000)
        job_id = await cluster.submit(_without_target(rounds=1000, max_epochs=1000.0))
        await wait_until(lambda: worker.state == "training", 20, "the worker to train")
        cluster.coordinator.cancel_job(job_id)
        await wait_until(lambda: worker.state == "idle", 3, "the task to be cancelled")
        assert worker.tasks_done == 0
        assert cluster.status(job_id)["status"] == "cancelled"
