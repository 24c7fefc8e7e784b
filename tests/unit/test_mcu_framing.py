"""COBS, CRC-32 and the frame layer of the serial protocol."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eddl.mcu import framing
from eddl.mcu.crc import CHECK_VALUE, crc32
from eddl.mcu.framing import (
    FrameError,
    FrameReader,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
)


def test_crc32_check_value() -> None:
    assert crc32(b"123456789") == CHECK_VALUE
    assert crc32(b"6789", crc32(b"12345")) == CHECK_VALUE


@pytest.mark.parametrize(
    "raw,encoded",
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data


def _cobs_by_bytes(data: bytes) -> bytes:
    """The textbook byte-at-a-time encoder, as the firmware's cobs.c."""
    out = bytearray([0])
    code_at, code = 0, 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF and i + 1 < len(data):
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


# Zero-heavy (the vector path), zero-free runs across the 254-byte group limit (both paths).
_SPARSE = st.lists(st.tuples(st.integers(0, 600), st.integers(0, 3)), max_size=12).map(
    lambda parts: b"".join(b"\x07" * run + b"\x00" * zeros for run, zeros in parts)
)


@given(st.one_of(st.binary(max_size=3000), _SPARSE, st.binary(max_size=600).map(lambda b: b * 5)))
def test_cobs_encoders_agree_with_the_byte_loop(data: bytes) -> None:
    assert cobs_encode(data) == _cobs_by_bytes(data)
    assert b"".join(framing._cobs_parts_np(data)) == _cobs_by_bytes(data)


@pytest.mark.parametrize("n", [253, 254, 255, 508, 509, 65535])
@pytest.mark.parametrize("fill", [b"\x00", b"\x05", b"\x00\x00\x00\x09"])
def test_cobs_large_frames_on_both_paths(n: int, fill: bytes) -> None:
    data = (fill * n)[:n]
    assert cobs_encode(data) == _cobs_by_bytes(data) == b"".join(framing._cobs_parts_np(data))
    assert cobs_decode(cobs_encode(data)) == data


def _uncobs_by_bytes(data: bytes) -> bytes:
    """The textbook decoder, one group at a time."""
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        out += data[i + 1 : i + code]
        i += code
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


# Runs of non-zero bytes around the 254-byte group limit, and runs of zeros, in any order.
_RUNS = st.lists(
    st.one_of(
        st.integers(0, 600).map(lambda n: b"\x07" * n),
        st.sampled_from([253, 254, 255, 508, 509]).map(lambda n: bytes(range(1, 256))[:n] * 2),
        st.integers(1, 300).map(bytes),
    ),
    max_size=10,
).map(b"".join)


@given(st.one_of(st.binary(max_size=3000), _RUNS, _SPARSE))
def test_cobs_decoders_agree_with_the_byte_loop(data: bytes) -> None:
    encoded = _cobs_by_bytes(data)
    assert _uncobs_by_bytes(encoded) == data
    assert cobs_decode(encoded) == data  # the loop (short) or the vector path (long)
    assert cobs_decode(memoryview(encoded)) == data


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 256, 507, 508, 509, 65535])
@pytest.mark.parametrize("fill", [b"\x00", b"\x05", b"\x00\x00\x00\x09", b"\x01\x00"])
def test_cobs_round_trip_at_group_boundaries(n: int, fill: bytes) -> None:
    data = (fill * n)[:n]
    for tail in (b"", b"\x00", b"\x08" * 254, b"\x08" * 255):
        assert cobs_decode(cobs_encode(data + tail)) == data + tail
        assert cobs_encode(data + tail) == _cobs_by_bytes(data + tail)


@pytest.mark.parametrize(
    "bad",
    [
        b"\x00",
        b"\x05\x01\x02",
        b"\x03\x01\x00",
        b"\xff" + b"\x01" * 200,  # long enough for the vector path, group past the end
        b"\x02\x01" * 200 + b"\x00\x01",  # a zero inside a long frame
        b"\x02\x01" * 200 + b"\x09",
    ],
)
def test_cobs_decode_refuses_malformed(bad: bytes) -> None:
    with pytest.raises(FrameError):
        cobs_decode(bad)


def test_encode_frame_with_a_leading_delimiter() -> None:
    plain = encode_frame(1, 2, 3, b"\x00abc" * 100)
    assert encode_frame(1, 2, 3, b"\x00abc" * 100, lead=True) == b"\x00" + plain


@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=1100))
def test_frame_round_trip(type_: int, seq: int, payload: bytes) -> None:
    wire = encode_frame(1, type_, seq, payload)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    frame = decode_frame(wire[:-1])
    assert (frame.version, frame.type, frame.seq, frame.payload) == (1, type_, seq, payload)


def test_frame_layout_is_header_payload_crc() -> None:
    raw = cobs_decode(encode_frame(1, 0x05, 0x1234, b"ab")[:-1])
    assert raw[:6] == bytes([1, 5, 0x34, 0x12, 2, 0])
    assert raw[6:8] == b"ab"
    assert struct.unpack("<I", raw[8:])[0] == crc32(raw[:8])


@given(st.binary(min_size=1, max_size=64), st.integers(0, 10_000))
def test_any_single_bit_flip_is_detected(payload: bytes, where: int) -> None:
    raw = bytearray(cobs_decode(encode_frame(1, 3, 7, payload)[:-1]))
    bit = where % (len(raw) * 8)
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):
        decode_frame(cobs_encode(bytes(raw)))


def test_decode_refuses_short_and_inconsistent_frames() -> None:
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(cobs_encode(b"\x01\x02\x03"))
    body = framing.HEADER.pack(1, 1, 1, 9)
    with pytest.raises(FrameError, match="length"):
        decode_frame(cobs_encode(body + struct.pack("<I", crc32(body))))


def test_encode_refuses_bad_seq_and_huge_payload() -> None:
    with pytest.raises(ValueError):
        encode_frame(1, 1, 0x10000, b"")
    with pytest.raises(ValueError):
        encode_frame(1, 1, 0, bytes(0x10000))


def test_reader_splits_stream_and_reports_overflow() -> None:
    reader = FrameReader(max_encoded=8)
    assert reader.feed(b"\x00abc") == []
    assert reader.feed(b"d\x00\x00ef\x00") == [b"abcd", b"ef"]
    assert reader.feed(b"0123456789\x00gh\x00") == [None, b"gh"]
    reader.feed(b"partial")
    reader.reset()
    assert reader.feed(b"x\x00") == [b"x"]
