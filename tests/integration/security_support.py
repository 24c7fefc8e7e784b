"""Helpers of the security tests: a leader in a given mode, identities, one call per RPC."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eddl.leader.config import LeaderConfig
from eddl.leader.server import LeaderDaemon
from eddl.proto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    probe_pb2,
    probe_pb2_grpc,
    security_pb2,
    security_pb2_grpc,
)
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.tls import Identity

TOKEN = "security-test-token"


@contextlib.asynccontextmanager
async def leader(tmp: Path, security: str = "mtls", **extra: Any) -> AsyncIterator[LeaderDaemon]:
    fields: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "state_dir": tmp / "leader",
        "join_token": TOKEN,
        "security": security,
        "leader_id": "leader-1",
        "heartbeat_interval_s": 5.0,
        "grace_s": 0.2,
    }
    config = LeaderConfig(**{**fields, **extra})
    daemon = LeaderDaemon(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop(0.2)


def authority(daemon: LeaderDaemon) -> Authority:
    assert daemon.security is not None and daemon.security.authority is not None
    return daemon.security.authority


def identity(
    auth: Authority,
    node_id: str,
    role: str,
    lifetime_s: float | None = None,
    hosts: tuple[str, ...] = (),
) -> Identity:
    key = pki.new_key()
    issued = auth.issue(pki.make_csr(key, node_id, hosts), role, lifetime_s=lifetime_s)
    return Identity(pki.key_pem(key), issued.cert_pem, auth.ca_pem)


def expired_identity(auth: Authority, node_id: str, role: str) -> Identity:
    """Signed by the cluster CA, but its minute of life ended an hour ago."""
    key = pki.new_key()
    ca_key = pki.load_key((auth.dir / "ca.key").read_bytes())
    cert = pki.sign_csr(
        ca_key,
        auth.ca_cert,
        pki.make_csr(key, node_id),
        role=role,
        lifetime_s=60,
        now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    return Identity(pki.key_pem(key), pki.cert_pem(cert), auth.ca_pem)


def env(node_id: str) -> common_pb2.Envelope:
    return common_pb2.Envelope(node_id=node_id)


@dataclass(frozen=True)
class Rpc:
    method: str  # full name
    stub: Callable[[grpc.aio.Channel], Any]
    request: Callable[[str], Any]  # node id -> request
    request_stream: bool = False
    response_stream: bool = False

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[1]

    async def call(self, channel: grpc.aio.Channel, node_id: str = "", metadata: Any = None) -> Any:
        fn = getattr(self.stub(channel), self.name)
        request = self.request(node_id)
        if self.request_stream:

            async def one() -> AsyncIterator[Any]:
                yield request

            arg: Any = one()
        else:
            arg = request
        call = fn(arg, timeout=10, metadata=metadata)
        if self.response_stream:
            return [item async for item in call]
        return await call


def _chunk(node_id: str) -> cluster_pb2.UpdateChunk:
    return cluster_pb2.UpdateChunk(
        header=cluster_pb2.UpdateHeader(envelope=env(node_id), num_tensors=1, total_bytes=4)
    )


_C = cluster_pb2_grpc.ClusterStub
_A = admin_pb2_grpc.AdminStub
_P = probe_pb2_grpc.ProbeStub
CLUSTER = [
    Rpc(
        "/eddl.v1.Cluster/Join",
        _C,
        lambda n: cluster_pb2.JoinRequest(envelope=env(n), role="worker", join_token=TOKEN),
    ),
    Rpc("/eddl.v1.Cluster/Heartbeat", _C, lambda n: cluster_pb2.HeartbeatRequest(envelope=env(n))),
    Rpc("/eddl.v1.Cluster/GetTask", _C, lambda n: cluster_pb2.GetTaskRequest(envelope=env(n))),
    Rpc("/eddl.v1.Cluster/PushUpdate", _C, _chunk, request_stream=True),
    Rpc(
        "/eddl.v1.Cluster/PullModel",
        _C,
        lambda n: cluster_pb2.PullModelRequest(envelope=env(n), latest=True),
        response_stream=True,
    ),
    Rpc(
        "/eddl.v1.Cluster/FetchSamples",
        _C,
        lambda n: cluster_pb2.FetchSamplesRequest(envelope=env(n), dataset="digits", indexes=[0]),
        response_stream=True,
    ),
    Rpc("/eddl.v1.Cluster/Leave", _C, lambda n: cluster_pb2.LeaveRequest(envelope=env(n))),
]
ADMIN = [
    Rpc("/eddl.v1.Admin/SubmitJob", _A, lambda n: admin_pb2.SubmitJobRequest(spec_json="{}")),
    Rpc("/eddl.v1.Admin/JobStatus", _A, lambda n: admin_pb2.JobStatusRequest()),
    Rpc(
        "/eddl.v1.Admin/WatchJob",
        _A,
        lambda n: admin_pb2.WatchJobRequest(job_id="none"),
        response_stream=True,
    ),
    Rpc("/eddl.v1.Admin/ListNodes", _A, lambda n: admin_pb2.ListNodesRequest()),
    Rpc("/eddl.v1.Admin/CancelJob", _A, lambda n: admin_pb2.CancelJobRequest(job_id="none")),
]
OTHER = [
    Rpc("/eddl.v1.Probe/Ping", _P, lambda n: probe_pb2.PingRequest(payload=b"x")),
    Rpc(
        "/eddl.v1.Probe/Upload",
        _P,
        lambda n: probe_pb2.ProbeChunk(payload=b"x"),
        request_stream=True,
    ),
    Rpc(
        "/eddl.v1.Probe/Download",
        _P,
        lambda n: probe_pb2.DownloadRequest(total_bytes=16, chunk_bytes=16),
        response_stream=True,
    ),
    Rpc(
        "/grpc.health.v1.Health/Check",
        health_pb2_grpc.HealthStub,
        lambda n: health_pb2.HealthCheckRequest(),
    ),
    Rpc(
        "/eddl.v1.Security/Renew",
        security_pb2_grpc.SecurityStub,
        lambda n: security_pb2.RenewRequest(csr_pem=b""),
    ),
]
REFLECTION = Rpc(
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    reflection_pb2_grpc.ServerReflectionStub,
    lambda n: reflection_pb2.ServerReflectionRequest(list_services=""),
    request_stream=True,
    response_stream=True,
)
EVERY = [*CLUSTER, *ADMIN, *OTHER, REFLECTION]


async def code_of(rpc: Rpc, channel: grpc.aio.Channel, node_id: str = "", **kw: Any) -> Any:
    """The call's status code (OK when it returned)."""
    try:
        await rpc.call(channel, node_id, **kw)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
