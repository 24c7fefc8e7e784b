"""Sparse update records: round trips, measured size, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.net.sparse import (
    SparseRecordError,
    SparseTooLargeError,
    decode_sparse,
    decode_sparse_update,
    encode_sparse,
    wire_bytes,
)
from eddl.proto.v1 import common_pb2


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 299), min_size=0, max_size=300), st.sampled_from(["float32", "int8"]))
def test_round_trip(picked: set[int], dtype: str) -> None:
    idx = np.array(sorted(picked), dtype=np.int64)
    vals = np.linspace(-2, 3, idx.size).astype(np.float32)
    msg = common_pb2.SparseTensor.FromString(
        encode_sparse("W0", (10, 30), idx, vals, value_dtype=dtype).SerializeToString()
    )
    rec = decode_sparse(msg, expected_shape=(10, 30))
    np.testing.assert_array_equal(rec.indices, idx)
    if dtype == "float32":
        np.testing.assert_array_equal(rec.values, vals)
    else:  # int8: within half a quantisation step
        step = float(np.abs(vals).max(initial=0)) / 127
        assert np.all(np.abs(rec.values - vals) <= step / 2 + 1e-6)


def test_wire_bytes_is_the_serialised_size_and_int8_is_smaller() -> None:
    idx = np.arange(0, 1000, 10)
    vals = np.ones(100, dtype=np.float32)
    f32 = encode_sparse("W0", (1000,), idx, vals)
    i8 = encode_sparse("W0", (1000,), idx, vals, value_dtype="int8")
    assert wire_bytes([f32]) == len(f32.SerializeToString())
    assert wire_bytes([i8]) < wire_bytes([f32]) < 4 * 1000


def _msg(**fields: object) -> common_pb2.SparseTensor:
    base: dict[str, object] = {
        "name": "W0",
        "shape": [4, 4],
        "count": 2,
        "index_gaps": [1, 3],
        "value_dtype": "float32",
        "values": np.ones(2, dtype="<f4").tobytes(),
    }
    base.update(fields)
    return common_pb2.SparseTensor(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"index_gaps": [1, 15]}, SparseRecordError),  # index 16 outside 16 entries
        ({"index_gaps": [3, 0]}, SparseRecordError),  # duplicate
        ({"count": 17}, SparseTooLargeError),  # more entries than the tensor holds
        ({"count": 3}, SparseRecordError),  # count disagrees with the indexes
        ({"values": b"\x00" * 12}, SparseRecordError),
        ({"value_dtype": "float64"}, SparseRecordError),
        ({"shape": [1 << 20, 1 << 20]}, SparseTooLargeError),
        ({"shape": [-1, 4]}, SparseRecordError),
        ({"name": ""}, SparseRecordError),
        ({"values": np.array([1, np.nan], dtype="<f4").tobytes()}, SparseRecordError),
        ({"value_dtype": "int8", "values": b"\x01\x02", "scale": 0.0}, SparseRecordError),
    ],
)
def test_bad_records_are_refused(fields: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_sparse(_msg(**fields))


def test_limits_of_the_receiver() -> None:
    with pytest.raises(SparseTooLargeError):
        decode_sparse(_msg(), max_entries=1)
    with pytest.raises(SparseRecordError):
        decode_sparse(_msg(), expected_shape=(16,))
    with pytest.raises(SparseRecordError, match="not a tensor"):
        decode_sparse_update([_msg(name="W9")], {"W0": (4, 4)})
    with pytest.raises(SparseRecordError, match="twice"):
        decode_sparse_update([_msg(), _msg()], {"W0": (4, 4)})


def test_encoder_refuses_unsorted_or_out_of_range_indices() -> None:
    with pytest.raises(SparseRecordError):
        encode_sparse("a", (4,), np.array([2, 1]), np.ones(2, dtype=np.float32))
    with pytest.raises(SparseRecordError):
        encode_sparse("a", (4,), np.array([4]), np.ones(1, dtype=np.float32))
