"""The one authorization point: a server interceptor with a table method -> allowed roles.

Every call is first *authenticated*: with mTLS, the caller is the certificate the TLS layer
verified (node id = common name, role = organizational unit; expired or revoked -> refused);
in ``--insecure`` mode, the session credential a ``Join`` issued. No credential ->
``UNAUTHENTICATED``. Then *authorized*: the method must list the caller's role (unknown
methods are denied), and every node id a message names must be the caller's own (a gateway's
devices are ``<gateway id>.<device>``) -> else ``PERMISSION_DENIED``. Servicers therefore see
only calls whose node id is proven.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from eddl.net.handlers import relay, wrap_shapes
from eddl.net.status import REASON_KEY
from eddl.security import pki
from eddl.security.sessions import SESSION_KEY, SessionTable

__all__ = [
    "JOIN_METHOD",
    "POLICY",
    "Authorizer",
    "Caller",
    "CertificateAuth",
    "SessionAuth",
]

JOIN_METHOD = "/eddl.v1.Cluster/Join"
_NODES = frozenset({"worker", "gateway"})
_ANY = frozenset({"worker", "gateway", "admin", "leader", "subleader"})
_CLUSTER = ("Join", "Heartbeat", "GetTask", "PushUpdate", "PullModel", "FetchSamples", "Leave")
_ADMIN = ("SubmitJob", "JobStatus", "WatchJob", "ListNodes", "CancelJob")
# A sub-leader is a node of its own leader: it joins, beats, draws tasks, pulls their base
# versions, answers them with its group's update and fetches samples for its group; no more.
_UPWARD = ("Join", "Heartbeat", "GetTask", "PushUpdate", "PullModel", "FetchSamples")

# Method -> the roles that may call it. A method missing here is refused to everyone.
POLICY: Mapping[str, frozenset[str]] = {
    **{f"/eddl.v1.Cluster/{m}": _NODES for m in _CLUSTER},
    **{f"/eddl.v1.Admin/{m}": frozenset({"admin"}) for m in _ADMIN},
    **{f"/eddl.v1.Probe/{m}": _ANY for m in ("Ping", "Upload", "Download")},
    "/eddl.v1.Security/Renew": _ANY,
    # The root's revocation list, which a sub-leader enforces on its group's endpoint.
    "/eddl.v1.Security/WatchRevocations": frozenset({"subleader"}),
    # Replication between leader candidates (the Peer service also checks the cluster's
    # shared credential in every chunk).
    "/eddl.v1.Peer/Replicate": frozenset({"leader"}),
    "/grpc.health.v1.Health/Check": _ANY,
    "/grpc.health.v1.Health/Watch": _ANY,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset({"admin"}),
    **{f"/eddl.v1.Cluster/{m}": _NODES | {"subleader"} for m in _UPWARD},
}


@dataclass(frozen=True)
class Caller:
    """Who is calling, as proven by the transport."""

    node_id: str
    role: str
    node_ids: frozenset[str] = frozenset()  # further ids this caller may speak for (sessions)
    cert: pki.CertInfo | None = None

    def may_speak_for(self, node_id: str) -> bool:
        if node_id == self.node_id or node_id in self.node_ids:
            return True
        return self.role == "gateway" and node_id.startswith(self.node_id + ".")


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The refusal's ``eddl-reason``: ``unauthenticated`` or ``permission-denied``."""
        return ((REASON_KEY, self.code.name.lower().replace("_", "-")),)


class CertificateAuth:
    """The caller of an mTLS call, from the peer certificate gRPC verified."""

    def __init__(
        self,
        is_revoked: Callable[[int], bool],
        clock: Callable[[], float] = time.time,
        *,
        join_token: str = "",
    ) -> None:
        self._is_revoked = is_revoked
        self._clock = clock
        self._join_token = join_token

    def before_join(self, request: Any) -> None:
        """The certificate admitted this Join: vouch for it to the membership."""
        request.join_token = self._join_token

    def caller(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        auth = context.auth_context() or {}
        pems = auth.get("x509_pem_cert") or []
        if not pems:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        info = _info(bytes(pems[0]))
        if info is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "not a cluster node certificate")
        if self._clock() >= info.not_after:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "certificate expired")
        if self._is_revoked(info.serial):
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
        return Caller(info.node_id, info.role, cert=info)

    def joined(self, caller: Caller, node_id: str, context: grpc.aio.ServicerContext) -> None:
        """Nothing to issue: the certificate is the credential."""


@functools.lru_cache(maxsize=4096)
def _info(pem: bytes) -> pki.CertInfo | None:
    try:
        return pki.cert_info(pki.load_cert(pem))
    except (pki.PkiError, ValueError):
        return None


