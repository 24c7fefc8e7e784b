"""A gRPC server interceptor that counts bytes on the wire and times updates into a sink.

Mounted at the server's edge (``start_server(..., interceptors=[...])``), it needs nothing from
the servicers or the leader's logic: bytes are counted where gRPC (de)serialises each message,
and ``PushUpdate`` is timed around its handler, from the first chunk read to the reply. A reply
is an update taken (its ``outcome`` says how) unless it is a failure report's acknowledgement;
a call that ends with a status is a refusal, counted by its status code and ``eddl-reason``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from eddl.net import REASON_KEY
from eddl.net.handlers import counting_deserializer, counting_serializer
from eddl.ops.sink import MetricsSink

__all__ = ["UPDATE_METHOD", "MetricsInterceptor"]

UPDATE_METHOD = "/eddl.v1.Cluster/PushUpdate"
# Acknowledgements of a worker's failure report: not an update that was taken.
_FAILURE_OUTCOMES = {"requeued", "job-failed"}


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, sink: MetricsSink, update_method: str = UPDATE_METHOD) -> None:
        self.sink = sink
        self.update_method = update_method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler  # unknown method: gRPC answers UNIMPLEMENTED itself
        method = str(details.method)
        short = method.rsplit("/", 1)[-1]
        changes: dict[str, Any] = {}
        if handler.request_deserializer is not None:
            changes["request_deserializer"] = counting_deserializer(
                handler.request_deserializer, functools.partial(self.sink.received, short)
            )
        if handler.response_serializer is not None:
            changes["response_serializer"] = counting_serializer(
                handler.response_serializer, functools.partial(self.sink.sent, short)
            )
        if method == self.update_method and handler.stream_unary is not None:
            changes["stream_unary"] = self._timed(handler.stream_unary)
        return handler._replace(**changes)

    def _timed(
        self, inner: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]:
        sink = self.sink

        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            started = time.monotonic()
            try:
                reply = await inner(requests, context)
            except BaseException as exc:
                sink.update_refused(*_refusal(context, exc), time.monotonic() - started)
                raise
            outcome = str(getattr(reply, "outcome", ""))
            if outcome not in _FAILURE_OUTCOMES:
                sink.update_accepted(outcome, time.monotonic() - started)
            return reply

        return behaviour


def _refusal(context: grpc.aio.ServicerContext, exc: BaseException) -> tuple[str, str]:
    """The status code's name and the ``eddl-reason`` ('' when none); the sink bounds both."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        name = code.name
    else:  # no status set: the client went away, or the handler raised (gRPC says UNKNOWN)
        name = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "UNKNOWN"
    for key, value in context.trailing_metadata() or ():
        if key == REASON_KEY and value:
            return name, str(value)
    return name, ""
