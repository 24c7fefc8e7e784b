"""``RootOnly``: a leader that is not the root refuses every Cluster and Admin call.

The check sits in front of the servicers (a server interceptor), so it covers every RPC, the
streaming ones included, before a request is read: ``FAILED_PRECONDITION`` with the reason
``not-leader`` and the root's address in ``eddl-leader-hint`` (see :mod:`eddl.net.redirect`).
Health, reflection and Probe stay answered: they say nothing about the cluster's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc

from eddl.leader.ports import Leadership
from eddl.log import get_logger
from eddl.net.redirect import not_leader_metadata

__all__ = ["RootOnly"]

log = get_logger("leader.rpc")
_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RootOnly(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, leadership: Leadership, services: Collection[str]) -> None:
        self._leadership = leadership
        self._services = frozenset(services)

    async def intercept_service(
        self, continuation: _Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        method = str(details.method)
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if handler is None or service not in self._services or self._leadership.is_root():
            return handler
        hint = self._leadership.root_hint()

        async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
            log.info("request refused", reason="not-leader", method=method, hint=hint)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this leader is not the root; the root is {hint or 'unknown'}",
                trailing_metadata=not_leader_metadata(hint),
            )

        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
