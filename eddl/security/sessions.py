"""Session credentials of ``--insecure`` mode: issued at ``Join``, required on every later call.

Without TLS a node has no certificate, but the node id (which ``ListNodes`` shows to anyone)
still must authorize nothing. A successful ``Join`` (which the join token admits) returns a
random session secret in the trailing metadata ``eddl-session``; every later call carries it,
and the leader maps it to the node ids joined with it (a gateway joins its devices with one
session). :class:`SessionClient` is the client side: a channel interceptor that keeps the
secret of the last ``Join`` and sends it with every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["SESSION_KEY", "SessionClient", "SessionTable"]

SESSION_KEY = "eddl-session"
MAX_SESSIONS = 65536
MAX_IDS_PER_SESSION = 1024


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class SessionTable:
    """Session secret (kept hashed) -> the node ids joined with it; oldest dropped at the cap."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._sessions: OrderedDict[bytes, set[str]] = OrderedDict()
        self._max = max_sessions

    def node_ids(self, secret: str) -> frozenset[str] | None:
        ids = self._sessions.get(_key(secret[:128]))
        return None if ids is None else frozenset(ids)

    def joined(self, node_id: str, secret: str | None) -> str:
        """Record that ``node_id`` joined; reuse the caller's live session, else a new one."""
        if secret is not None:
            ids = self._sessions.get(_key(secret[:128]))
            if ids is not None and len(ids) < MAX_IDS_PER_SESSION:
                ids.add(node_id)
                return secret
        for other in self._sessions.values():
            other.discard(node_id)  # a node id belongs to its latest session only
        fresh = secrets.token_hex(24)
        self._sessions[_key(fresh)] = {node_id}
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return fresh


class _Holder:
    def __init__(self) -> None:
        self.secret: str | None = None
        # A gateway joins its devices through one session: its Joins go one at a time, so
        # each carries the secret the previous one got and the leader adds the id to it (two
        # Joins in flight at once would each open a session, and only one could be kept).
        self.joining = asyncio.Lock()


def _with_session(details: Any, secret: str | None) -> Any:
    if secret is None:
        return details
    metadata = [*(details.metadata or ()), (SESSION_KEY, secret)]
    return details._replace(metadata=metadata)


class _Unary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        method = details.method
        if isinstance(method, bytes):
            method = method.decode()
        if not str(method).endswith("/Join"):
            return await continuation(_with_session(details, self._holder.secret), request)
        async with self._holder.joining:
            call = await continuation(_with_session(details, self._holder.secret), request)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call  # the reply, then the trailers that carry the session
                for key, value in await call.trailing_metadata() or ():
                    if key == SESSION_KEY:
                        self._holder.secret = str(value)
        return call


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    async def intercept_unary_stream(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_session(details, self._holder.secret), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    async def intercept_stream_unary(
        self, continuation: Callable[[Any, Any], Awaitable[Any]], details: Any, requests: Any
    ) -> Any:
        return await continuation(_with_session(details, self._holder.secret), requests)


class SessionClient:
    """The interceptors a node's channel needs in ``--insecure`` mode (one per node link)."""

    def __init__(self) -> None:
        self._holder = _Holder()

    @property
    def secret(self) -> str | None:
        return self._holder.secret

    def interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        h = self._holder
        return [_Unary(h), _UnaryStream(h), _StreamUnary(h)]
