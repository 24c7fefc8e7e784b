"""COBS byte stuffing and the frame layer of the serial protocol.

The protocol in brief: docs/architecture.md#the-serial-protocol; every layout: docs/firmware.md.

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


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode ``data``: the result holds no ``0x00`` and is at most ``n + n//254 + 1``."""
    return b"".join(_cobs_parts(bytes(data)))


def _cobs_parts(data: bytes) -> list[bytes | bytearray]:
    """:func:`cobs_encode` as pieces to join (a caller adds delimiters in the same join).

    Short inputs: ``bytes.split`` and a loop over the zero-free runs. Long inputs: numpy writes
    each run's first code byte over the zero before it in one pass; only the codes that split
    runs longer than 254 bytes (about one per 400 bytes of random data, none in zero-heavy
    data) need their own slice, and one join splices them all in.
    """
    n = len(data)
    if n >= _VECTOR_MIN:
        return _cobs_parts_np(data)
    parts: list[bytes | bytearray] = []
    runs = data.split(b"\x00")
    for run in runs:
        size = len(run)
        start = 0
        while size - start >= 254:
            parts += (b"\xff", run[start : start + 254])
            start += 254
        parts += (_CODE[size - start + 1], run[start:])
    if runs[-1] and len(runs[-1]) % 254 == 0:
        del parts[-2:]  # a full group at the very end needs no empty group after it
    return parts


_CODE = [bytes((i,)) for i in range(256)]  # the code byte of a group, without a bytes() call
_VECTOR_MIN = 256  # below this, numpy's fixed cost per call exceeds the whole loop


def _cobs_parts_np(data: bytes) -> list[bytes | bytearray]:
    a = np.frombuffer(data, dtype=np.uint8)
    n = a.size
    zeros = np.flatnonzero(a == 0)
    # Input byte i goes to out[i + 1]. The first run's code goes to out[0]; each zero's place
    # takes the code of the run after it, which is the gap to the next zero (or to the end).
    out = np.empty(n + 1, dtype=np.uint8)
    out[1:] = a
    first = int(zeros[0]) if zeros.size else n
    gaps = np.empty_like(zeros)
    if zeros.size:
        np.subtract(zeros[1:], zeros[:-1], out=gaps[:-1])
        gaps[-1] = n - zeros[-1]
    out[0] = min(first, 254) + 1
    # A scatter that casts costs twice as much as casting first.
    out[1:][zeros] = np.minimum(gaps, 255).astype(np.uint8)
    if first < 254 and (not gaps.size or int(gaps.max()) <= 254):
        return [out.tobytes()]  # every run fits one group
    # Runs of 254 bytes or more go on in further groups: a code byte is spliced in before
    # each further group (starting every 254 bytes of the run). All but the run's last one
    # are 0xFF (another full group follows), so the splice is one join on 0xFF, and the last
    # code of each run is patched afterwards.
    after = np.flatnonzero(gaps >= 255)  # the zeros after which a long run starts
    starts = zeros[after] + 1
    lens = gaps[after] - 1
    if first >= 254:
        starts = np.concatenate(([0], starts))
        lens = np.concatenate(([first], lens))
    extra = lens // 254  # groups after the first, the last one ending at the zero
    if starts[-1] + lens[-1] == n and lens[-1] % 254 == 0:
        extra[-1] -= 1  # no empty group after a full one at the very end of the data
    total = int(extra.sum())
    if not total:
        return [out.tobytes()]
    run = np.repeat(np.arange(extra.size), extra)
    first_code = np.cumsum(extra) - extra  # per run, the index of its first spliced code
    at = starts[run] + 254 * (np.arange(1, total + 1) - first_code[run]) + 1  # out index
    flat = out.tobytes()
    cuts = at.tolist()
    pieces = [flat[i:j] for i, j in zip([0, *cuts], [*cuts, n + 1], strict=True)]
    joined = bytearray(b"\xff".join(pieces))
    last = (first_code + extra - 1)[extra > 0]
    left = (starts + lens)[extra > 0] - (at[last] - 1)  # bytes in the run's last group
    # Spliced code k lands k places further on than its cut.
    np.frombuffer(joined, dtype=np.uint8)[at[last] + last] = (left + 1).astype(np.uint8)
    return [joined]


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes:
    """Invert :func:`cobs_encode`; raises :class:`FrameError` on malformed input.

    One Python step per group finds where the groups start (that chain cannot be vectorised:
    each start depends on the code byte before it); numpy then turns every group's code into
    the zero it stands for and drops the codes that stand for none (the first, and those after
    a full 254-byte group) in one pass.
    """
    data = bytes(data)
    if 0 in data:
        raise FrameError("COBS: zero byte inside a frame")
    n = len(data)
    starts: list[int] = []
    mark = starts.append
    i = 0
    while i < n:  # no code is 0 (checked above), so this ends
        mark(i)
        i += data[i]
    if i != n:
        raise FrameError("COBS: group runs past the end of the frame")
    if n < _VECTOR_MIN:
        return b"".join(
            data[s + 1 : s + data[s]] + (b"" if data[s] == 0xFF or s + data[s] == n else b"\x00")
            for s in starts
        )
    a = np.frombuffer(data, dtype=np.uint8)
    at = np.array(starts, dtype=np.intp)
    out = a.copy()
    out[at] = 0
    drop = at[1:][a[at[:-1]] == 0xFF].tolist()  # codes after a full group stand for no zero
    if not drop:
        return out[1:].tobytes()
    flat = out.data
    parts: list[memoryview] = []
    prev = 1
    for d in drop:
        parts.append(flat[prev:d])
        prev = d + 1
    parts.append(flat[prev:])
    return b"".join(parts)


def encode_frame(
    version: int, type_: int, seq: int, payload: bytes, *, lead: bool = False
) -> bytes:
    """Header, payload and CRC, COBS-encoded, with the trailing ``0x00`` delimiter (and a
    leading one with ``lead``, which makes a receiver drop any partial frame it holds)."""
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq must fit in u16, got {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a frame")
    header = HEADER.pack(version, type_, seq, len(payload))
    crc = struct.pack("<I", crc32(payload, crc32(header)))
    parts = _cobs_parts(b"".join((header, payload, crc)))
    return b"".join((b"\x00", *parts, b"\x00") if lead else (*parts, b"\x00"))


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame (without its delimiter); raises :class:`FrameError` if invalid."""
    raw = cobs_decode(encoded)
    if len(raw) < HEADER.size + CRC_BYTES:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than header and CRC")
    size = len(raw) - CRC_BYTES
    (crc,) = struct.unpack_from("<I", raw, size)
    if crc32(memoryview(raw)[:size]) != crc:
        raise FrameError("CRC mismatch")
    version, type_, seq, length = HEADER.unpack_from(raw)
    if length != size - HEADER.size:
        raise FrameError(f"length field {length} but {size - HEADER.size} payload bytes")
    return Frame(version, type_, seq, raw[HEADER.size : size])


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
        view = memoryview(data)  # slices of a view copy nothing; each frame is copied once
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(view[start:])
                return frames
            if not self._buf and not self._overflow and 0 < end - start <= self._max:
                frames.append(data[start:end])  # a whole frame in one chunk: the common case
                start = end + 1
                continue
            self._append(view[start:end])
            if self._overflow:
                frames.append(None)
            elif self._buf:
                frames.append(bytes(self._buf))
            self._buf.clear()
            self._overflow = False
            start = end + 1

    def _append(self, chunk: memoryview) -> None:
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
