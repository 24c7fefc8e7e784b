"""Tensors in chunks well under the gRPC message limit, with a declared size and CRC-32.

A sender turns named arrays into ``TensorChunk`` records with :func:`encode_tensors`; each chunk
repeats its tensor's name, dtype, shape, total size and CRC-32 so the receiver can check every
piece against the first. The receiver feeds them to a :class:`Reassembler` created from the
stream's header (number of tensors, total bytes) and calls :meth:`Reassembler.finish`. Any
missing, duplicate, out-of-order, oversized or truncated chunk, and any checksum mismatch, raises
:class:`ChunkError` — nothing partial is ever returned.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from eddl.net.tensors import TensorError, check_dtype, expected_nbytes
from eddl.proto.v1 import cluster_pb2

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "ChunkError",
    "ChunkTooLargeError",
    "Reassembler",
    "encode_tensors",
    "params_nbytes",
]

# 1 MiB keeps each message a quarter of gRPC's 4 MiB default, leaving room for the header.
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 3 << 20


class ChunkError(ValueError):
    """A chunked tensor stream is malformed or does not match its declaration."""


class ChunkTooLargeError(ChunkError):
    """A chunk or a whole stream is larger than the receiver accepts."""


def params_nbytes(params: Mapping[str, np.ndarray]) -> int:
    return int(sum(int(a.nbytes) for a in params.values()))


def encode_tensors(
    params: Mapping[str, np.ndarray], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[cluster_pb2.TensorChunk]:
    """Yield the chunks of ``params`` in order; a zero-size tensor still yields one chunk."""
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise ChunkError(f"chunk size {chunk_bytes} outside 1..{MAX_CHUNK_BYTES}")
    for index, (name, array) in enumerate(params.items()):
        dtype = str(array.dtype)
        try:
            le = check_dtype(name, dtype)
        except TensorError as exc:
            raise ChunkError(str(exc)) from exc
        data = np.ascontiguousarray(array).astype(le, copy=False).tobytes()
        crc = zlib.crc32(data)
        total = len(data)
        shape = list(array.shape)
        offset = 0
        while True:
            piece = data[offset : offset + chunk_bytes]
            yield cluster_pb2.TensorChunk(
                index=index,
                name=name,
                dtype=dtype,
                shape=shape,
                total_bytes=total,
                offset=offset,
                data=piece,
                crc32=crc,
            )
            offset += len(piece)
            if offset >= total:
                break


@dataclass
class _Partial:
    name: str
    dtype: str
    shape: tuple[int, ...]
    total: int
    crc: int
    received: int = 0
    parts: list[bytes] = field(default_factory=list)


class Reassembler:
    """Collect the chunks of ``num_tensors`` tensors totalling ``total_bytes``.

    ``max_total_bytes`` bounds what the receiver is willing to hold; a larger declaration is
    refused before any data is buffered.
    """

    def __init__(
        self,
        num_tensors: int,
        total_bytes: int,
        *,
        max_total_bytes: int,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
    ) -> None:
        if num_tensors <= 0:
            raise ChunkError(f"stream declares {num_tensors} tensors; at least one is needed")
        if total_bytes > max_total_bytes:
            raise ChunkTooLargeError(
                f"stream declares {total_bytes} bytes, more than the {max_total_bytes} accepted"
            )
        self.num_tensors = num_tensors
        self.total_bytes = total_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self._tensors: dict[int, _Partial] = {}
        self._names: set[str] = set()
        self._received = 0

    @property
    def received_bytes(self) -> int:
        return self._received

    def add(self, chunk: cluster_pb2.TensorChunk) -> None:
        if len(chunk.data) > self.max_chunk_bytes:
            raise ChunkTooLargeError(
                f"chunk of {chunk.name!r} holds {len(chunk.data)} bytes; at most "
                f"{self.max_chunk_bytes} per chunk"
            )
        if chunk.index >= self.num_tensors:
            raise ChunkError(
                f"chunk index {chunk.index} but the stream declares {self.num_tensors} tensors"
            )
        part = self._tensors.get(chunk.index)
        if part is None:
            part = self._start(chunk)
        else:
            self._check_same(part, chunk)
        if part.parts and part.received >= part.total:
            raise ChunkError(
                f"tensor {part.name!r}: chunk after the tensor was complete (duplicate)"
            )
        if chunk.offset != part.received:
            kind = "duplicate" if chunk.offset < part.received else "missing"
            raise ChunkError(
                f"tensor {part.name!r}: chunk at offset {chunk.offset}, expected "
                f"{part.received} ({kind} chunk)"
            )
        if part.received + len(chunk.data) > part.total:
            raise ChunkTooLargeError(
                f"tensor {part.name!r}: chunks exceed its declared {part.total} bytes"
            )
        if self._received + len(chunk.data) > self.total_bytes:
            raise ChunkTooLargeError(f"stream exceeds its declared {self.total_bytes} bytes")
        part.parts.append(bytes(chunk.data))
        part.received += len(chunk.data)
        self._received += len(chunk.data)

    def _start(self, chunk: cluster_pb2.TensorChunk) -> _Partial:
        if not chunk.name:
            raise ChunkError(f"tensor #{chunk.index} has no name")
        if chunk.name in self._names:
            raise ChunkError(f"tensor name {chunk.name!r} appears twice")
        shape = tuple(int(d) for d in chunk.shape)
        try:
            dtype = check_dtype(chunk.name, chunk.dtype)
            want = expected_nbytes(chunk.name, dtype, shape)
        except TensorError as exc:
            raise ChunkError(str(exc)) from exc
        if chunk.total_bytes != want:
            raise ChunkError(
                f"tensor {chunk.name!r}: declares {chunk.total_bytes} bytes, shape "
                f"{list(shape)} of {chunk.dtype} needs {want}"
            )
        if want > self.total_bytes:
            raise ChunkTooLargeError(
                f"tensor {chunk.name!r} ({want} bytes) exceeds the stream's "
                f"declared {self.total_bytes} bytes"
            )
        part = _Partial(chunk.name, chunk.dtype, shape, want, chunk.crc32)
        self._tensors[chunk.index] = part
        self._names.add(chunk.name)
        return part

    @staticmethod
    def _check_same(part: _Partial, chunk: cluster_pb2.TensorChunk) -> None:
        same = (
            chunk.name == part.name
            and chunk.dtype == part.dtype
            and tuple(chunk.shape) == part.shape
            and chunk.total_bytes == part.total
            and chunk.crc32 == part.crc
        )
        if not same:
            raise ChunkError(
                f"chunk #{chunk.index} ({chunk.name!r}) disagrees with the first "
                f"chunk of tensor {part.name!r} on name, dtype, shape, size or crc"
            )

    def finish(self, *, finite: bool = True) -> dict[str, np.ndarray]:
        """Check completeness and checksums; return the arrays in index order."""
        missing = [i for i in range(self.num_tensors) if i not in self._tensors]
        if missing:
            raise ChunkError(f"stream ended without tensor(s) #{missing}")
        out: dict[str, np.ndarray] = {}
        for index in range(self.num_tensors):
            part = self._tensors[index]
            if part.received != part.total:
                raise ChunkError(
                    f"tensor {part.name!r} truncated: {part.received} of {part.total} bytes"
                )
            data = b"".join(part.parts)
            if zlib.crc32(data) != part.crc:
                raise ChunkError(f"tensor {part.name!r}: CRC-32 mismatch (corrupted data)")
            le = np.dtype(part.dtype).newbyteorder("<")
            arr = np.frombuffer(data, dtype=le).reshape(part.shape).astype(part.dtype)
            if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ChunkError(f"tensor {part.name!r} holds NaN or Inf")
            out[part.name] = arr
        if self._received != self.total_bytes:
            raise ChunkError(f"stream carried {self._received} bytes, declared {self.total_bytes}")
        return out
