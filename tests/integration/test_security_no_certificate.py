"""A caller without a cluster certificate, over real gRPC servers on loopback.

gRPC Python offers a server two client-certificate modes only: require and verify one, or
never ask for one (docs/security.md, "No credential"). The second test pins that down, so that
a gRPC release which adds the third mode (ask, verify if sent, let the authorization point
answer UNAUTHENTICATED) makes this suite say so.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from eddl.net import open_channel
from eddl.security.authority import Authority
from eddl.security.tls import Identity, channel_credentials
from tests.integration.security_support import EVERY, authority, code_of, identity, leader

pytestmark = pytest.mark.timeout(120)


async def test_a_tls_caller_without_a_certificate_fails_the_handshake_on_every_rpc(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        # It trusts the cluster CA, so the leader's certificate checks out; it has none itself.
        no_cert = grpc.ssl_channel_credentials(root_certificates=authority(daemon).ca_pem)
        async with open_channel(daemon.server.address, credentials=no_cert) as ch:
            for rpc in EVERY:
                assert await code_of(rpc, ch, "w1") == grpc.StatusCode.UNAVAILABLE, rpc.name
        # Nothing it sent reached the leader: no member, no job.
        assert daemon.coordinator is not None
        assert daemon.coordinator.membership.get("w1") is None


def _server_identity(tmp_path: Path) -> tuple[Authority, Identity]:
    auth = Authority(tmp_path / "ca")
    return auth, identity(auth, "leader-1", "leader", hosts=("127.0.0.1",))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
async def test_a_server_that_does_not_require_a_client_certificate_never_sees_one(
    tmp_path: Path, dynamic: bool
) -> None:
    """``require_client_auth=False`` with the cluster CA as roots: gRPC does not even ask for
    the client's certificate, so a valid one never reaches the authorization point."""
    auth, server_id = _server_identity(tmp_path)
    pairs = [(server_id.key_pem, server_id.cert_pem)]
    if dynamic:
        config = grpc.ssl_server_certificate_configuration(pairs, root_certificates=auth.ca_pem)
        creds = grpc.dynamic_ssl_server_credentials(
            config, lambda: None, require_client_authentication=False
        )
    else:
        creds = grpc.ssl_server_credentials(
            pairs, root_certificates=auth.ca_pem, require_client_auth=False
        )
    seen: list[dict[str, list[bytes]]] = []

    class Spy(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            handler = await continuation(details)
            inner = handler.unary_unary

            async def behaviour(request, context):  # type: ignore[no-untyped-def]
                seen.append(dict(context.auth_context()))
                return await inner(request, context)

            return handler._replace(unary_unary=behaviour)

    server = grpc.aio.server(interceptors=[Spy()])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        worker = identity(auth, "w1", "worker")
        async with open_channel(f"127.0.0.1:{port}", credentials=channel_credentials(worker)) as ch:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert len(seen) == 1
    assert seen[0].get("transport_security_type") == [b"ssl"]
    assert "x509_pem_cert" not in seen[0] and "x509_common_name" not in seen[0]
