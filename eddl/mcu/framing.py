"""COBS byte stuffing and the frame layer of the serial protocol (DESIGN.md section 5).

On the wire a frame is ``COBS(header | payload | crc32) 0x00``; the header is
``{version u8, type u8, seq u16 LE, length u16 LE}`` and the CRC-32 (little endian) covers header
and payload. :class:`FrameReader` cuts a byte stream at the ``0x00`` delimiters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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

    Works on the zero-free runs between zeros (slicing, not a byte loop): each run becomes
    groups of at most 254 bytes led by their length + 1; a group of 254 implies no zero.
    """
    out = bytearray()
    runs = bytes(data).split(b"\x00")
    for i, run in enumerate(runs):
        last_run = i == len(runs) - 1
        start = 0
        while len(run) - start >= 254:
            out.append(0xFF)
            out += run[start : start + 254]
            start += 254
            if last_run and start == len(run):
                return bytes(out)
        out.append(len(run) - start + 1)
        out += run[start:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raises :class:`FrameError` on malformed input."""
    if 0 in data:
        raise FrameError("COBS: zero byte inside a frame")
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise FrameError("COBS: group runs past the end of the frame")
        out += data[i + 1 : end]
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(version: int, type_: int, seq: int, payload: bytes) -> bytes:
    """Header, payload and CRC, COBS-encoded, with the trailing ``0x00`` delimiter."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq must fit in u16, got {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame")
    body = HEADER.pack(version, type_, seq, len(payload)) + payload
    return cobs_encode(body + struct.pack("<I", crc32(body))) + b"\x00"


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
