"""Server-side handler plumbing shared by the interceptors of :mod:`eddl.net`, the leader and
the security layer.

* :func:`wrap_shapes` - wrap whichever of a handler's four behaviours it has
  (``unary_unary``, ``unary_stream``, ``stream_unary``, ``stream_stream``);
* :func:`relay` - pass on what a response-streaming behaviour produces, whichever way it does;
* :class:`HandlerCache` - the first interceptor of every server (:func:`eddl.net.start_server`):
  each method's handler is built once through the interceptors behind it and kept, so an
  interceptor returns the same handler for the same method and decides anything that changes
  (who calls, whether this leader is the root) inside the handler, at each call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

__all__ = [
    "HandlerCache",
    "Wrapper",
    "counting_deserializer",
    "counting_serializer",
    "relay",
    "wrap_shapes",
]


class HandlerCache(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Keeps each method's handler as the interceptors behind it built it the first time:
    a call then skips the chain of ``intercept_service`` coroutines and the wrapping they
    redo. Only handlers of registered methods are kept (an unknown method has none), so the
    cache holds at most the server's methods."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = str(details.method)
        handler = self._handlers.get(method)
        if handler is None:
            handler = await continuation(details)
            if handler is not None:
                self._handlers[method] = handler
        return handler


# A handler's behaviour by its shape (``unary_unary``, ``unary_stream``, ``stream_unary``,
# ``stream_stream``) -> a wrapper of it, given the method's name.
Wrapper = Callable[[str, Callable[..., Any]], Callable[..., Any]]


def wrap_shapes(
    handler: grpc.RpcMethodHandler, method: str, wrappers: Mapping[str, Wrapper]
) -> dict[str, Any]:
    """The ``handler._replace`` changes that wrap its behaviour with ``wrappers[shape]``."""
    changes: dict[str, Any] = {}
    for shape, wrap in wrappers.items():
        behaviour = getattr(handler, shape)
        if behaviour is not None:
            changes[shape] = wrap(method, behaviour)
    return changes


async def relay(result: Any) -> AsyncIterator[Any]:
    """What a response-streaming behaviour produced: the items of its async generator, or
    nothing once it finished (a behaviour that writes through ``context.write``)."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


def counting_deserializer(
    inner: Callable[[bytes], Any] | None, count: Callable[[int], None]
) -> Callable[[bytes], Any]:
    """``inner`` (or the raw bytes without one), telling ``count`` each message's size on the
    wire: where gRPC deserialises, so the count is exact and costs nothing per byte."""

    def deserialize(data: bytes) -> Any:
        count(len(data))
        return data if inner is None else inner(data)

    return deserialize


def counting_serializer(
    inner: Callable[[Any], bytes] | None, count: Callable[[int], None]
) -> Callable[[Any], bytes]:
    """``inner`` (or the message as bytes already), telling ``count`` each message's size."""

    def serialize(message: Any) -> bytes:
        data: bytes = message if inner is None else inner(message)
        count(len(data))
        return data

    return serialize
