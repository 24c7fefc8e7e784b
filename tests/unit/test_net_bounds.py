"""Bounded inputs of the chunk reassembler: every declaration a peer makes is checked before it
is used, memory follows what arrived (not what was declared), and error texts stay short.

The fuzz tests are seeded (``derandomize``) and bounded in examples; they assert that nothing
but the typed errors (:class:`ChunkError`, :class:`TensorError`) ever comes out.
"""

from __future__ import annotations

import tracemalloc
import zlib

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eddl.net import ChunkError, ChunkLimits, ChunkTooLargeError, Reassembler, encode_tensors
from eddl.net.status import MAX_DETAIL_CHARS, _message, status_for
from eddl.net.tensors import TensorError, array_from_tensor
from eddl.proto.v1 import cluster_pb2, common_pb2

GIB = 1 << 30
U32_MAX = (1 << 32) - 1


def _peak(fn: object) -> tuple[int, BaseException | None]:
    """Peak traced allocation (bytes) while ``fn()`` runs, and what it raised."""
    assert callable(fn)
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        fn()
    except Exception as exc:
        raised = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, raised


def test_header_declaring_two_to_the_32_tensors_is_refused_in_constant_memory() -> None:
    peak, raised = _peak(lambda: Reassembler(U32_MAX, 0, max_total_bytes=GIB))
    assert isinstance(raised, ChunkTooLargeError)
    assert "at most 4096" in str(raised)
    assert peak < 64 * 1024


def test_finish_of_a_huge_declared_stream_is_constant_memory_with_a_short_text() -> None:
    """Even with the tensor limit lifted, an ended stream is described by a count and its
    first gap, not a list of every missing tensor (which took 1.96 GB for 2*10^7)."""
    r = Reassembler(U32_MAX, 8, max_total_bytes=GIB, limits=ChunkLimits(max_tensors=U32_MAX))
    r.add(next(encode_tensors({"w": np.zeros(2, np.float32)})))
    peak, raised = _peak(r.finish)
    assert isinstance(raised, ChunkError)
    assert str(raised) == (
        f"stream ended without {U32_MAX - 1} of its {U32_MAX} tensors (first missing: #1)"
    )
    assert peak < 64 * 1024


def _chunk(**fields: object) -> cluster_pb2.TensorChunk:
    base: dict[str, object] = {
        "index": 0,
        "name": "W0",
        "dtype": "float32",
        "shape": [2],
        "total_bytes": 8,
        "offset": 0,
        "data": b"\0" * 8,
        "crc32": zlib.crc32(b"\0" * 8),
    }
    base.update(fields)
    return cluster_pb2.TensorChunk(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"shape": [1] * 9}, "9 dimensions, at most 8"),
        ({"shape": [0, 2**40, 2**40]}, "more than 2147483648 elements"),
        ({"name": "x" * 257}, "name of 257 characters"),
        ({"total_bytes": 2**63, "shape": [2**31 - 1]}, "declares 9223372036854775808"),
    ],
)
def test_declared_shapes_names_and_sizes_are_bounded(fields: dict[str, object], match: str) -> None:
    r = Reassembler(1, 8, max_total_bytes=1 << 20)
    with pytest.raises(ChunkError, match=match):
        r.add(_chunk(**fields))
    # Nothing was taken in: a good first chunk is still accepted.
    r.add(_chunk())
    assert r.received_bytes == 8


def test_zero_size_tensor_with_large_zero_dimension_shapes_round_trips() -> None:
    params = {"empty": np.zeros((0, 1000, 1000), np.float32), "w": np.ones(3, np.int8)}
    r = Reassembler(2, 3, max_total_bytes=100)
    for c in encode_tensors(params):
        r.add(c)
    out = r.finish()
    assert out["empty"].shape == (0, 1000, 1000) and out["w"].tolist() == [1, 1, 1]


def test_empty_chunk_of_a_non_empty_tensor_is_refused() -> None:
    r = Reassembler(1, 8, max_total_bytes=100)
    with pytest.raises(ChunkError, match="empty chunk"):
        r.add(_chunk(data=b""))


