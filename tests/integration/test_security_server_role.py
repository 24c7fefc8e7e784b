"""Clients check the server's role: over real gRPC on loopback, a node that serves with a
worker's, gateway's or admin's certificate of the cluster CA is refused in the handshake by a
worker's channel, the ``eddl`` command's channel, renewal and replication; a leader's
certificate for the address dialled is accepted."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eddl.leader.replica import PkiOp
from eddl.leader.replication import Replicator
from eddl.net import start_server
from eddl.proto.v1 import security_pb2_grpc
from eddl.security import pki
from eddl.security.admin import admin_channel
from eddl.security.authority import Authority, EnrolError
from eddl.security.bootstrap import SECURITY_SERVICE_NAME, SecurityServicer
from eddl.security.enrol import EnrolmentError, renew
from eddl.security.ledger import Ledger
from eddl.security.node import NodeSecurity
from eddl.security.tls import channel_credentials
from tests.integration.security_support import identity

pytestmark = pytest.mark.timeout(120)

HOSTS = ("127.0.0.1", "localhost")


@contextlib.asynccontextmanager
async def serving_as(auth: Authority, role: str) -> AsyncIterator[str]:
    """Health and Security/Renew served with a ``role`` certificate of the cluster CA."""
    server_id = identity(auth, f"srv-{role}", role, hosts=HOSTS)
    running = await start_server(
        "127.0.0.1:0",
        [(security_pb2_grpc.add_SecurityServicer_to_server, SecurityServicer(auth))],
        [SECURITY_SERVICE_NAME],
        credentials=NodeSecurity("mtls", server_id).server_credentials(),
    )
    try:
        yield running.address
    finally:
        await running.stop(0)


async def health_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def replication_error(address: str, auth: Authority) -> str:
    """Why a payload did not reach ``address`` ("" when it did)."""
    leader_id = identity(auth, "cand-a", "leader", hosts=HOSTS)
    rep = Replicator(
        credential="c", leader_id="cand-a", term=lambda: 1, snapshot=lambda: [],
        credentials=channel_credentials(leader_id), timeout_s=5.0,
    )  # fmt: skip
    await rep.set_standbys([address])
    try:
        await rep.replicate([PkiOp(Ledger({}, {}, {}))])
        return rep.views()[0].error
    finally:
        await rep.close()


@pytest.mark.parametrize("role", ["worker", "gateway", "admin"])
async def test_a_server_with_a_non_leader_certificate_is_refused(tmp_path: Path, role: str) -> None:
    auth = Authority(tmp_path / "pki")
    worker = identity(auth, "w1", "worker")
    admin = identity(auth, "ops", "admin")
    async with serving_as(auth, role) as address:
        async with NodeSecurity("mtls", worker).channel(address) as ch:
            assert await health_code(ch) == grpc.StatusCode.UNAVAILABLE
        async with admin_channel(address, admin) as ch:
            assert await health_code(ch) == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(EnrolmentError):
            await renew(address, worker)
        # Replication refuses it in the handshake too (not for the missing Peer service).
        assert "failed to connect" in await replication_error(address, auth)
        # Only the role is missing: the plain check of the CA and the host passes.
        async with grpc.aio.secure_channel(address, channel_credentials(worker)) as ch:
            assert await health_code(ch) == grpc.StatusCode.OK


async def test_a_leader_certificate_for_the_address_dialled_is_accepted(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "pki")
    worker = identity(auth, "w1", "worker")
    async with serving_as(auth, "leader") as address:
        for dialled in (address, address.replace("127.0.0.1", "localhost")):
            async with NodeSecurity("mtls", worker).channel(dialled) as ch:
                assert await health_code(ch) == grpc.StatusCode.OK
            async with admin_channel(dialled, identity(auth, "ops", "admin")) as ch:
                assert await health_code(ch) == grpc.StatusCode.OK
        # The handshake passes: the call reaches the server, which has no Peer service.
        assert await replication_error(address, auth) == "Method not found!"
        renewed = await renew(address, worker)
        assert renewed.info.node_id == "w1" and renewed.info.serial != worker.info.serial
        # A host the leader's certificate does not name is refused, as before.
        other_host = address.replace("127.0.0.1", "127.0.0.2")
        async with NodeSecurity("mtls", worker).channel(other_host) as ch:
            assert await health_code(ch) == grpc.StatusCode.UNAVAILABLE


def test_the_ca_gives_the_leader_names_only_to_leaders(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "pki")
    key = pki.new_key()
    forged = pki.make_csr(key, "w1", ("127.0.0.1",))
    # A CSR built by hand asks for a leader's name.
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "w1")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(pki.leader_name("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    token = auth.new_token("worker")
    with pytest.raises(EnrolError, match="leaders only"):
        auth.enrol(str(token), csr)
    # The refused CSR did not spend the token.
    issued = auth.enrol(str(token), forged)
    assert not any(n.startswith(pki.LEADER_PREFIX) for n in dns_names(issued.cert_pem))
    leader = auth.issue(pki.make_csr(pki.new_key(), "l1", ("127.0.0.1",)), "leader")
    assert {pki.leader_name("127.0.0.1"), pki.leader_name("l1")} <= set(dns_names(leader.cert_pem))


def dns_names(cert_pem: bytes) -> list[str]:
    ext = pki.load_cert(cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(ext.value.get_values_for_type(x509.DNSName))
