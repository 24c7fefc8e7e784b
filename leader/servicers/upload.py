"""Reading a ``PushUpdate`` stream: its header, then a failure report or the update's tensors.

The wire side of an update, kept apart from ``ClusterServicer.PushUpdate`` (which only
translates and delegates): the header's checks, the failure report's one line, the body
through :mod:`~eddl.leader.servicers.updatewire`, and the draining of a refused stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from eddl.leader.errors import InvalidArgumentError
from eddl.leader.servicers.common import check_envelope, check_finite
from eddl.leader.servicers.updatewire import UpdateBody, read_update_body
from eddl.learn.aggregation import MAX_FOLDS
from eddl.net import ChunkError, ChunkTooLargeError
from eddl.proto.v1 import cluster_pb2, common_pb2

__all__ = ["UpdateHead", "drain", "draining", "read_body", "read_failure", "read_head"]

# A worker's reason for a failed task, kept to one line of this length in events and logs.
MAX_FAILURE_CHARS = 500
T = TypeVar("T")
Stream = AsyncIterator[cluster_pb2.UpdateChunk]


@dataclass(frozen=True)
class UpdateHead:
    """A checked update header: who sends what (``seconds`` and ``overhead`` finite;
    ``folds``: the updates it stands for, ``stats.workers`` of a sub-leader's group update,
    1..``MAX_FOLDS``, 1 when not given)."""

    header: cluster_pb2.UpdateHeader
    env: common_pb2.Envelope
    seconds: float
    overhead: float
    wire_bytes: int
    folds: int = 1


async def read_head(stream: Stream, *, term: int) -> UpdateHead:
    """The stream's first message: a header with a valid envelope and task id."""
    first = await anext(aiter(stream), None)
    if first is None or first.WhichOneof("body") != "header":
        raise ChunkError("an update stream must start with its header")
    header = first.header
    check_envelope(header.envelope, term=term, job=True)
    if not header.task_id:
        raise InvalidArgumentError("update header: task_id is required")
    seconds = check_finite("stats.seconds", header.stats.seconds)
    overhead = check_finite("stats.overhead_seconds", header.stats.overhead_seconds)
    folds = int(header.stats.workers) or 1
    if not 1 <= folds <= MAX_FOLDS:
        raise InvalidArgumentError(
            f"update header: stats.workers must be 0..{MAX_FOLDS} (the updates a group update "
            f"folds), got {folds}"
        )
    return UpdateHead(header, header.envelope, seconds, overhead, first.ByteSize(), folds)


async def read_failure(stream: Stream, head: UpdateHead) -> str:
    """A failure report's reason, on one line; the report is its header alone."""
    if head.header.num_tensors or head.header.total_bytes:
        raise InvalidArgumentError("a failure report carries no tensors")
    if await anext(aiter(stream), None) is not None:
        raise ChunkError("a failure report is its header alone")
    return " ".join(head.header.failure.split())[:MAX_FAILURE_CHARS]


async def read_body(stream: Stream, head: UpdateHead, max_bytes: int) -> UpdateBody:
    """The update's body: dense tensors (checked by the reassembler) or sparse records, and
    the bytes the whole stream took on the wire."""
    header = head.header
    if header.total_bytes > max_bytes:
        raise ChunkTooLargeError(f"update declares {header.total_bytes} bytes; at most {max_bytes}")
    return await read_update_body(header, head.wire_bytes, stream, max_bytes)


async def draining(stream: Stream, max_bytes: int, call: Awaitable[T]) -> T:
    """``call``; when it refuses, read what the client still sends (bounded) first: a grpc
    aio client whose write fails after the status arrived reports INTERNAL instead of our
    status (grpc/grpc#36066), and the worker acts on the status code."""
    try:
        return await call
    except Exception:
        await drain(stream, max_bytes)
        raise


async def drain(messages: Stream, max_bytes: int, max_seconds: float = 5.0) -> None:
    """Consume the rest of a refused stream, up to ``max_bytes`` or ``max_seconds``."""
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for message in messages:
            seen += message.ByteSize()
            if seen > max_bytes:
                return

    with contextlib.suppress(Exception):
        async with asyncio.timeout(max_seconds):
            await consume()
