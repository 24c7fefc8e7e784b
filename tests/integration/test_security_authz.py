"""The one authorization point over real gRPC servers, RPC by RPC, in mTLS and insecure mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc
from eddl.security.authority import Authority
from eddl.security.authz import POLICY
from eddl.security.node import NodeSecurity
from eddl.security.sessions import SessionClient
from eddl.security.tls import channel_credentials
from tests.integration.security_support import (
    ADMIN,
    CLUSTER,
    EVERY,
    OTHER,
    REFLECTION,
    authority,
    code_of,
    env,
    expired_identity,
    identity,
    leader,
)

pytestmark = pytest.mark.timeout(120)


async def _stream(*messages: Any) -> AsyncIterator[Any]:
    for m in messages:
        yield m


DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
REFUSED_BY_AUTHZ = {DENIED, UNAUTH}


def test_the_policy_names_every_rpc_the_tests_walk() -> None:
    assert {rpc.method for rpc in EVERY} - {"/grpc.health.v1.Health/Watch"} <= set(POLICY)
    assert "/grpc.health.v1.Health/Watch" in POLICY


async def test_without_a_client_certificate_no_rpc_is_served(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        # Plaintext: the TLS port answers nothing.
        async with open_channel(daemon.server.address) as plain:
            for rpc in EVERY:
                assert await code_of(rpc, plain, "w1") == grpc.StatusCode.UNAVAILABLE, rpc.name
        # TLS with a certificate of another cluster's CA: the handshake fails.
        other = Authority(tmp_path / "other-ca")
        stranger = identity(other, "w1", "worker")
        async with open_channel(
            daemon.server.address, credentials=channel_credentials(stranger)
        ) as ch:
            for rpc in EVERY:
                assert await code_of(rpc, ch, "w1") == grpc.StatusCode.UNAVAILABLE, rpc.name


async def test_a_worker_reaches_every_cluster_rpc_as_itself_and_nothing_as_another(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        w1 = identity(authority(daemon), "w1", "worker")
        async with NodeSecurity("mtls", w1).channel(daemon.server.address) as ch:
            for rpc in CLUSTER:
                own = await code_of(rpc, ch, "w1")
                assert own not in REFUSED_BY_AUTHZ, (rpc.name, own)
                assert await code_of(rpc, ch, "w2") == DENIED, rpc.name
            for rpc in [*ADMIN, REFLECTION]:
                assert await code_of(rpc, ch) == DENIED, rpc.name
            for rpc in OTHER:
                assert await code_of(rpc, ch, "w1") not in REFUSED_BY_AUTHZ, rpc.name


async def test_an_admin_reaches_admin_rpcs_but_cannot_speak_as_a_node(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        admin = identity(authority(daemon), "ops", "admin")
        async with NodeSecurity("mtls", admin).channel(daemon.server.address) as ch:
            for rpc in [*ADMIN, *OTHER, REFLECTION]:
                assert await code_of(rpc, ch) not in REFUSED_BY_AUTHZ, rpc.name
            for rpc in CLUSTER:
                assert await code_of(rpc, ch, "ops") == DENIED, rpc.name


async def test_a_gateway_speaks_for_its_devices_only(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        gw = identity(authority(daemon), "gw", "gateway")
        async with NodeSecurity("mtls", gw).channel(daemon.server.address) as ch:
            for rpc in CLUSTER:
                assert await code_of(rpc, ch, "gw.mcu0") not in REFUSED_BY_AUTHZ, rpc.name
                assert await code_of(rpc, ch, "gwx.mcu0") == DENIED, rpc.name


async def test_every_role_reaches_exactly_the_rpcs_the_policy_gives_it(tmp_path: Path) -> None:
    """The whole table, RPC by RPC and role by role, each caller naming itself."""
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        auth = authority(daemon)
        for role in ("worker", "gateway", "admin", "leader"):
            me = identity(auth, f"as-{role}", role)
            async with NodeSecurity("mtls", me).channel(daemon.server.address) as ch:
                for rpc in EVERY:
                    code = await code_of(rpc, ch, f"as-{role}")
                    allowed = role in POLICY[rpc.method]
                    assert (code not in REFUSED_BY_AUTHZ) == allowed, (role, rpc.name, code)
                    if not allowed:
                        assert code == DENIED, (role, rpc.name, code)


async def test_expired_and_revoked_certificates_are_refused_on_every_rpc(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        auth = authority(daemon)
        expired = expired_identity(auth, "w1", "worker")
        async with NodeSecurity("mtls", expired).channel(daemon.server.address) as ch:
            for rpc in EVERY:
                code = await code_of(rpc, ch, "w1")
                assert code in {grpc.StatusCode.UNAVAILABLE, UNAUTH}, (rpc.name, code)
        live = identity(auth, "w2", "worker")
        admin = identity(auth, "ops", "admin")
        async with (
            NodeSecurity("mtls", live).channel(daemon.server.address) as ch,
            NodeSecurity("mtls", admin).channel(daemon.server.address) as ach,
        ):
            assert await code_of(CLUSTER[0], ch, "w2") == grpc.StatusCode.OK
            assert auth.revoke_node("w2") and auth.revoke_node("ops")
            # The same connection: revocation applies to the next call, not the next handshake.
            for rpc in EVERY:
                assert await code_of(rpc, ch, "w2") == UNAUTH, rpc.name
                assert await code_of(rpc, ach) == UNAUTH, rpc.name


async def test_insecure_mode_needs_the_session_from_join_on_every_later_call(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path, security="insecure") as daemon:
        assert daemon.server is not None
        node_calls = CLUSTER[1:]
        async with open_channel(daemon.server.address) as plain:
            # Probe too; Security (renewal) is not served without certificates.
            for rpc in [*node_calls, *(r for r in OTHER if r.method.startswith("/eddl.v1.Probe/"))]:
                assert await code_of(rpc, plain, "w1") == UNAUTH, rpc.name
            forged = (("eddl-session", "0" * 48),)
            for rpc in node_calls:
                assert await code_of(rpc, plain, "w1", metadata=forged) == UNAUTH, rpc.name
        sessions = SessionClient()
        async with open_channel(daemon.server.address, interceptors=sessions.interceptors()) as ch:
            assert await code_of(CLUSTER[0], ch, "w1") == grpc.StatusCode.OK
            assert sessions.secret is not None
            for rpc in node_calls:
                assert await code_of(rpc, ch, "w1") not in REFUSED_BY_AUTHZ, rpc.name
            # The Leave above ended w1's membership but not its session; another id is denied.
            for rpc in node_calls:
                assert await code_of(rpc, ch, "w2") == DENIED, rpc.name
        async with open_channel(daemon.server.address) as plain:
            bad = cluster_pb2.JoinRequest(envelope=env("w3"), role="worker", join_token="nope")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await cluster_pb2_grpc.ClusterStub(plain).Join(bad, timeout=10)
            assert err.value.code() == UNAUTH


async def test_a_gateway_joining_its_devices_at_once_keeps_them_in_one_session(
    tmp_path: Path,
) -> None:
    """Device agents of one gateway share a session client and join concurrently: every
    device must end up in the session the client keeps."""
    async with leader(tmp_path, security="insecure") as daemon:
        assert daemon.server is not None
        sessions = SessionClient()
        ids = [f"gw.mcu{i}" for i in range(4)]
        async with open_channel(daemon.server.address, interceptors=sessions.interceptors()) as ch:
            joined = await asyncio.gather(*(code_of(CLUSTER[0], ch, i) for i in ids))
            assert joined == [grpc.StatusCode.OK] * len(ids)
            for node_id in ids:  # each device may act under the one session kept
                for rpc in CLUSTER[1:]:
                    code = await code_of(rpc, ch, node_id)
                    assert code not in REFUSED_BY_AUTHZ, (node_id, rpc.name)


async def test_a_stranger_cannot_act_as_a_node_it_read_from_list_nodes(tmp_path: Path) -> None:
    """The poisoning scenario: read a worker's id, keep it alive, push huge weights as it."""
    for mode in ("insecure", "mtls"):
        async with leader(tmp_path / mode, security=mode) as daemon:
            assert daemon.server is not None and daemon.coordinator is not None
            address = daemon.server.address
            if mode == "mtls":
                auth = authority(daemon)
                victim = NodeSecurity("mtls", identity(auth, "victim", "worker"))
                admin_ch = NodeSecurity("mtls", identity(auth, "ops", "admin")).channel(address)
                # The strongest stranger: enrolled, but as another worker.
                attacker = NodeSecurity("mtls", identity(auth, "mallory", "worker"))
            else:
                victim = NodeSecurity("insecure")
                admin_ch = open_channel(address)
                attacker = NodeSecurity("off")
            async with victim.channel(address) as vch, admin_ch, attacker.channel(address) as ach:
                assert await code_of(CLUSTER[0], vch, "victim") == grpc.StatusCode.OK
                nodes = await admin_pb2_grpc.AdminStub(admin_ch).ListNodes(
                    admin_pb2.ListNodesRequest(), timeout=10
                )
                stolen = nodes.nodes[0].node_id
                assert stolen == "victim"
                seen_before = daemon.coordinator.membership.get(stolen)
                assert seen_before is not None
                for rpc in CLUSTER[1:]:  # heartbeat, tasks, updates, model, samples, leave
                    code = await code_of(rpc, ach, stolen)
                    assert code in REFUSED_BY_AUTHZ, (mode, rpc.name, code)
                huge = cluster_pb2.UpdateChunk(
                    chunk=cluster_pb2.TensorChunk(
                        index=0, dtype="float32", shape=[4], total_bytes=16, data=b"\x00" * 16
                    )
                )

                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await cluster_pb2_grpc.ClusterStub(ach).PushUpdate(
                        _stream(CLUSTER[3].request(stolen), huge), timeout=10
                    )
                assert err.value.code() in REFUSED_BY_AUTHZ
                # The victim is still a member; nothing the stranger sent reached the leader.
                assert daemon.coordinator.membership.get(stolen) is not None
