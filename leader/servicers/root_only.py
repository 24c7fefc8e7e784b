"""``RootOnly``: a leader that is not the root refuses every Cluster and Admin call.

The check sits in front of the servicers (a server interceptor), so it covers every RPC, the
streaming ones included, before a request is read: ``FAILED_PRECONDITION`` with the reason
``not-leader`` and the root's address in ``eddl-leader-hint`` (see :mod:`eddl.net.redirect`).
Health, reflection and Probe stay answered: they say nothing about the cluster's state.

A unary call is checked again when its handler is done: a leader that stopped being the root
(or is root in another term) meanwhile withholds the reply and answers ``not-leader``, so no
reply of an old root - an update's acknowledgement above all - goes out after its lease could
have run out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from eddl.leader.ports import Leadership
from eddl.log import get_logger
from eddl.net.handlers import relay, wrap_shapes
from eddl.net.redirect import not_leader_metadata

__all__ = ["RootOnly"]

log = get_logger("leader.rpc")
_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RootOnly(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each Cluster and Admin handler once; whether this leader is the root is asked at
    every call (the handlers are built once per method, see :mod:`eddl.net.server`)."""

    def __init__(self, leadership: Leadership, services: Collection[str]) -> None:
        self._leadership = leadership
        self._services = frozenset(services)

    async def intercept_service(
        self, continuation: _Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = str(details.method)
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if handler is None or service not in self._services:
            return handler
        changes = wrap_shapes(
            handler,
            method,
            {
                "unary_unary": self._unary,
                "stream_unary": self._unary,
                "unary_stream": self._streaming,
                "stream_stream": self._streaming,
            },
        )
        return handler._replace(**changes)

    async def _admit(self, method: str, context: grpc.aio.ServicerContext) -> int:
        """Refuse the call (before any request is read) unless this leader is the root; the
        term it is root in."""
        state = self._leadership.state()
        if not state.is_root:
            await self._refuse(method, context, "request refused")
        return state.term

    async def _refuse(self, method: str, context: grpc.aio.ServicerContext, what: str) -> None:
        hint = self._leadership.root_hint()
        log.info(what, reason="not-leader", method=method, hint=hint)
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"this leader is not the root; the root is {hint or 'unknown'}",
            trailing_metadata=not_leader_metadata(hint),
        )

    def _unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            term = await self._admit(method, context)
            reply = await inner(request, context)
            # A root that stopped being root while it served the call (its lease ran out
            # while the update waited for the standbys) must not acknowledge it: the caller
            # hears not-leader, goes to the new root and sends it again there.
            state = self._leadership.state()
            if not state.is_root or state.term != term:
                await self._refuse(method, context, "reply withheld")
            return reply

        return behaviour

    def _streaming(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._admit(method, context)
            async for item in relay(inner(request, context)):
                yield item

        return behaviour
