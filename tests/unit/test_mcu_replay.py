"""The host's side of the device's replay window: HELLO's window fields, the driver's resync
after a sequence refusal, and a seeded fuzz of the frame decoder (typed errors only)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.mcu.driver import DeviceError
from eddl.mcu.framing import Frame, FrameError, FrameReader, decode_frame, encode_frame
from eddl.mcu.protocol import (
    ErrorCode,
    MsgType,
    ProtocolError,
    parse_error,
    parse_hello,
    parse_stats,
)

from .test_mcu_driver import error, make, reply

_HELLO = struct.pack("<BBBBIIIHHIBB", 1, 0, 1, 0, 1, 1, 1, 1024, 2, 1, 4, 3) + b"sim"


def test_hello_reports_the_replay_window_and_the_newest_seq() -> None:
    info = parse_hello(_HELLO + struct.pack("<HBB", 0xFFF0, 16, 1))
    assert (info.seq_window, info.last_seq, info.board) == (16, 0xFFF0, "sim")
    assert parse_hello(_HELLO + struct.pack("<HBB", 7, 16, 0)).last_seq is None
    old = parse_hello(_HELLO)  # a firmware without the window fields
    assert (old.seq_window, old.last_seq) == (0, None)


def test_sequence_errors_are_application_errors_that_applied_nothing() -> None:
    for code in (ErrorCode.SEQ_REUSED, ErrorCode.STALE_SEQ):
        assert code.is_sequence_error and not code.is_link_error
    assert parse_error(bytes([11, 4, 0, 0]))[0] == ErrorCode.SEQ_REUSED
    assert parse_error(bytes([12, 3, 0, 0]))[0] == ErrorCode.STALE_SEQ


def test_driver_continues_after_the_seq_that_hello_reports() -> None:
    top = 0x1234

    def device(f: Frame, attempt: int) -> list[bytes]:
        if f.type == MsgType.HELLO:
            return [reply(f, _HELLO + struct.pack("<HBB", top, 16, 1))]
        return [reply(f, b"ok")]

    dev, port = make(device)
    dev.hello()
    assert dev.request(MsgType.STATS) == b"ok"
    assert port.seen[-1].seq == top + 1


def test_a_stale_first_transmission_is_resent_once_after_hello() -> None:
    """Another client moved the device's window on: the driver's number is refused (nothing
    applied), the driver asks HELLO where the window stands and sends the request after it."""
    top = 0x8000

    def device(f: Frame, attempt: int) -> list[bytes]:
        if f.type == MsgType.HELLO:
            return [reply(f, _HELLO + struct.pack("<HBB", top, 16, 1))]
        if f.seq != (top + 1) & 0xFFFF:
            return [error(f, ErrorCode.STALE_SEQ)]
        return [reply(f, b"trained")]

    dev, port = make(device)
    assert dev.request(MsgType.TRAIN, b"x") == b"trained"
    assert [f.type for f in port.seen] == [MsgType.TRAIN, MsgType.HELLO, MsgType.TRAIN]
    assert port.seen[-1].payload == b"x" and port.seen[-1].seq == top + 1


def test_a_sequence_refusal_of_a_retransmission_is_raised() -> None:
    """After a retransmission an earlier copy may have been applied (its reply lost): the
    driver must not send the command under a new number, so the refusal is raised."""

    def device(f: Frame, attempt: int) -> list[bytes]:
        return [] if attempt == 0 else [error(f, ErrorCode.STALE_SEQ)]

    dev, port = make(device)
    with pytest.raises(DeviceError) as info:
        dev.request(MsgType.TRAIN, b"x")
    assert info.value.code == ErrorCode.STALE_SEQ
    assert [f.type for f in port.seen] == [MsgType.TRAIN, MsgType.TRAIN]


def test_a_pipeline_refused_for_its_numbers_is_run_again_after_hello() -> None:
    top = 0x10
    hellos = []

    def device(f: Frame, attempt: int) -> list[bytes]:
        if f.type == MsgType.HELLO:
            hellos.append(f.seq)
            return [reply(f, _HELLO + struct.pack("<HBB", top, 16, 1))]
        if not hellos:
            return [error(f, ErrorCode.SEQ_REUSED)]
        return [reply(f, struct.pack("<I", 8))]

    dev, port = make(device)
    dev.load(3, bytes(16))
    assert len(hellos) == 1
    assert port.seen[-1].type == MsgType.LOAD and port.seen[-1].seq == top + 1


# ---- fuzzing the frame decoder: seeded, bounded, typed errors only ----

_GOOD = encode_frame(1, MsgType.TRAIN, 0x1234, bytes(range(16)))[:-1]


@settings(derandomize=True, max_examples=2000, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 64),
    noise=st.binary(max_size=16),
)
def test_fuzz_mutated_frames_decode_or_raise_frame_error(
    edits: list[tuple[int, int]], cut: int, noise: bytes
) -> None:
    raw = bytearray(_GOOD[: max(1, len(_GOOD) - cut % 8)] + noise)
    for at, value in edits:
        raw[at % len(raw)] = value
    try:
        frame = decode_frame(bytes(raw))
    except FrameError:
        pass
    else:
        # Only an unchanged frame (the edits wrote back what was there) may get through.
        assert frame == decode_frame(_GOOD)
    frames = FrameReader(64).feed(bytes(raw) + b"\x00")
    assert all(f is None or len(f) <= 64 for f in frames)


@settings(derandomize=True, max_examples=1000, deadline=None)
@given(payload=st.binary(max_size=80))
def test_fuzz_reply_parsers_raise_only_protocol_errors(payload: bytes) -> None:
    for parse in (parse_hello, parse_stats, parse_error):
        with contextlib.suppress(ProtocolError):
            parse(payload)
