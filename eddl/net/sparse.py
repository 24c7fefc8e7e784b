"""Sparse tensor updates on the wire: the top-P entries of a tensor as index + value records.

A :class:`~eddl.proto.v1.common_pb2.SparseTensor` carries one tensor's kept entries: its dense
``shape``, a declared ``count``, strictly increasing flat indexes as gaps (packed varints, so a
10% selection spends about one byte per index) and ``count`` values, either float32 or int8
with one float ``scale`` (``value = q · scale``, ``scale = max|v| / 127``).

:func:`decode_sparse` checks a record before it allocates anything from it — dtype, shape and
dense size within ``max_elements``, ``count`` within the dense size and ``max_entries``, the
index and value lengths equal to the count — then the indexes themselves: every one inside
the tensor, no duplicate (a zero gap), and finite values. :func:`decode_sparse_update` does
the same for a whole upload against the tensors the receiver expects (unknown, repeated or
misshapen names refused). Every refusal is a :class:`SparseRecordError`.
:func:`wire_bytes` is the serialised size of records, the number benchmarks report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from eddl.proto.v1 import common_pb2

__all__ = [
    "MAX_SPARSE_ELEMENTS",
    "VALUE_DTYPES",
    "SparseAssembler",
    "SparseRecord",
    "SparseRecordError",
    "SparseTooLargeError",
    "decode_sparse",
    "decode_sparse_update",
    "encode_sparse",
    "wire_bytes",
]

VALUE_DTYPES = ("float32", "int8")
# A dense tensor of 2^28 float32 entries is 1 GiB: no model a node trains comes near it.
MAX_SPARSE_ELEMENTS = 1 << 28
_MAX_DIMS = 8
_MAX_NAME = 256


class SparseRecordError(ValueError):
    """A sparse record is malformed or does not fit the tensor it claims to update."""


class SparseTooLargeError(SparseRecordError):
    """A sparse record declares more entries or a larger tensor than the receiver accepts."""


@dataclass(frozen=True)
class SparseRecord:
    """A decoded record: sorted unique int64 flat ``indices`` and float32 ``values``."""

    name: str
    shape: tuple[int, ...]
    indices: np.ndarray
    values: np.ndarray

    def dense(self) -> np.ndarray:
        """The float32 tensor: the values at their indexes, zeros elsewhere."""
        out = np.zeros(math.prod(self.shape), dtype=np.float32)
        out[self.indices] = self.values
        return out.reshape(self.shape)


def encode_sparse(
    name: str,
    shape: tuple[int, ...],
    indices: np.ndarray,
    values: np.ndarray,
    *,
    value_dtype: str = "float32",
) -> common_pb2.SparseTensor:
    """One record; ``indices`` strictly increasing flat indexes, ``values`` as many floats."""
    idx = np.asarray(indices, dtype=np.int64)
    val = np.asarray(values, dtype=np.float32)
    size = math.prod(shape)
    if idx.ndim != 1 or val.shape != idx.shape:
        raise SparseRecordError(f"{name}: indices and values must be 1-D of equal length")
    if idx.size and (idx[0] < 0 or idx[-1] >= size or np.any(np.diff(idx) <= 0)):
        raise SparseRecordError(f"{name}: indices must be strictly increasing in 0..{size - 1}")
    if not np.isfinite(val).all():
        raise SparseRecordError(f"{name}: values hold NaN or Inf")
    gaps = np.diff(idx, prepend=0).astype(np.uint32) if idx.size else np.zeros(0, np.uint32)
    msg = common_pb2.SparseTensor(
        name=name, shape=list(shape), count=int(idx.size), value_dtype=value_dtype
    )
    msg.index_gaps.extend(gaps.tolist())
    if value_dtype == "float32":
        msg.values = val.astype("<f4").tobytes()
    elif value_dtype == "int8":
        top = float(np.max(np.abs(val))) if val.size else 0.0
        scale = np.float32(top / 127.0) if top > 0 else np.float32(1.0)
        q = np.clip(np.rint(val / scale), -127, 127).astype(np.int8)
        msg.values = q.tobytes()
        msg.scale = float(scale)
    else:
        raise SparseRecordError(f"{name}: value dtype must be one of {VALUE_DTYPES}")
    return msg


def decode_sparse(
    msg: common_pb2.SparseTensor,
    *,
    expected_shape: tuple[int, ...] | None = None,
    max_entries: int | None = None,
    max_elements: int = MAX_SPARSE_ELEMENTS,
) -> SparseRecord:
    """Check and decode one record (see the module docstring)."""
    name = msg.name
    if not name or len(name) > _MAX_NAME:
        raise SparseRecordError(f"sparse record needs a name of 1..{_MAX_NAME} characters")
    if msg.value_dtype not in VALUE_DTYPES:
        raise SparseRecordError(f"{name}: value dtype {msg.value_dtype!r} not in {VALUE_DTYPES}")
    shape = tuple(int(d) for d in msg.shape)
    if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
        raise SparseRecordError(f"{name}: bad shape {list(shape)}")
    size = 1
    for d in shape:  # Python ints and an early exit: a huge declared shape never overflows
        size *= d
        if size > max_elements:
            raise SparseTooLargeError(f"{name}: shape {list(shape)} exceeds {max_elements} entries")
    if expected_shape is not None and shape != tuple(expected_shape):
        raise SparseRecordError(f"{name}: shape {list(shape)}, expected {list(expected_shape)}")
    count = int(msg.count)
    if count > size:
        raise SparseTooLargeError(f"{name}: {count} entries declared for a tensor of {size}")
    if max_entries is not None and count > max_entries:
        raise SparseTooLargeError(f"{name}: {count} entries declared, at most {max_entries}")
    if len(msg.index_gaps) != count:
        raise SparseRecordError(f"{name}: {len(msg.index_gaps)} indexes for {count} entries")
    itemsize = 4 if msg.value_dtype == "float32" else 1
    if len(msg.values) != count * itemsize:
        raise SparseRecordError(
            f"{name}: {len(msg.values)} value bytes for {count} {msg.value_dtype} entries"
        )
    gaps = np.fromiter(msg.index_gaps, dtype=np.int64, count=count)
    if count > 1 and int(gaps[1:].min()) < 1:
        at = int(np.flatnonzero(gaps[1:] < 1)[0]) + 1
        raise SparseRecordError(f"{name}: duplicate index at entry {at}")
    indices = np.cumsum(gaps)
    if count and int(indices[-1]) >= size:
        raise SparseRecordError(f"{name}: index {int(indices[-1])} outside a tensor of {size}")
    if msg.value_dtype == "float32":
        values = np.frombuffer(msg.values, dtype="<f4").astype(np.float32)
    else:
        scale = float(msg.scale)
        if not (math.isfinite(scale) and scale > 0):
            raise SparseRecordError(f"{name}: int8 values need a finite scale > 0, got {scale}")
        q = np.frombuffer(msg.values, dtype=np.int8)
        values = (q.astype(np.float32) * np.float32(scale)).astype(np.float32)
    if not np.isfinite(values).all():
        raise SparseRecordError(f"{name}: values hold NaN or Inf")
    return SparseRecord(name, shape, indices, values)


def decode_sparse_update(
    msgs: Iterable[common_pb2.SparseTensor],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    max_entries: int | None = None,
) -> dict[str, SparseRecord]:
    """Decode an upload of records for the tensors in ``shapes``; names at most once each."""
    out: dict[str, SparseRecord] = {}
    for msg in msgs:
        if msg.name not in shapes:
            raise SparseRecordError(f"{msg.name!r}: not a tensor this upload may update")
        if msg.name in out:
            raise SparseRecordError(f"{msg.name!r}: sent twice in one upload")
        out[msg.name] = decode_sparse(msg, expected_shape=shapes[msg.name], max_entries=max_entries)
    return out


def wire_bytes(msgs: Iterable[common_pb2.SparseTensor | common_pb2.Tensor]) -> int:
    """Serialised size of the records: what they cost on the wire, field tags included."""
    return sum(len(m.SerializeToString()) for m in msgs)


class SparseAssembler:
    """The sparse records of one update stream, checked as they arrive.

    The header declares ``num_records`` and ``total_bytes`` (the records' serialised size);
    more records or bytes than declared, or than ``max_total_bytes``, are refused at once, and
    every record is decoded with :func:`decode_sparse`'s checks when it arrives, so a bad one
    is refused before the rest is read. Names are unique within an update.
    """

    def __init__(self, num_records: int, total_bytes: int, *, max_total_bytes: int) -> None:
        if total_bytes > max_total_bytes:
            raise SparseTooLargeError(
                f"update declares {total_bytes} bytes of records; at most {max_total_bytes}"
            )
        self.num_records = num_records
        self.total_bytes = total_bytes
        self.received_bytes = 0
        self.records: dict[str, SparseRecord] = {}

    def add(self, msg: common_pb2.SparseTensor) -> None:
        if len(self.records) >= self.num_records:
            raise SparseRecordError(f"more than the {self.num_records} records declared")
        self.received_bytes += msg.ByteSize()
        if self.received_bytes > self.total_bytes:
            raise SparseTooLargeError(
                f"records exceed the {self.total_bytes} bytes the header declares"
            )
        if msg.name in self.records:
            raise SparseRecordError(f"{msg.name!r}: sent twice in one upload")
        self.records[msg.name] = decode_sparse(msg)

    def finish(self) -> dict[str, SparseRecord]:
        if len(self.records) != self.num_records:
            raise SparseRecordError(
                f"{len(self.records)} records arrived, the header declares {self.num_records}"
            )
        if self.received_bytes != self.total_bytes:
            raise SparseRecordError(
                f"{self.received_bytes} bytes of records arrived, the header declares "
                f"{self.total_bytes}"
            )
        return dict(self.records)
