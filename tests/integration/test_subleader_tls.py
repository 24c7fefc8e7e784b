"""A sub-leader's certificates over real gRPC: upward, the root admits role ``subleader`` for a
node's own upward calls only; downward, the group's endpoint serves members with cluster
certificates only, and members check the endpoint's certificate against the cluster CA."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from eddl.leader.servicers.group import GroupServicer
from eddl.leader.subleader import SubLeader, SubLeaderSettings
from eddl.leader.subleader_credentials import group_interceptors
from eddl.leader.subleader_daemon import CLUSTER as CLUSTER_SERVICE
from eddl.leader.uplink import Uplink
from eddl.net import open_channel
from eddl.net.server import RunningServer, start_server
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.authz import POLICY
from eddl.security.node import NodeSecurity
from eddl.security.revocations import RevocationList
from eddl.security.tls import Identity, channel_credentials
from tests.integration.security_support import (
    ADMIN,
    CLUSTER,
    OTHER,
    REFLECTION,
    authority,
    code_of,
    env,
    identity,
    leader,
)

pytestmark = pytest.mark.timeout(120)

DENIED = grpc.StatusCode.PERMISSION_DENIED
REFUSED_BY_AUTHZ = {DENIED, grpc.StatusCode.UNAUTHENTICATED}
UPWARD = {"Join", "Heartbeat", "GetTask", "PushUpdate", "PullModel", "FetchSamples"}


def test_the_policy_gives_role_subleader_exactly_the_upward_calls_and_the_common_ones() -> None:
    allowed = {m for m, roles in POLICY.items() if "subleader" in roles}
    upward = {f"/eddl.v1.Cluster/{m}" for m in UPWARD}
    assert {m for m in allowed if m.startswith("/eddl.v1.Cluster/")} == upward
    assert not any(m.startswith(("/eddl.v1.Admin/", "/eddl.v1.Peer/")) for m in allowed)
    assert "/eddl.v1.Security/Renew" in allowed


async def test_a_subleader_certificate_reaches_its_upward_calls_as_itself_only(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        sub = identity(authority(daemon), "sub-1", "subleader")
        async with NodeSecurity("mtls", sub).channel(daemon.server.address) as ch:
            for rpc in CLUSTER:
                own = await code_of(rpc, ch, "sub-1")
                if rpc.name in UPWARD:
                    assert own not in REFUSED_BY_AUTHZ, (rpc.name, own)
                    assert await code_of(rpc, ch, "w1") == DENIED, rpc.name
                else:
                    assert own == DENIED, rpc.name
            for rpc in [*ADMIN, REFLECTION]:
                assert await code_of(rpc, ch) == DENIED, rpc.name
            for rpc in OTHER:
                assert await code_of(rpc, ch, "sub-1") not in REFUSED_BY_AUTHZ, rpc.name


@contextlib.asynccontextmanager
async def group_endpoint(tmp: Path, server_identity: Identity) -> AsyncIterator[RunningServer]:
    """A sub-leader's group endpoint over mTLS (its upstream is never called here)."""
    security = NodeSecurity("mtls", server_identity)
    settings = SubLeaderSettings("sub-1", "group-secret")
    async with open_channel("127.0.0.1:9") as unused:
        sub = SubLeader(settings, Uplink(cluster_pb2_grpc.ClusterStub(unused), "sub-1"))
        server = await start_server(
            "127.0.0.1:0",
            [(cluster_pb2_grpc.add_ClusterServicer_to_server, GroupServicer(sub, []))],
            [CLUSTER_SERVICE],
            interceptors=group_interceptors(security, settings.join_token, RevocationList()),
            credentials=security.server_credentials(),
        )
        try:
            yield server
        finally:
            await server.stop(0.2)


def _server_identity(auth: Authority) -> Identity:
    key = pki.new_key()
    issued = auth.issue(pki.make_csr(key, "sub-1", ("127.0.0.1", "localhost")), "subleader")
    return Identity(pki.key_pem(key), issued.cert_pem, auth.ca_pem)


async def _join(channel: grpc.aio.Channel, node: str) -> grpc.StatusCode:
    request = cluster_pb2.JoinRequest(envelope=env(node), role="worker")
    try:
        await cluster_pb2_grpc.ClusterStub(channel).Join(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_the_group_endpoint_admits_cluster_certificates_only(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "ca")
    async with group_endpoint(tmp_path, _server_identity(auth)) as server:
        member = NodeSecurity("mtls", identity(auth, "w1", "worker"))
        async with member.channel(server.address) as ch:
            # The certificate admits the Join (no token in the request).
            assert await _join(ch, "w1") == grpc.StatusCode.OK
            assert await _join(ch, "w2") == DENIED
        async with open_channel(server.address) as plain:
            assert await _join(plain, "w1") == grpc.StatusCode.UNAVAILABLE
        stranger = identity(Authority(tmp_path / "other-ca"), "w1", "worker")
        async with open_channel(server.address, credentials=channel_credentials(stranger)) as ch:
            assert await _join(ch, "w1") == grpc.StatusCode.UNAVAILABLE


async def test_members_refuse_a_group_endpoint_of_another_ca(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "ca")
    impostor = _server_identity(Authority(tmp_path / "other-ca"))
    async with group_endpoint(tmp_path, impostor) as server:
        member = NodeSecurity("mtls", identity(auth, "w1", "worker"))
        async with member.channel(server.address) as ch:
            assert await _join(ch, "w1") == grpc.StatusCode.UNAVAILABLE
