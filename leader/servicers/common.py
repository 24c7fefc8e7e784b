"""What both servicers share: refusing bad envelopes, mapping errors to status codes."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np

from eddl.leader.errors import (
    InvalidArgumentError,
    LeaderError,
    NodeExpiredError,
    StaleTermError,
    UnknownNodeError,
)
from eddl.log import get_logger
from eddl.net import ChunkError, TensorError, abort_for
from eddl.net.guard import abort_internal
from eddl.net.status import MAX_DETAIL_CHARS
from eddl.net.tensors import tensor_from_array
from eddl.proto.v1 import cluster_pb2, common_pb2

__all__ = [
    "MAX_TASK_ID_CHARS",
    "check_envelope",
    "guarded",
    "guarded_stream",
    "jsonable",
    "optional_task_id",
    "refuse",
    "sample_batches",
]

SAMPLE_BATCH_BYTES = 1 << 20

log = get_logger("leader.rpc")
T = TypeVar("T")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# Errors that mean "you are not (or no longer) a member / talking to an old leader: join again".
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (UnknownNodeError, "unknown-node"),
    (NodeExpiredError, "unknown-node"),
    (StaleTermError, "stale-term"),
)
_EXPECTED = (LeaderError, ChunkError, TensorError, ValueError, KeyError, PermissionError)


def check_envelope(
    envelope: common_pb2.Envelope,
    *,
    term: int,
    node: bool = True,
    job: bool = False,
    check_term: bool = True,
) -> None:
    """Refuse a malformed envelope before anything else looks at the request."""
    if node and not _ID.match(envelope.node_id):
        raise InvalidArgumentError(f"envelope.node_id {envelope.node_id!r} is empty or malformed")
    if job and not envelope.job_id:
        raise InvalidArgumentError("envelope.job_id is required")
    if envelope.job_id and not _ID.match(envelope.job_id):
        raise InvalidArgumentError(f"envelope.job_id {envelope.job_id!r} is malformed")
    if check_term and envelope.term != term:
        raise StaleTermError(f"message carries term {envelope.term}; this leader is at {term}")


# A task id names a job and a counter (a sub-leader adds its own): far shorter than this.
MAX_TASK_ID_CHARS = 256


def optional_task_id(name: str, value: str) -> str | None:
    """A task id a request may carry: None when empty, refused when absurdly long."""
    if len(value) > MAX_TASK_ID_CHARS:
        raise InvalidArgumentError(
            f"{name} of {len(value)} characters; at most {MAX_TASK_ID_CHARS}"
        )
    return value or None


def check_finite(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name} must be finite and >= 0, got {value!r}")
    return value


async def refuse(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    reason = next((r for cls, r in _REASONS if isinstance(exc, cls)), "")
    detail = str(exc)[:MAX_DETAIL_CHARS]
    log.info("request refused", error=type(exc).__name__, detail=detail, reason=reason)
    await abort_for(context, exc, reason=reason)


async def guarded(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Await ``call``; typed errors become their status code, anything else INTERNAL with an
    incident id (:func:`eddl.net.guard.abort_internal`)."""
    try:
        return await call
    except grpc.aio.AbortError:
        raise
    except _EXPECTED as exc:
        await refuse(context, exc)
    except Exception as exc:
        await abort_internal(context, "", exc)


async def guarded_stream(
    context: grpc.aio.ServicerContext, stream: Callable[[], AsyncIterator[T]]
) -> AsyncIterator[T]:
    """The streaming twin of :func:`guarded`."""
    try:
        async for item in stream():
            yield item
    except grpc.aio.AbortError:
        raise
    except _EXPECTED as exc:
        await refuse(context, exc)
    except Exception as exc:
        await abort_internal(context, "", exc)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and other oddities turned into JSON-friendly types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "item"):
        return jsonable(value.item())
    return str(value)


async def sample_batches(
    indexes: Sequence[int], x: np.ndarray, y: np.ndarray, envelope: common_pb2.Envelope
) -> AsyncIterator[cluster_pb2.SampleBatch]:
    """Rows ``x``, ``y`` of ``indexes`` as ``SampleBatch`` messages of about 1 MiB each, with
    the loop free between them."""
    rows = max(1, SAMPLE_BATCH_BYTES // max(1, x[:1].nbytes))
    for start in range(0, len(indexes), rows):
        stop = min(len(indexes), start + rows)
        yield cluster_pb2.SampleBatch(
            envelope=envelope,
            indexes=indexes[start:stop],
            x=tensor_from_array("x", np.ascontiguousarray(x[start:stop])),
            y=tensor_from_array("y", np.ascontiguousarray(y[start:stop])),
        )
        await asyncio.sleep(0)
