"""Tensor streams of the worker: an update as a client stream, the model from a server stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from eddl.learn.params import Params
from eddl.net import ChunkError, Reassembler, encode_tensors
from eddl.net.sparse import encode_sparse
from eddl.proto.v1 import cluster_pb2, common_pb2
from eddl.worker.executor import TaskResult

__all__ = ["inline_model", "receive_model", "sparse_records", "update_stream"]


async def update_stream(
    header: cluster_pb2.UpdateHeader,
    params: Params,
    chunk_bytes: int,
    records: Sequence[common_pb2.SparseTensor] | None = None,
) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    """The header, then the dense tensors in chunks, or (TinyMetaFed) the sparse records."""
    yield cluster_pb2.UpdateChunk(header=header)
    if records is not None:
        for record in records:
            yield cluster_pb2.UpdateChunk(sparse=record)
        return
    for chunk in encode_tensors(params, chunk_bytes):
        yield cluster_pb2.UpdateChunk(chunk=chunk)


def sparse_records(result: TaskResult) -> list[common_pb2.SparseTensor] | None:
    """A TinyMetaFed result's upload as sparse records (None: a dense update)."""
    if result.records is not None:
        return list(result.records)
    if result.sparse is None:
        return None
    return [
        encode_sparse(name, s.shape, s.indices, s.values, value_dtype=result.value_dtype)
        for name, s in result.sparse.items()
    ]


def _reassembler(header: cluster_pb2.ModelHeader, max_bytes: int) -> Reassembler:
    return Reassembler(header.num_tensors, header.total_bytes, max_total_bytes=max_bytes)


def inline_model(reply: cluster_pb2.GetTaskReply, max_bytes: int) -> tuple[int, Params] | None:
    """The model version a ``GetTask`` reply carries inline, as (version, params); None when
    it carries none; a malformed one is refused like a malformed ``PullModel`` stream."""
    if not reply.HasField("model_header"):
        return None
    reassembler = _reassembler(reply.model_header, max_bytes)
    for chunk in reply.model_chunks:
        reassembler.add(chunk)
    return reply.model_header.envelope.model_version, reassembler.finish()


async def receive_model(
    stream: AsyncIterator[cluster_pb2.ModelChunk], max_bytes: int
) -> tuple[int, Params]:
    """Reassemble a ``PullModel`` stream into (version, params); refuse a malformed stream."""
    reassembler: Reassembler | None = None
    version = 0
    async for message in stream:
        kind = message.WhichOneof("body")
        if kind == "header":
            if reassembler is not None:
                raise ChunkError("model stream holds two headers")
            header = message.header
            version = header.envelope.model_version
            reassembler = _reassembler(header, max_bytes)
        elif kind == "chunk":
            if reassembler is None:
                raise ChunkError("model stream: chunk before the header")
            reassembler.add(message.chunk)
        else:
            raise ChunkError("model stream: empty message")
    if reassembler is None:
        raise ChunkError("model stream ended without a header")
    return version, reassembler.finish()
