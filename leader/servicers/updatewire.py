"""The body of a ``PushUpdate`` stream, read off the wire: dense chunks or sparse records.

After its header an update holds either tensor chunks (reassembled by
:class:`~eddl.net.chunks.Reassembler`) or TinyMetaFed's sparse records (checked one by one by
:class:`~eddl.net.sparse.SparseAssembler`), never both. The bytes of the whole stream are
counted here, as they arrive: what the update cost on the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from eddl.leader.errors import UpdateRejectedError
from eddl.learn.params import Params
from eddl.net import ChunkError, ChunkTooLargeError, Reassembler
from eddl.net.chunks import MAX_CHUNK_BYTES
from eddl.net.sparse import (
    SparseAssembler,
    SparseRecord,
    SparseRecordError,
    SparseTooLargeError,
)
from eddl.proto.v1 import cluster_pb2

__all__ = ["UpdateBody", "read_update_body"]


@dataclass(frozen=True)
class UpdateBody:
    params: Params  # dense tensors (empty for a sparse update)
    sparse: dict[str, SparseRecord] | None  # sparse records by name, or None
    wire_bytes: int  # the serialised size of the whole stream, header included


async def read_update_body(
    header: cluster_pb2.UpdateHeader,
    wire_bytes: int,
    stream: AsyncIterator[cluster_pb2.UpdateChunk],
    max_update_bytes: int,
) -> UpdateBody:
    """Read the rest of an update whose header is ``header`` (``wire_bytes`` read so far);
    refuse a malformed body."""
    task_id = header.task_id
    dense: Reassembler | None = None
    sparse: SparseAssembler | None = None
    async for message in stream:
        kind = message.WhichOneof("body")
        wire_bytes += message.ByteSize()
        if kind == "chunk" and sparse is None:
            if dense is None:
                dense = _dense(header, max_update_bytes)
            dense.add(message.chunk)
        elif kind == "sparse" and dense is None:
            try:
                if sparse is None:
                    sparse = SparseAssembler(
                        header.num_tensors, header.total_bytes, max_total_bytes=max_update_bytes
                    )
                sparse.add(message.sparse)
            except SparseTooLargeError as exc:
                raise ChunkTooLargeError(f"update {task_id}: {exc}") from exc
            except SparseRecordError as exc:
                raise UpdateRejectedError(f"update {task_id}: {exc}") from exc
        else:
            raise ChunkError(
                "an update stream holds one header, then dense chunks or sparse records"
            )
    if sparse is None and dense is None:  # no body: the header's declared sizes still count
        dense = _dense(header, max_update_bytes)
    try:
        if sparse is not None:
            return UpdateBody({}, sparse.finish(), wire_bytes)
        assert dense is not None
        # Non-finite values go on to the job's sanity check, which counts them against the
        # node (eddl.leader.sanity); the reassembler checks everything else.
        return UpdateBody(dense.finish(finite=False), None, wire_bytes)
    except (ChunkError, SparseRecordError) as exc:
        raise UpdateRejectedError(f"update {task_id}: {exc}") from exc


def _dense(header: cluster_pb2.UpdateHeader, max_update_bytes: int) -> Reassembler:
    return Reassembler(
        header.num_tensors,
        header.total_bytes,
        max_total_bytes=max_update_bytes,
        max_chunk_bytes=MAX_CHUNK_BYTES,
    )