class SessionAuth:
    """``--insecure``: the caller of a node call is its session; ``Join`` needs none (the join
    token admits it) and issues one. Admin calls come from this host (the server binds to
    loopback only) and act as ``admin``."""

    def __init__(self, table: SessionTable | None = None) -> None:
        self.table = table or SessionTable()

    def caller(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        if method.startswith("/eddl.v1.Admin/") or not method.startswith("/eddl.v1."):
            return Caller("local-operator", "admin")
        if method.startswith("/eddl.v1.Peer/"):
            # Another candidate on this host; the Peer service checks the shared credential.
            return Caller("local-candidate", "leader")
        secret = _metadata(context, SESSION_KEY)
        if method == JOIN_METHOD:
            return Caller("", "joining")
        ids = None if secret is None else self.table.node_ids(secret)
        if ids is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "no session: join first")
        return Caller("", "worker", node_ids=ids)

    def before_join(self, request: Any) -> None:
        """The join token in the request admits it (the membership checks it)."""

    def joined(self, caller: Caller, node_id: str, context: grpc.aio.ServicerContext) -> None:
        secret = self.table.joined(node_id, _metadata(context, SESSION_KEY))
        context.set_trailing_metadata(((SESSION_KEY, secret),))


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return str(v)
    return None


def claimed_node_ids(message: Any) -> list[str]:
    """The node ids a request names: its envelope's, or its header's envelope's."""
    has_envelope, has_header = _carriers(message.DESCRIPTOR)
    out = []
    if has_envelope and message.HasField("envelope"):
        out.append(message.envelope.node_id)
    if has_header and message.HasField("header"):
        header = message.header
        if _carriers(header.DESCRIPTOR)[0] and header.HasField("envelope"):
            out.append(header.envelope.node_id)
    return [n for n in out if n]


# Which of a message type's fields can name a node: (an ``envelope``, a ``header``), read
# once per type (a chunk of a stream has neither and costs one lookup).
_carried: dict[Any, tuple[bool, bool]] = {}


def _carriers(descriptor: Any) -> tuple[bool, bool]:
    found = _carried.get(descriptor)
    if found is None:
        fields = descriptor.fields_by_name
        found = _carried[descriptor] = ("envelope" in fields, "header" in fields)
    return found


_Auth = CertificateAuth | SessionAuth
_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class Authorizer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, auth: _Auth, policy: Mapping[str, frozenset[str]] = POLICY) -> None:
        self.auth = auth
        self.policy = policy

    async def intercept_service(
        self, continuation: _Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = str(details.method)
        changes = wrap_shapes(
            handler,
            method,
            {
                "unary_unary": self._unary,
                "unary_stream": self._unary_stream,
                "stream_unary": self._stream_unary,
                "stream_stream": self._stream_stream,
            },
        )
        return handler._replace(**changes)

    def _admit(self, method: str, context: grpc.aio.ServicerContext) -> Caller:
        caller = self.auth.caller(context, method)
        if caller.role == "joining" and method == JOIN_METHOD:
            return caller
        if caller.role not in self.policy.get(method, frozenset()):
            raise AuthError(
                grpc.StatusCode.PERMISSION_DENIED, f"role {caller.role!r} may not call {method}"
            )
        return caller

    def _check(self, caller: Caller, message: Any) -> None:
        if caller.role in ("joining", "admin", "leader"):
            return
        for node_id in claimed_node_ids(message):
            if not caller.may_speak_for(node_id):
                raise AuthError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the message names node {node_id[:64]!r}, not the caller",
                )

    async def _guard(self, method: str, context: grpc.aio.ServicerContext) -> Caller:
        try:
            return self._admit(method, context)
        except AuthError as exc:
            await context.abort(exc.code, str(exc), trailing_metadata=exc.metadata)
            raise  # unreachable: abort raises

    async def _check_or_abort(
        self, caller: Caller, message: Any, context: grpc.aio.ServicerContext
    ) -> None:
        try:
            self._check(caller, message)
        except AuthError as exc:
            await context.abort(exc.code, str(exc), trailing_metadata=exc.metadata)

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            caller = await self._guard(method, context)
            if caller.role == "joining":
                node_id = request.envelope.node_id
                reply = await inner(request, context)
                self.auth.joined(caller, node_id, context)
                return reply
            await self._check_or_abort(caller, request, context)
            if method == JOIN_METHOD:
                self.auth.before_join(request)
            reply = await inner(request, context)
            if method == JOIN_METHOD:
                self.auth.joined(caller, request.envelope.node_id, context)
            return reply

        return behaviour

    def _unary_stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            caller = await self._guard(method, context)
            await self._check_or_abort(caller, request, context)
            async for item in relay(inner(request, context)):
                yield item

        return behaviour

    def _checked(
        self, caller: Caller, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def checked() -> AsyncIterator[Any]:
            async for message in requests:
                try:
                    self._check(caller, message)
                except AuthError as exc:
                    await context.abort(exc.code, str(exc), trailing_metadata=exc.metadata)
                yield message

        return checked()

    def _stream_unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            caller = await self._guard(method, context)
            return await inner(self._checked(caller, requests, context), context)

        return behaviour

    def _stream_stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            caller = await self._guard(method, context)
            async for item in inner(self._checked(caller, requests, context), context):
                yield item

        return behaviour
