"""Typed exceptions to gRPC status codes, in one place for every servicer.

Servicers catch the errors of the plain classes they call and hand them to :func:`abort_for`,
which aborts the call with the status code and the exception's message. An exception class may
name its code itself in a ``code`` class attribute (the name of a ``grpc.StatusCode`` member, as
the leader's errors do); otherwise the table below, extended by :func:`register_status`, is
consulted along the exception's MRO (most specific first).
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from eddl.config import ConfigError
from eddl.net.chunks import ChunkError, ChunkTooLargeError
from eddl.net.tensors import TensorError

__all__ = ["MAX_DETAIL_CHARS", "REASON_KEY", "abort_for", "register_status", "status_for"]

# Trailing-metadata key naming why a call was refused when the client must act on it
# ("unknown-node", "stale-term": join again).
REASON_KEY = "eddl-reason"

_CODES: dict[type[BaseException], grpc.StatusCode] = {
    ChunkTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ChunkError: grpc.StatusCode.INVALID_ARGUMENT,
    TensorError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    KeyError: grpc.StatusCode.NOT_FOUND,
    ValueError: grpc.StatusCode.INVALID_ARGUMENT,
    PermissionError: grpc.StatusCode.UNAUTHENTICATED,
}


def register_status(exc_type: type[BaseException], code: grpc.StatusCode) -> None:
    _CODES[exc_type] = code


def status_for(exc: BaseException) -> grpc.StatusCode:
    named = getattr(type(exc), "code", None)
    if isinstance(named, str) and named in grpc.StatusCode.__members__:
        return grpc.StatusCode[named]
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


# A status message is cut to this many characters: an error text may quote what a peer sent,
# and a peer must not choose how much the server sends back (or logs).
MAX_DETAIL_CHARS = 512


def _message(exc: BaseException) -> str:
    # KeyError's str() wraps the message in quotes; show the plain text.
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


async def abort_for(
    context: grpc.aio.ServicerContext, exc: BaseException, *, reason: str = ""
) -> NoReturn:
    """Abort the call for ``exc``; ``reason`` goes to trailing metadata ``eddl-reason``."""
    metadata = ((REASON_KEY, reason),) if reason else ()
    await context.abort(status_for(exc), _message(exc), trailing_metadata=metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises
