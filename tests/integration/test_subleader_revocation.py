"""The root's revocations reach its sub-leaders, over real gRPC on loopback.

A member revoked at the root is refused by its sub-leader from its next call on (even on a
connection opened before), with the code the root answers; the other members are served; a
revocation made before the sub-leader started holds there too. Only a sub-leader may watch
the list, and a sub-leader takes lists only from a leader of the cluster and only within
their bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.leader.subleader import SubLeaderSettings
from eddl.leader.subleader_daemon import RunningGroup, start_group
from eddl.net import open_channel
from eddl.net.server import RunningServer, start_server
from eddl.proto.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    security_pb2,
    security_pb2_grpc,
)
from eddl.security.authority import Authority
from eddl.security.bootstrap import SECURITY_SERVICE_NAME
from eddl.security.node import NodeSecurity
from eddl.security.revocations import (
    MAX_REVOKED,
    RevocationList,
    Revocations,
    RevocationWatch,
)
from eddl.security.tls import Identity
from tests.integration.cluster_support import wait_until
from tests.integration.security_support import authority, env, identity, leader

pytestmark = pytest.mark.timeout(120)

OK = grpc.StatusCode.OK


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return OK


def _join(channel: grpc.aio.Channel, node: str) -> Any:
    request = cluster_pb2.JoinRequest(envelope=env(node), role="worker")
    return cluster_pb2_grpc.ClusterStub(channel).Join(request, timeout=10)


def _beat(channel: grpc.aio.Channel, node: str) -> Any:
    # Term 1: a sub-leader's group is at term 1 (and the root refuses a revoked caller first).
    request = cluster_pb2.HeartbeatRequest(envelope=common_pb2.Envelope(node_id=node, term=1))
    return cluster_pb2_grpc.ClusterStub(channel).Heartbeat(request, timeout=10)


@contextlib.asynccontextmanager
async def sub_leader(tmp: Path, auth: Authority, root: str) -> AsyncIterator[RunningGroup]:
    sub = identity(auth, "sub-1", "subleader", hosts=("127.0.0.1",))
    sub.save(tmp / "sub-1")
    group = await start_group(
        SubLeaderSettings("sub-1", "group-secret", heartbeat_s=0.5),
        bind="127.0.0.1:0",
        upstream=root,
        security=NodeSecurity("mtls", sub),
        pki_dir=tmp / "sub-1",
    )
    try:
        yield group
    finally:
        await group.stop()


async def test_a_member_revoked_at_the_root_is_refused_by_its_sub_leader_from_its_next_call(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        auth, root = authority(daemon), daemon.server.address
        early = NodeSecurity("mtls", identity(auth, "w0", "worker"))
        assert auth.revoke_node("w0")  # before the sub-leader starts
        members = {n: NodeSecurity("mtls", identity(auth, n, "worker")) for n in ("w1", "w2")}
        async with sub_leader(tmp_path, auth, root) as group, contextlib.AsyncExitStack() as stack:
            address = group.server.address
            # It served its group only once it held the root's list, which has w0 on it.
            assert group.credentials.revocations.lists >= 1
            ch0 = await stack.enter_async_context(early.channel(address))
            assert await _code(_join(ch0, "w0")) == grpc.StatusCode.UNAUTHENTICATED
            channels = {n: await stack.enter_async_context(s.channel(address)) for n, s in
                        members.items()}  # fmt: skip
            for node, ch in channels.items():
                assert await _code(_join(ch, node)) == OK, node
                assert (await _beat(ch, node)).known, node
            w1 = members["w1"].identity
            assert w1 is not None

            assert auth.revoke_node("w1")
            async with members["w1"].channel(root) as at_root:
                root_says = await _code(_beat(at_root, "w1"))
            assert root_says == grpc.StatusCode.UNAUTHENTICATED
            # The root pushes the change to the sub-leader's open stream.
            await wait_until(
                lambda: group.credentials.revocations.is_revoked(w1.info.serial),
                20,
                "the revocation at the sub-leader",
            )
            # w1's next call, on the connection it opened while it was valid, is refused ...
            assert await _code(_beat(channels["w1"], "w1")) == root_says
            assert await _code(_join(channels["w1"], "w1")) == root_says
            # ... and the other member is still served.
            assert (await _beat(channels["w2"], "w2")).known


async def test_only_a_sub_leader_certificate_may_watch_the_root_s_revocations(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None and daemon.security is not None
        auth, root = authority(daemon), daemon.server.address
        request = security_pb2.WatchRevocationsRequest()
        for role in ("worker", "gateway", "admin"):
            async with NodeSecurity("mtls", identity(auth, f"x-{role}", role)).channel(root) as ch:
                stream = security_pb2_grpc.SecurityStub(ch).WatchRevocations(request, timeout=10)
                code = await _code(stream.read())
                assert code == grpc.StatusCode.PERMISSION_DENIED, role
        # The bootstrap port has no certificates: nobody is a sub-leader there.
        assert daemon.security.bootstrap is not None
        async with open_channel(f"127.0.0.1:{daemon.security.bootstrap.port}") as plain:
            stream = security_pb2_grpc.SecurityStub(plain).WatchRevocations(request, timeout=10)
            assert await _code(stream.read()) == grpc.StatusCode.UNAUTHENTICATED
        sub = identity(auth, "sub-1", "subleader")
        auth.revoke_node("w9")  # nothing issued to w9: the list stays empty
        gone = identity(auth, "w3", "worker")
        auth.revoke_node("w3")
        async with NodeSecurity("mtls", sub).channel(root) as ch:
            stream = security_pb2_grpc.SecurityStub(ch).WatchRevocations(request, timeout=10)
            first = await stream.read()
            stream.cancel()
        assert Revocations.from_proto(first).entries == {gone.info.serial: gone.info.not_after}


class _Pushing(security_pb2_grpc.SecurityServicer):
    """A server that pushes the lists it is given, then holds the stream open."""

    def __init__(self, lists: list[security_pb2.RevocationList]) -> None:
        self.lists = lists

    async def WatchRevocations(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[security_pb2.RevocationList]:
        for message in self.lists:
            yield message
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def pushing(
    server_id: Identity, lists: list[security_pb2.RevocationList]
) -> AsyncIterator[RunningServer]:
    security = NodeSecurity("mtls", server_id)
    server = await start_server(
        "127.0.0.1:0",
        [(security_pb2_grpc.add_SecurityServicer_to_server, _Pushing(lists))],
        [SECURITY_SERVICE_NAME],
        credentials=security.server_credentials(),
    )
    try:
        yield server
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def watching(sub: Identity, address: str) -> AsyncIterator[RevocationWatch]:
    async with NodeSecurity("mtls", sub).channel(address) as channel:
        watch = RevocationWatch(RevocationList(), lambda: channel, retry_s=0.2)
        task = asyncio.create_task(watch.run())
        try:
            yield watch
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _list(serials: range | list[int], revision: int = 1) -> security_pb2.RevocationList:
    return Revocations(revision, dict.fromkeys(serials, 4e9)).to_proto()


async def test_a_sub_leader_takes_no_list_from_a_peer_that_is_not_a_leader(
    tmp_path: Path,
) -> None:
    auth = Authority(tmp_path / "ca")
    sub = identity(auth, "sub-1", "subleader")
    impostor = identity(auth, "w5", "worker", hosts=("127.0.0.1",))
    async with pushing(impostor, [_list([77])]) as server, watching(sub, server.address) as watch:
        await wait_until(lambda: watch.breaks >= 2, 20, "the refused handshakes")
        assert not watch.ready.is_set() and watch.revocations.lists == 0
        assert not watch.revocations.is_revoked(77)


async def test_a_list_over_its_bounds_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "ca")
    sub = identity(auth, "sub-1", "subleader")
    root = identity(auth, "leader-1", "leader", hosts=("127.0.0.1",))
    too_many = security_pb2.RevocationList(
        revoked=[
            security_pb2.RevokedCertificate(serial=s.to_bytes(4, "big"), not_after=4e9)
            for s in range(1000, 1000 + MAX_REVOKED + 1)
        ]
    )
    long_serial = security_pb2.RevocationList(
        revoked=[security_pb2.RevokedCertificate(serial=b"\x01" * 21, not_after=4e9)]
    )
    lists = [too_many, long_serial, _list([5], revision=2)]
    async with pushing(root, lists) as server, watching(sub, server.address) as watch:
        await wait_until(watch.ready.is_set, 20, "the good list")
        assert watch.refused == 2 and watch.revocations.lists == 1
        assert watch.revocations.is_revoked(5) and len(watch.revocations) == 1
        assert not watch.revocations.is_revoked(1000)
