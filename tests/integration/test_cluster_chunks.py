"""Chunked tensor transfer: encoding, reassembly checks, and every malformed-stream case."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from eddl.net import ChunkError, ChunkTooLargeError, Reassembler, encode_tensors, params_nbytes
from eddl.net.tensors import TensorError, array_from_tensor, tensor_from_array
from eddl.proto.v1 import cluster_pb2


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W0": rng.standard_normal((64, 32)).astype(np.float32),
        "b0": np.zeros(32, np.float32),
        "W1": rng.integers(-100, 100, (32, 10)).astype(np.int32),
        "b1": np.array([], np.int8),
    }


def _reassemble(chunks: list[cluster_pb2.TensorChunk], params: dict[str, np.ndarray]) -> dict:
    r = Reassembler(len(params), params_nbytes(params), max_total_bytes=1 << 30)
    for c in chunks:
        r.add(c)
    return r.finish()


def test_round_trip_preserves_names_order_dtypes_and_values() -> None:
    params = _params()
    chunks = list(encode_tensors(params, chunk_bytes=1000))
    assert all(len(c.data) <= 1000 for c in chunks)
    out = _reassemble(chunks, params)
    assert list(out) == list(params)
    for name, arr in params.items():
        assert out[name].dtype == arr.dtype
        np.testing.assert_array_equal(out[name], arr)
        assert out[name].flags.writeable


def test_fifty_megabyte_model_travels_in_chunks_under_the_message_limit() -> None:
    big = {"W0": np.arange(50 * 2**20 // 4, dtype=np.float32).reshape(-1, 1024)}
    chunks = list(encode_tensors(big))
    assert len(chunks) == 50
    assert max(c.ByteSize() for c in chunks) < 4 * 2**20 // 2
    out = _reassemble(chunks, big)
    np.testing.assert_array_equal(out["W0"], big["W0"])


def _chunks() -> tuple[list[cluster_pb2.TensorChunk], dict[str, np.ndarray]]:
    params = _params()
    return list(encode_tensors(params, chunk_bytes=1024)), params


def test_missing_chunk_is_refused() -> None:
    chunks, params = _chunks()
    del chunks[1]
    with pytest.raises(ChunkError, match="missing"):
        _reassemble(chunks, params)


def test_duplicate_chunk_is_refused() -> None:
    chunks, params = _chunks()
    chunks.insert(1, chunks[0])
    with pytest.raises(ChunkError, match="duplicate"):
        _reassemble(chunks, params)


def test_truncated_stream_is_refused_at_finish() -> None:
    chunks, params = _chunks()
    r = Reassembler(len(params), params_nbytes(params), max_total_bytes=1 << 30)
    for c in chunks[:-3]:
        r.add(c)
    with pytest.raises(ChunkError):
        r.finish()


def test_corrupted_bytes_fail_the_checksum() -> None:
    chunks, params = _chunks()
    bad = bytearray(chunks[0].data)
    bad[10] ^= 0xFF
    chunks[0].data = bytes(bad)
    with pytest.raises(ChunkError, match="CRC"):
        _reassemble(chunks, params)


def test_declared_size_above_the_limit_is_refused_before_buffering() -> None:
    with pytest.raises(ChunkTooLargeError):
        Reassembler(1, 10_000, max_total_bytes=9_999)


def test_oversized_chunk_is_refused() -> None:
    params = {"W0": np.zeros((1000,), np.float32)}
    chunks = list(encode_tensors(params, chunk_bytes=4000))
    r = Reassembler(1, 4000, max_total_bytes=1 << 20, max_chunk_bytes=1000)
    with pytest.raises(ChunkTooLargeError):
        r.add(chunks[0])


def test_chunks_beyond_the_declared_total_are_refused() -> None:
    params = {"W0": np.zeros((1000,), np.float32)}
    chunks = list(encode_tensors(params, chunk_bytes=4000))
    r = Reassembler(1, 2000, max_total_bytes=1 << 20)
    with pytest.raises(ChunkTooLargeError):
        r.add(chunks[0])


def test_chunk_disagreeing_with_its_tensor_header_is_refused() -> None:
    chunks, params = _chunks()
    chunks[1].shape[:] = [32, 64]
    with pytest.raises(ChunkError, match="disagrees"):
        _reassemble(chunks, params)


def test_shape_inconsistent_with_declared_size_is_refused() -> None:
    c = cluster_pb2.TensorChunk(
        index=0,
        name="W0",
        dtype="float32",
        shape=[3],
        total_bytes=8,
        offset=0,
        data=b"\0" * 8,
        crc32=zlib.crc32(b"\0" * 8),
    )
    r = Reassembler(1, 8, max_total_bytes=100)
    with pytest.raises(ChunkError, match="needs 12"):
        r.add(c)


@pytest.mark.parametrize("dtype", ["object", "complex64", "float16", ""])
def test_unknown_dtype_is_refused(dtype: str) -> None:
    c = cluster_pb2.TensorChunk(
        index=0,
        name="W0",
        dtype=dtype,
        shape=[1],
        total_bytes=4,
        offset=0,
        data=b"\0" * 4,
        crc32=zlib.crc32(b"\0" * 4),
    )
    r = Reassembler(1, 4, max_total_bytes=100)
    with pytest.raises(ChunkError, match="not allowed"):
        r.add(c)


def test_nan_is_refused_at_finish() -> None:
    params = {"W0": np.array([1.0, np.nan], np.float32)}
    with pytest.raises(ChunkError, match="NaN"):
        _reassemble(list(encode_tensors(params)), params)


def test_index_beyond_declared_tensor_count_is_refused() -> None:
    chunks, params = _chunks()
    r = Reassembler(2, params_nbytes(params), max_total_bytes=1 << 30)
    with pytest.raises(ChunkError, match="declares 2"):
        for c in chunks:
            r.add(c)


def test_repeated_tensor_name_is_refused() -> None:
    chunks, params = _chunks()
    first = next(c for c in chunks if c.index == 1)
    twin = cluster_pb2.TensorChunk()
    twin.CopyFrom(first)
    twin.index = 0
    r = Reassembler(4, params_nbytes(params), max_total_bytes=1 << 30)
    r.add(first)
    with pytest.raises(ChunkError, match="twice"):
        r.add(twin)


def test_tensor_records_round_trip_and_refuse_bad_sizes() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    t = tensor_from_array("x", x)
    np.testing.assert_array_equal(array_from_tensor(t), x)
    t.data = t.data[:-1]
    with pytest.raises(TensorError, match="needs 12"):
        array_from_tensor(t)
    bad = tensor_from_array("y", np.array([np.inf], np.float32))
    with pytest.raises(TensorError, match="NaN or Inf"):
        array_from_tensor(bad)
