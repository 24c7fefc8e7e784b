"""The Security service: GetCA and Enrol on the bootstrap port, Renew and WatchRevocations
over mTLS.

It translates only: the wire to :class:`~eddl.security.authority.Authority` calls and its
typed errors to status codes (a refused enrolment is ``UNAUTHENTICATED`` with one short line).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from eddl.log import get_logger
from eddl.net import RunningServer, start_server
from eddl.proto.v1 import security_pb2, security_pb2_grpc
from eddl.security.authority import Authority, EnrolError
from eddl.security.authz import AuthError, CertificateAuth
from eddl.security.revocations import RevocationFeed
from eddl.security.seal import Sealed

__all__ = ["SECURITY_SERVICE_NAME", "SecurityServicer", "start_bootstrap_server"]

log = get_logger("security")
SECURITY_SERVICE_NAME = security_pb2.DESCRIPTOR.services_by_name["Security"].full_name
RENEW_METHOD = f"/{SECURITY_SERVICE_NAME}/Renew"
WATCH_REVOCATIONS_METHOD = f"/{SECURITY_SERVICE_NAME}/WatchRevocations"


class SecurityServicer(security_pb2_grpc.SecurityServicer):
    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self._certs = CertificateAuth(authority.is_revoked)
        self._feed = RevocationFeed(authority.revocations, authority.revocation_listeners)

    async def GetCA(
        self, request: security_pb2.GetCARequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.GetCAReply:
        return security_pb2.GetCAReply(ca_pem=self.authority.ca_pem)

    async def Enrol(
        self, request: security_pb2.EnrolRequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.EnrolReply:
        sealed = Sealed(request.ephemeral_public, request.nonce, request.sealed_secret)
        try:
            issued = await asyncio.to_thread(
                self.authority.enrol_sealed, request.token_id, sealed, request.csr_pem
            )
        except EnrolError as exc:
            log.warning("enrolment refused", error=str(exc)[:200], peer=context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"enrolment refused: {exc}"[:200])
        log.info("node enrolled", node=issued.info.node_id, role=issued.info.role)
        return security_pb2.EnrolReply(cert_pem=issued.cert_pem, ca_pem=self.authority.ca_pem)

    async def Renew(
        self, request: security_pb2.RenewRequest, context: grpc.aio.ServicerContext
    ) -> security_pb2.RenewReply:
        try:
            caller = self._certs.caller(context, RENEW_METHOD)
            assert caller.cert is not None
            issued = await asyncio.to_thread(self.authority.renew, request.csr_pem, caller.cert)
        except AuthError as exc:
            await context.abort(exc.code, str(exc), trailing_metadata=exc.metadata)
        except EnrolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"renewal refused: {exc}"[:200])
        log.info("certificate renewed", node=issued.info.node_id, role=issued.info.role)
        return security_pb2.RenewReply(cert_pem=issued.cert_pem)

    async def WatchRevocations(
        self, request: security_pb2.WatchRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[security_pb2.RevocationList]:
        # Checked here too: the bootstrap port has no authorization point (nor certificates).
        try:
            caller = self._certs.caller(context, WATCH_REVOCATIONS_METHOD)
        except AuthError as exc:
            await context.abort(exc.code, str(exc), trailing_metadata=exc.metadata)
        if caller.role != "subleader":
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, "only a sub-leader watches revocations"
            )
        log.info("revocations watched", node=caller.node_id)
        async for revocations in self._feed.watch():
            yield revocations.to_proto()


async def start_bootstrap_server(
    bind: str,
    servicer: SecurityServicer,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """The plaintext bootstrap port: only GetCA and Enrol answer there (Renew needs mTLS).
    ``interceptors``: a leader candidate's refusal while it is not the root."""
    return await start_server(
        bind,
        [(security_pb2_grpc.add_SecurityServicer_to_server, servicer)],
        [SECURITY_SERVICE_NAME],
        interceptors=interceptors,
    )
