"""COBS byte stuffing and the frame layer of the serial protocol (DESIGN.md section 5).

On the wire a frame is ``COBS(header | payload | crc32) 0x00``; the header is
``{version u8, type u8, seq u16 LE, length u16 LE}`` and the CRC-32 (little endian) covers header
and payload. :class:`FrameReader` cuts a byte stream at the ``0x00`` delimiters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .crc import crc32

__all__ = [
    "CRC_BYTES",
    "HEADER",
    "Frame",
    "FrameError",
    "FrameReader",
    "cobs_decode",
    "cobs_encode",
    "decode_frame",
    "encode_frame",
]

HEADER = struct.Struct("<BBHH")
CRC_BYTES = 4


class FrameError(ValueError):
    """Bytes between two delimiters are not a valid frame (COBS, length or CRC)."""


@dataclass(frozen=True)
class Frame:
    version: int
    type: int
    seq: int
    payload: bytes


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data``: the result holds no ``0x00`` and is at most ``n + n//254 + 1``.

    The cost is per zero-free run, so data with few zeros (random bytes, float32) goes through
    ``bytes.split`` and slicing, and zero-heavy data (small int32 weights, where a Python loop
    would run once per zero) through numpy, in a fixed number of vector passes.
    """
    data = bytes(data)
    if len(data) >= _VECTOR_MIN and data.count(0) > len(data) // _ZERO_HEAVY:
        return _cobs_encode_np(data)
    runs = data.split(b"\x00")
    parts: list[bytes] = []
    for run in runs:
        n = len(run)
        start = 0
        while n - start >= 254:
            parts += (b"\xff", run[start : start + 254])
            start += 254
        parts += (_CODE[n - start + 1], run[start:])
    if runs[-1] and len(runs[-1]) % 254 == 0:
        del parts[-2:]  # a full group at the very end needs no empty group after it
    return b"".join(parts)


_CODE = [bytes((i,)) for i in range(256)]  # the code byte of a group, without a bytes() call
# Above one zero per this many bytes (random bytes have one per 256), numpy beats the run loop.
_ZERO_HEAVY = 128
_VECTOR_MIN = 256  # below this, numpy's fixed cost per call exceeds the whole loop


def _cobs_encode_np(data: bytes) -> bytes:
    """:func:`cobs_encode` in vector passes: the output is the non-zero input bytes in order,
    with one code byte (group length + 1) in front of each group."""
    a = np.frombuffer(data, dtype=np.uint8)
    n = a.size
    zeros = np.flatnonzero(a == 0)
    starts = np.empty(zeros.size + 1, dtype=np.intp)  # of the zero-free runs
    starts[0] = 0
    starts[1:] = zeros + 1
    ends = np.empty_like(starts)
    ends[:-1] = zeros
    ends[-1] = n
    lens = ends - starts
    if int(lens.max()) < 254:  # one group per run: each zero becomes the next run's code
        out = np.empty(n + 1, dtype=np.uint8)
        out[1:] = a
        out[starts] = lens + 1
        return out.tobytes()
    groups = lens // 254 + 1  # full groups of 254, then one that ends at the zero
    if lens[-1] and lens[-1] % 254 == 0:
        groups[-1] -= 1  # no empty group after a full one at the very end
    run = np.repeat(np.arange(groups.size), groups)
    k = np.arange(run.size)
    gstart = starts[run] + 254 * (k - np.repeat(np.cumsum(groups) - groups, groups))
    gend = np.minimum(gstart + 254, ends[run])
    out = np.empty(n - zeros.size + k.size, dtype=np.uint8)
    code_at = gstart - run + k  # k codes before it, run zeros dropped before it
    keep = np.ones(out.size, dtype=bool)
    keep[code_at] = False
    out[keep] = a[a != 0]
    out[code_at] = gend - gstart + 1
    return out.tobytes()


def cobs_decode(data: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raises :class:`FrameError` on malformed input."""
    if 0 in data:
        raise FrameError("COBS: zero byte inside a frame")
    parts: list[bytes] = []
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise FrameError("COBS: group runs past the end of the frame")
        parts.append(data[i + 1 : end])
        if code != 0xFF and end < n:
            parts.append(b"\x00")
        i = end
    return b"".join(parts)


def encode_frame(version: int, type_: int, seq: int, payload: bytes) -> bytes:
    """Header, payload and CRC, COBS-encoded, with the trailing ``0x00`` delimiter."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq must fit in u16, got {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame")
    header = HEADER.pack(version, type_, seq, len(payload))
    crc = struct.pack("<I", crc32(payload, crc32(header)))
    return cobs_encode(b"".join((header, payload, crc))) + b"\x00"


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame (without its delimiter); raises :class:`FrameError` if invalid."""
    raw = cobs_decode(encoded)
    if len(raw) < HEADER.size + CRC_BYTES:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than header and CRC")
    body, (crc,) = raw[:-CRC_BYTES], struct.unpack("<I", raw[-CRC_BYTES:])
    if crc32(body) != crc:
        raise FrameError("CRC mismatch")
    version, type_, seq, length = HEADER.unpack_from(body)
    if length != len(body) - HEADER.size:
        raise FrameError(f"length field {length} but {len(body) - HEADER.size} payload bytes")
    return Frame(version, type_, seq, bytes(body[HEADER.size :]))


class FrameReader:
    """Collects stream bytes and returns complete encoded frames (delimiters stripped).

    A frame longer than ``max_encoded`` is dropped whole and reported as ``None`` in the
    output, so a caller can count it without holding unbounded data.
    """

    def __init__(self, max_encoded: int) -> None:
        self._max = max_encoded
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes | None]:
        frames: list[bytes | None] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return frames
            self._append(data[start:end])
            if self._overflow:
                frames.append(None)
            elif self._buf:
                frames.append(bytes(self._buf))
            self._buf.clear()
            self._overflow = False
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        if len(self._buf) + len(chunk) > self._max:
            self._overflow = True
            self._buf.clear()
        else:
            self._buf += chunk

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False