def test_one_byte_chunks_cost_what_they_carry() -> None:
    """Many tiny chunks are appended to one buffer per tensor, not kept as objects each."""
    data = np.arange(1 << 18, dtype=np.uint8)
    chunks = list(encode_tensors({"x": data}, chunk_bytes=1))
    r = Reassembler(1, data.nbytes, max_total_bytes=1 << 20)

    def feed() -> None:
        for c in chunks:
            r.add(c)

    peak, raised = _peak(feed)
    assert raised is None
    assert peak < 3 * data.nbytes
    np.testing.assert_array_equal(r.finish()["x"], data)


def test_peer_supplied_names_are_quoted_short_and_status_texts_are_capped() -> None:
    r = Reassembler(1, 8, max_total_bytes=100, limits=ChunkLimits(max_name_chars=10**7))
    r.add(_chunk(name="n" * 10**6))
    with pytest.raises(ChunkError) as info:
        r.add(_chunk(name="m" * 10**6, offset=8))
    assert len(str(info.value)) < 300
    long = ValueError("v" * 10**6)
    assert len(_message(long)) == MAX_DETAIL_CHARS
    assert status_for(ChunkTooLargeError("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tensor_records_bound_their_shape_before_numpy_sees_it() -> None:
    t = common_pb2.Tensor(name="x", dtype="float32", shape=[0, 2**62, 4], data=b"")
    with pytest.raises(TensorError, match="elements"):
        array_from_tensor(t)


# ---- fuzzing: seeded, bounded, typed errors only ----

_FUZZ = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_chunks = st.builds(
    cluster_pb2.TensorChunk,
    index=st.integers(0, U32_MAX),
    name=st.sampled_from(["", "W0", "b0", "W0" * 200]) | st.text(max_size=8),
    dtype=st.sampled_from(["float32", "int8", "int32", "float64", "object", ""]),
    shape=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=10),
    total_bytes=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**64 - 1),
    data=st.binary(max_size=64),
    crc32=st.integers(0, U32_MAX),
)


@_FUZZ
@given(
    num=st.integers(-2, U32_MAX),
    total=st.integers(0, 2**64 - 1),
    chunks=st.lists(_chunks, max_size=6),
)
def test_fuzz_reassembler_with_arbitrary_chunks_raises_only_typed_errors(
    num: int, total: int, chunks: list[cluster_pb2.TensorChunk]
) -> None:
    try:
        r = Reassembler(num, total, max_total_bytes=1 << 20)
        for c in chunks:
            r.add(c)
        r.finish()
    except ChunkError as exc:
        assert len(str(exc)) <= 400


_GOOD = [
    c.SerializeToString()
    for c in encode_tensors(
        {"W0": np.arange(12, dtype=np.float32).reshape(3, 4), "b0": np.ones(4, np.int32)},
        chunk_bytes=16,
    )
]


@_FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(0, 200), st.integers(0, 255)),
        max_size=8,
    ),
    drop=st.sets(st.integers(0, len(_GOOD) - 1), max_size=2),
)
def test_fuzz_reassembler_with_byte_mutated_chunks_raises_only_typed_errors(
    edits: list[tuple[int, int, int]], drop: set[int]
) -> None:
    wire = [bytearray(b) for b in _GOOD]
    for which, at, value in edits:
        if wire[which]:
            wire[which][at % len(wire[which])] = value
    r = Reassembler(2, 64, max_total_bytes=1 << 20)
    try:
        for i, raw in enumerate(wire):
            if i in drop:
                continue
            try:
                chunk = cluster_pb2.TensorChunk.FromString(bytes(raw))
            except DecodeError:
                continue  # gRPC refuses a message that does not parse before a handler runs
            r.add(chunk)
        out = r.finish()
    except ChunkError:
        return
    # A stream that got through carries exactly the bytes that were sent (a mutated name may
    # survive: the wire said so, and the CRC covers the data only).
    sent = [np.arange(12, dtype="<f4").tobytes(), np.ones(4, "<i4").tobytes()]
    got = [
        np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes() for a in out.values()
    ]
    assert got == sent
