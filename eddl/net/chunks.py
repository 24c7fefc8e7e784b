"""Tensors in chunks well under the gRPC message limit, with a declared size and CRC-32.

A sender turns named arrays into ``TensorChunk`` records with :func:`encode_tensors`; each chunk
repeats its tensor's name, dtype, shape, total size and CRC-32 so the receiver can check every
piece against the first. The receiver feeds them to a :class:`Reassembler` created from the
stream's header (number of tensors, total bytes) and calls :meth:`Reassembler.finish`. Any
missing, duplicate, out-of-order, oversized or truncated chunk, and any checksum mismatch, raises
:class:`ChunkError` — nothing partial is ever returned.

Everything a peer declares is bounded before it is used (:class:`ChunkLimits`): the number of
tensors and the total size when the reassembler is made, a tensor's name, dimensions, element
count and size when its first chunk arrives, a chunk's size before its bytes are copied. The
receiver holds at most the bytes that actually arrived (one growing buffer per tensor, CRC-32
computed as they come), never what a header promised, and error texts are short whatever the
peer sent.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from eddl.net.tensors import (
    MAX_ELEMENTS,
    MAX_NDIM,
    TensorError,
    check_dtype,
    check_shape,
    expected_nbytes,
    short,
)
from eddl.proto.v1 import cluster_pb2

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_LIMITS",
    "MAX_CHUNK_BYTES",
    "MAX_INLINE_MODEL_BYTES",
    "ChunkError",
    "ChunkLimits",
    "ChunkTooLargeError",
    "EncodedModels",
    "Reassembler",
    "encode_tensors",
    "params_nbytes",
]

# 1 MiB keeps each message a quarter of gRPC's 4 MiB default, leaving room for the header.
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 3 << 20
# A model this small may travel inside a GetTask reply (one message, like one chunk).
MAX_INLINE_MODEL_BYTES = MAX_CHUNK_BYTES


class ChunkError(TensorError):
    """A chunked tensor stream is malformed or does not match its declaration (the message is
    cut to a few hundred characters, whatever the peer sent)."""


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


class EncodedModels:
    """The chunks of the last few model versions a server sent, kept to be sent again.

    Every worker of a round pulls the same version; encoding it (a copy and a CRC over every
    byte) once per version instead of once per pull is most of a pull's cost. Keyed by job,
    version and chunk size; at most ``max_entries`` versions and ``max_bytes`` of tensor data
    (the newest version is always kept). A version's parameters never change, so a kept
    encoding stays right.
    """

    def __init__(self, max_entries: int = 4, max_bytes: int = 64 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._kept: dict[tuple[str, int, int], tuple[list[cluster_pb2.TensorChunk], int]] = {}

    def chunks(
        self, job_id: str, version: int, params: Mapping[str, np.ndarray], chunk_bytes: int
    ) -> list[cluster_pb2.TensorChunk]:
        key = (job_id, version, chunk_bytes)
        kept = self._kept.pop(key, None)
        if kept is None:
            kept = (list(encode_tensors(params, chunk_bytes)), params_nbytes(params))
        self._kept[key] = kept  # the newest last
        while len(self._kept) > 1 and (
            len(self._kept) > self.max_entries
            or sum(n for _, n in self._kept.values()) > self.max_bytes
        ):
            del self._kept[next(iter(self._kept))]
        return kept[0]


@dataclass(frozen=True)
class ChunkLimits:
    """What a receiver accepts from a peer's declarations, beyond its byte budget.

    The defaults are far above any EDDL model (a dense network has two tensors per layer) and
    small enough that the bookkeeping of a stream at the limits stays under a few MB.
    """

    max_tensors: int = 4096
    max_name_chars: int = 256
    max_ndim: int = MAX_NDIM
    max_elements: int = MAX_ELEMENTS

    def __post_init__(self) -> None:
        if min(self.max_tensors, self.max_name_chars, self.max_ndim, self.max_elements) < 1:
            raise ValueError(f"every chunk limit must be positive: {self}")


DEFAULT_LIMITS = ChunkLimits()


@dataclass
class _Partial:
    name: str
    dtype: str
    shape: tuple[int, ...]
    total: int
    crc: int
    data: bytearray
    running_crc: int = 0


class Reassembler:
    """Collect the chunks of ``num_tensors`` tensors totalling ``total_bytes``.

    ``max_total_bytes`` bounds what the receiver is willing to hold and ``limits`` what a peer
    may declare; a larger declaration is refused before anything is allocated.
    """

    def __init__(
        self,
        num_tensors: int,
        total_bytes: int,
        *,
        max_total_bytes: int,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        limits: ChunkLimits = DEFAULT_LIMITS,
    ) -> None:
        if num_tensors <= 0:
            raise ChunkError(f"stream declares {num_tensors} tensors; at least one is needed")
        if num_tensors > limits.max_tensors:
            raise ChunkTooLargeError(
                f"stream declares {num_tensors} tensors; at most {limits.max_tensors}"
            )
        if not 0 <= total_bytes <= max_total_bytes:
            raise ChunkTooLargeError(
                f"stream declares {total_bytes} bytes; 0..{max_total_bytes} accepted"
            )
        self.num_tensors = num_tensors
        self.total_bytes = total_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self.limits = limits
        self._tensors: dict[int, _Partial] = {}
        self._names: set[str] = set()
        self._received = 0

    @property
    def received_bytes(self) -> int:
        return self._received

    def add(self, chunk: cluster_pb2.TensorChunk) -> None:
        data = chunk.data  # each read of a bytes field copies it: read it once
        size = len(data)
        if size > self.max_chunk_bytes:
            raise ChunkTooLargeError(
                f"chunk of tensor #{chunk.index} holds {size} bytes; at most "
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
            if len(part.data) >= part.total:
                raise ChunkError(
                    f"tensor {short(part.name)}: chunk after the tensor was complete (duplicate)"
                )
        received = len(part.data)
        if chunk.offset != received:
            kind = "duplicate" if chunk.offset < received else "missing"
            raise ChunkError(
                f"tensor {short(part.name)}: chunk at offset {chunk.offset}, expected "
                f"{received} ({kind} chunk)"
            )
        if size == 0 and part.total > 0:
            # Empty chunks would let a peer keep a stream open without ever progressing.
            raise ChunkError(f"tensor {short(part.name)}: empty chunk")
        if received + size > part.total:
            raise ChunkTooLargeError(
                f"tensor {short(part.name)}: chunks exceed its declared {part.total} bytes"
            )
        if self._received + size > self.total_bytes:
            raise ChunkTooLargeError(f"stream exceeds its declared {self.total_bytes} bytes")
        part.data += data
        part.running_crc = zlib.crc32(data, part.running_crc)
        self._received += size

    def _start(self, chunk: cluster_pb2.TensorChunk) -> _Partial:
        name = chunk.name
        if not name:
            raise ChunkError(f"tensor #{chunk.index} has no name")
        if len(name) > self.limits.max_name_chars:
            raise ChunkError(
                f"tensor #{chunk.index}: name of {len(name)} characters; "
                f"at most {self.limits.max_name_chars}"
            )
        if name in self._names:
            raise ChunkError(f"tensor name {short(name)} appears twice")
        try:
            dtype = check_dtype(name, chunk.dtype)
            shape = check_shape(
                name,
                chunk.shape,
                max_ndim=self.limits.max_ndim,
                max_elements=self.limits.max_elements,
            )
            want = expected_nbytes(name, dtype, shape)
        except TensorError as exc:
            raise ChunkError(str(exc)) from exc
        if chunk.total_bytes != want:
            raise ChunkError(
                f"tensor {short(name)}: declares {chunk.total_bytes} bytes, shape "
                f"{list(shape)} of {chunk.dtype} needs {want}"
            )
        if want > self.total_bytes - self._received:
            raise ChunkTooLargeError(
                f"tensor {short(name)} ({want} bytes) exceeds what is left of the stream's "
                f"declared {self.total_bytes} bytes"
            )
        part = _Partial(name, chunk.dtype, shape, want, chunk.crc32, bytearray())
        self._tensors[chunk.index] = part
        self._names.add(name)
        return part

    @staticmethod
    def _check_same(part: _Partial, chunk: cluster_pb2.TensorChunk) -> None:
        same = (
            chunk.name == part.name
            and chunk.dtype == part.dtype
            and len(chunk.shape) == len(part.shape)
            and tuple(chunk.shape) == part.shape
            and chunk.total_bytes == part.total
            and chunk.crc32 == part.crc
        )
        if not same:
            raise ChunkError(
                f"chunk #{chunk.index} ({short(chunk.name)}) disagrees with the first "
                f"chunk of tensor {short(part.name)} on name, dtype, shape, size or crc"
            )

    def finish(self, *, finite: bool = True) -> dict[str, np.ndarray]:
        """Check completeness and checksums; return the arrays in index order.

        A stream that ended early is described by a count and its first gap, in constant
        memory whatever number of tensors its header declared.
        """
        have = len(self._tensors)
        if have < self.num_tensors:
            first = next(i for i in range(self.num_tensors) if i not in self._tensors)
            raise ChunkError(
                f"stream ended without {self.num_tensors - have} of its {self.num_tensors} "
                f"tensors (first missing: #{first})"
            )
        out: dict[str, np.ndarray] = {}
        for index in range(self.num_tensors):
            part = self._tensors[index]
            if len(part.data) != part.total:
                raise ChunkError(
                    f"tensor {short(part.name)} truncated: {len(part.data)} of {part.total} bytes"
                )
            if part.running_crc != part.crc:
                raise ChunkError(f"tensor {short(part.name)}: CRC-32 mismatch (corrupted data)")
            le = np.dtype(part.dtype).newbyteorder("<")
            arr = np.frombuffer(part.data, dtype=le).reshape(part.shape).astype(part.dtype)
            if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ChunkError(f"tensor {short(part.name)} holds NaN or Inf")
            out[part.name] = arr
        if self._received != self.total_bytes:
            raise ChunkError(f"stream carried {self._received} bytes, declared {self.total_bytes}")
        return out
