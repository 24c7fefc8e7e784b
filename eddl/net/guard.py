"""``Guard``: the interceptor in front of every servicer of every EDDL server.

``start_server`` mounts it first, so it wraps every handler (Cluster, Admin, Probe, a worker's
endpoint) whatever interceptors and servicers come after it:

* **Malformed bytes** — a request that does not decode as its message is refused with
  ``INVALID_ARGUMENT`` ("malformed ..."), not gRPC's own INTERNAL.
* **Out-of-range fields** — every request message passes :func:`eddl.net.bounds.check_message`
  (integers SQLite can store, id, token and text lengths, repeated-field sizes, finite floats)
  before the servicer sees it: ``INVALID_ARGUMENT`` with the field and the bound.
* **Unexpected exceptions** — anything a handler raises that is not a status it chose becomes
  ``INTERNAL`` with a short text carrying an *incident id*; the exception is logged in full with
  that id on the server and nothing of it (no type, no text, no state) reaches the caller.
* **Refused streams are drained** — when a client-streaming call ends with a status before the
  client finished sending, what it still sends is read and dropped (bounded in messages and
  time), so the client sees the status and not a broken write (grpc/grpc#36066).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from eddl.log import get_logger
from eddl.net.bounds import DEFAULT_BOUNDS, BoundsError, MessageBounds, check_message
from eddl.net.handlers import relay, wrap_shapes
from eddl.net.status import MAX_DETAIL_CHARS

__all__ = [
    "DRAIN_MAX_MESSAGES",
    "DRAIN_MAX_SECONDS",
    "Guard",
    "RequestError",
    "abort_internal",
    "incident_id",
]

log = get_logger("net.guard")

# What a refused client stream may still send before the status goes out.
DRAIN_MAX_MESSAGES = 4096
DRAIN_MAX_SECONDS = 5.0

_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class RequestError(ValueError):
    """A message of a client stream did not decode or has a field out of bounds."""


class _Malformed:
    """Stands for a request that did not decode (its deserializer raised)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def incident_id() -> str:
    return secrets.token_hex(6)


async def abort_internal(
    context: grpc.aio.ServicerContext, method: str, exc: BaseException
) -> NoReturn:
    """Log ``exc`` in full under a fresh incident id; answer INTERNAL with the id only. A call
    the client already cancelled has nobody to answer: that is logged at info, not as an
    incident (the refusal an inner layer tried to send failed for that reason alone)."""
    _cancelled_by_client(context, method, exc)
    incident = incident_id()
    log.error("unexpected error", incident=incident, method=method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _cancelled_by_client(
    context: grpc.aio.ServicerContext, method: str, exc: BaseException
) -> None:
    """Raise ``CancelledError`` when the client cancelled the call (its deadline passed, or it
    gave up half-way through a stream): the handler's failure is that cancellation's echo."""
    # ``done()`` before this handler answered: the call ended without it (a client that
    # cancelled reads as done, not always as ``cancelled()``, by the time its echo arrives).
    if context.cancelled() or context.done():
        log.info("call cancelled by the client", method=method, error=type(exc).__name__)
        raise asyncio.CancelledError from exc


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, bounds: MessageBounds = DEFAULT_BOUNDS) -> None:
        self.bounds = bounds

    async def intercept_service(
        self, continuation: _Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED itself
        method = str(details.method)
        changes = wrap_shapes(
            handler,
            method,
            {
                "unary_unary": self._unary_unary,
                "unary_stream": self._unary_stream,
                "stream_unary": self._stream_unary,
                "stream_stream": self._stream_stream,
            },
        )
        if handler.request_deserializer is not None:
            changes["request_deserializer"] = _tolerant(handler.request_deserializer)
        return handler._replace(**changes)

    # -- checks --------------------------------------------------------------------------------

    def _problem(self, request: Any) -> str | None:
        """Why ``request`` is refused (it did not decode, or a field is out of bounds)."""
        if isinstance(request, _Malformed):
            return request.reason
        if request is not None and hasattr(request, "ListFields"):
            try:
                check_message(request, self.bounds)
            except BoundsError as exc:
                text = str(exc)
                return (
                    text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."
                )
        return None

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        problem = self._problem(request)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    def _checked(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client stream whose bad message raises :class:`RequestError` (a ``ValueError``:
        servicers refuse it as INVALID_ARGUMENT, and so does the guard if one lets it pass)."""

        async def checked() -> AsyncIterator[Any]:
            async for request in requests:
                problem = self._problem(request)
                if problem is not None:
                    # Read the rest before the refusal goes out: a status sent while the
                    # client still writes reaches it as INTERNAL.
                    await _drain(requests)
                    raise RequestError(problem)
                yield request

        return checked()

    # -- the four shapes -----------------------------------------------------------------------

    def _unary_unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                await self._admit(request, context)
                return await inner(request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await abort_internal(context, method, exc)

        return behaviour

    def _unary_stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                await self._admit(request, context)
                async for item in relay(inner(request, context)):
                    yield item
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await abort_internal(context, method, exc)

        return behaviour

    def _stream_unary(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            checked = self._checked(requests)
            try:
                return await inner(checked, _DrainingContext(context, requests))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await _stream_failed(context, method, requests, exc)

        return behaviour

    def _stream_stream(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def behaviour(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            checked = self._checked(requests)
            try:
                async for item in relay(inner(checked, _DrainingContext(context, requests))):
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await _stream_failed(context, method, requests, exc)

        return behaviour


async def _stream_failed(
    context: grpc.aio.ServicerContext, method: str, requests: AsyncIterator[Any], exc: Exception
) -> NoReturn:
    """A client-stream handler failed with ``exc``: read what the client still sends, then
    answer (an abort already sent stands, a bad message is INVALID_ARGUMENT, the rest INTERNAL)."""
    _cancelled_by_client(context, method, exc)
    await _drain(requests)
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, RequestError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    await abort_internal(context, method, exc)


class _DrainingContext:
    """A servicer context whose ``abort`` first reads what the client still sends. A second
    abort (a layer refusing what an inner layer already refused while reading the stream)
    raises the first one's error again: the status the client got stands."""

    def __init__(self, context: grpc.aio.ServicerContext, requests: AsyncIterator[Any]) -> None:
        self._context = context
        self._requests = requests
        self._aborted: grpc.aio.AbortError | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any, **kw: Any) -> None:
        if self._aborted is not None:
            raise self._aborted
        await _drain(self._requests)
        try:
            await self._context.abort(code, details, *args, **kw)
        except grpc.aio.AbortError as exc:
            self._aborted = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or a wrapper's own error
            return _Malformed(f"malformed request message ({type(exc).__name__})")

    return tolerant


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Read and drop what a refused client stream still sends, within the bounds above."""

    async def consume() -> None:
        seen = 0
        async for _ in requests:
            seen += 1
            if seen >= DRAIN_MAX_MESSAGES:
                return

    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_MAX_SECONDS):
            await consume()
