"""Helpers for the cluster integration tests: an in-process leader and workers on 127.0.0.1:0.

Everything is real: the leader's gRPC server, the workers' channels, SQLite in ``tmp_path``.
Waits are bounded in time and poll a condition, never sleep blindly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eddl.leader.config import LeaderConfig
from eddl.leader.coordinator import Coordinator
from eddl.leader.server import LeaderDaemon
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2_grpc
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import WorkerDaemon
from tests.etcd_procs import EtcdMember

TOKEN = "test-token"

DIGITS_JOB: dict[str, Any] = {
    "dataset": "digits",
    "algorithm": "sgd",
    "model": {"sizes": [64, 32, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    "hyper": {"lr": 0.2, "batch_size": 8},
    "target_accuracy": 0.9,
    "max_epochs": 30.0,
    "aggregation": "sync",
    "task_seconds": 0.3,
    "round_deadline": 3.0,
    "default_task_samples": 64,
    "min_task_samples": 8,
}


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float, what: str, step: float = 0.02
) -> None:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(step)


@dataclass
class Cluster:
    leader: LeaderDaemon
    address: str
    tmp: Path
    workers: dict[str, tuple[WorkerDaemon, asyncio.Task[None]]] = field(default_factory=dict)
    _leader_task: asyncio.Task[None] | None = None

    @property
    def coordinator(self) -> Coordinator:
        assert self.leader.coordinator is not None
        return self.leader.coordinator

    def worker_config(self, node_id: str, **overrides: Any) -> WorkerConfig:
        values: dict[str, Any] = {
            "leaders": [self.address],
            "node_id": node_id,
            "join_token": TOKEN,
            # In-process clusters speak plaintext without credentials (tests of other
            # behaviours); tests/integration/test_security_*.py run the secure modes.
            "security": "off",
            "poll_ms": 200,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "rpc_timeout_s": 10.0,
        }
        values.update(overrides)
        return WorkerConfig(**values)

    async def add_worker(self, node_id: str, **overrides: Any) -> WorkerDaemon:
        daemon = WorkerDaemon(self.worker_config(node_id, **overrides))
        task = asyncio.create_task(daemon.run(), name=f"worker-{node_id}")
        self.workers[node_id] = (daemon, task)
        # Joined on both sides: the leader lists the node and the worker has its reply.
        await wait_until(
            lambda: node_id in self.coordinator.membership and daemon.joined,
            10,
            f"{node_id} joined",
        )
        return daemon

    async def stop_worker(self, node_id: str) -> None:
        daemon, task = self.workers.pop(node_id)
        daemon.request_stop()
        await asyncio.wait_for(task, 10)

    async def kill_worker(self, node_id: str) -> None:
        """Vanish without a Leave, like kill -9: the leader must notice by missed heartbeats."""
        daemon, task = self.workers.pop(node_id)
        # A cancelled daemon says goodbye in its ``finally`` when it believes it is joined;
        # a crash never does, so make it believe it is not.
        daemon.session.joined.clear()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
            await asyncio.wait_for(task, 10)
        await daemon.link.close()

    async def submit(self, spec: dict[str, Any], token: str = "") -> str:
        async with open_channel(self.address) as ch:
            reply = await admin_pb2_grpc.AdminStub(ch).SubmitJob(
                admin_pb2.SubmitJobRequest(spec_json=json.dumps(spec), admin_token=token),
                timeout=30,
            )
        return str(reply.envelope.job_id)

    def status(self, job_id: str) -> dict[str, Any]:
        return self.coordinator.job_status(job_id)

    async def wait_job(self, job_id: str, within: float) -> dict[str, Any]:
        # "ending": trained, waiting for the evaluation of its last version.
        over = lambda: self.status(job_id)["status"] not in ("running", "ending")  # noqa: E731
        await wait_until(over, within, f"job {job_id} to finish")
        return self.status(job_id)


@contextlib.asynccontextmanager
async def running_cluster(tmp: Path, **leader: Any) -> AsyncIterator[Cluster]:
    values: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "state_dir": tmp / "leader",
        "join_token": TOKEN,
        "security": "off",
        "heartbeat_interval_s": 0.2,
        "grace_s": 0.5,
    }
    values.update(leader)
    daemon = LeaderDaemon(LeaderConfig(**values))
    server = await daemon.start()
    cluster = Cluster(daemon, server.address, tmp)
    try:
        yield cluster
    finally:
        for node_id in list(cluster.workers):
            with contextlib.suppress(Exception):
                await cluster.stop_worker(node_id)
        await daemon.stop(0.2)


@contextlib.asynccontextmanager
async def ha_candidate(
    tmp: Path, etcd: EtcdMember, name: str, port: int, security: str = "insecure"
) -> AsyncIterator[LeaderDaemon]:
    """A leader candidate on ``etcd`` as an in-process daemon (lease TTL 3 s)."""
    address = f"127.0.0.1:{port}"
    config = LeaderConfig(
        bind=address, advertise=address, state_dir=tmp / name, join_token=TOKEN,
        coordinator=etcd.coordinator, leader_id=name, lease_ttl_s=3, grace_s=0.2,
        security=security,
    )  # fmt: skip
    daemon = LeaderDaemon(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(0.2)


@contextlib.asynccontextmanager
async def cluster_stub(address: str) -> AsyncIterator[cluster_pb2_grpc.ClusterStub]:
    async with open_channel(address) as ch:
        yield cluster_pb2_grpc.ClusterStub(ch)
