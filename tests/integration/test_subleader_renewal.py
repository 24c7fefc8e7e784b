"""A running sub-leader renews its certificate, over real gRPC on loopback: upward (its calls
to the root go on past its first certificate's expiry) and on its group's endpoint (a new
connection is served the new certificate, an open one keeps working), without a restart."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from eddl.leader.subleader import SubLeaderSettings
from eddl.leader.subleader_daemon import start_group
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.security.node import NodeSecurity
from eddl.security.tls import Identity
from tests.integration.cluster_support import wait_until
from tests.integration.security_support import authority, identity, leader

pytestmark = pytest.mark.timeout(120)

LIFETIME_S = 6.0  # renewed at two thirds, about 4 s in


def served_serial(address: str, client: Identity, tmp: Path) -> int:
    """The serial of the certificate a TLS server presents to a new connection."""
    (tmp / "c.key").write_bytes(client.key_pem)
    (tmp / "c.pem").write_bytes(client.cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=client.ca_pem.decode())
    context.load_cert_chain(tmp / "c.pem", tmp / "c.key")
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        context.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


async def _beat(channel: grpc.aio.Channel, node: str) -> grpc.StatusCode:
    """The code of one beat (the member may have expired meanwhile: answered all the same)."""
    request = cluster_pb2.HeartbeatRequest(envelope=common_pb2.Envelope(node_id=node, term=1))
    try:
        await cluster_pb2_grpc.ClusterStub(channel).Heartbeat(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _join(channel: grpc.aio.Channel, node: str) -> None:
    request = cluster_pb2.JoinRequest(envelope=common_pb2.Envelope(node_id=node), role="worker")
    await cluster_pb2_grpc.ClusterStub(channel).Join(request, timeout=10)


async def test_a_running_sub_leader_renews_its_upward_and_its_serving_certificate(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None and daemon.coordinator is not None
        auth = authority(daemon)
        first = identity(auth, "sub-1", "subleader", LIFETIME_S, hosts=("127.0.0.1",))
        first.save(tmp_path / "sub-1")
        member = identity(auth, "w1", "worker")
        group = await start_group(
            SubLeaderSettings("sub-1", "group-secret", heartbeat_s=0.5),
            bind="127.0.0.1:0",
            upstream=daemon.server.address,
            security=NodeSecurity("mtls", first),
            pki_dir=tmp_path / "sub-1",
        )
        try:
            address = group.server.address
            before = await asyncio.to_thread(served_serial, address, member, tmp_path)
            assert before == first.info.serial
            async with NodeSecurity("mtls", member).channel(address) as open_before:
                await _join(open_before, "w1")
                renewer = group.credentials.renewer
                assert renewer is not None
                await wait_until(lambda: renewer.renewals >= 1, 30, "the sub-leader's renewal")
                fresh = Identity.load(tmp_path / "sub-1")
                assert fresh.info.serial != first.info.serial
                assert fresh.info.node_id == "sub-1" and fresh.info.role == "subleader"
                # New connections get the new certificate; the open one keeps working.
                after = await asyncio.to_thread(served_serial, address, member, tmp_path)
                assert after == fresh.info.serial
                assert await _beat(open_before, "w1") == grpc.StatusCode.OK
                # Past the first certificate's expiry the root still hears the sub-leader: its
                # upward calls went over to the new certificate.
                await asyncio.sleep(max(0.0, first.info.not_after - time.time()) + 1.0)
                membership = daemon.coordinator.membership

                def last_seen() -> float:
                    node = membership.get("sub-1")
                    return -1.0 if node is None else node.last_seen

                seen = last_seen()
                assert seen > 0
                await wait_until(lambda: last_seen() > seen, 10, "a beat of the renewed sub-leader")
                assert group.credentials.watch.ready.is_set()
                assert await _beat(open_before, "w1") == grpc.StatusCode.OK
        finally:
            await group.stop()
