"""SparseAssembler: an update's sparse records checked as they arrive, against its header."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.net.sparse import (
    SparseAssembler,
    SparseRecordError,
    SparseTooLargeError,
    encode_sparse,
    wire_bytes,
)


def _rec(name: str, idx: list[int]) -> object:
    return encode_sparse(name, (4, 5), np.asarray(idx), np.ones(len(idx), np.float32))


def test_records_as_declared_are_decoded() -> None:
    recs = [_rec("W0", [1, 7]), _rec("W1", [0])]
    asm = SparseAssembler(2, wire_bytes(recs), max_total_bytes=1 << 20)  # type: ignore[arg-type]
    for r in recs:
        asm.add(r)  # type: ignore[arg-type]
    out = asm.finish()
    assert list(out) == ["W0", "W1"] and out["W0"].indices.tolist() == [1, 7]


def test_declarations_are_enforced_before_and_while_reading() -> None:
    with pytest.raises(SparseTooLargeError):
        SparseAssembler(1, 2_000, max_total_bytes=1_000)
    rec = _rec("W0", [1])
    asm = SparseAssembler(1, wire_bytes([rec]), max_total_bytes=1 << 20)  # type: ignore[list-item]
    asm.add(rec)  # type: ignore[arg-type]
    with pytest.raises(SparseRecordError, match="more than the 1 records"):
        asm.add(rec)  # type: ignore[arg-type]
    small = SparseAssembler(2, 4, max_total_bytes=1 << 20)
    with pytest.raises(SparseTooLargeError, match="exceed"):
        small.add(rec)  # type: ignore[arg-type]
    twice = SparseAssembler(2, 10_000, max_total_bytes=1 << 20)
    twice.add(rec)  # type: ignore[arg-type]
    with pytest.raises(SparseRecordError, match="twice"):
        twice.add(rec)  # type: ignore[arg-type]
    with pytest.raises(SparseRecordError, match="1 records arrived"):
        twice.finish()


def test_a_bad_record_is_refused_on_arrival() -> None:
    rec = _rec("W0", [1, 2])
    rec.index_gaps[1] = 0  # type: ignore[attr-defined]
    asm = SparseAssembler(1, 10_000, max_total_bytes=1 << 20)
    with pytest.raises(SparseRecordError, match="duplicate"):
        asm.add(rec)  # type: ignore[arg-type]
    assert asm.records == {}
