"""The firmware's protocol on the host simulator: HELLO, errors for every bad frame, duplicate
suppression, and "an ERROR changes no state"."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from eddl.mcu.crc import crc32
from eddl.mcu.driver import Device, DeviceError
from eddl.mcu.framing import HEADER, cobs_encode, encode_frame
from eddl.mcu.launch import Launched, start_sim
from eddl.mcu.protocol import (
    REPLY_BIT,
    TENSOR_X,
    TENSOR_Y,
    Algo,
    ErrorCode,
    MsgType,
    SetupSpec,
    TensorKind,
    load_payload,
    parse_error,
    parse_stats,
    setup_payload,
    tensor_id,
    train_payload,
)
from eddl.mcu.session import DeviceModel

from .conftest import RawLink

TIFED = SetupSpec(Algo.TIFED, (8, 4, 3), capacity=4, max_batch=2)
SIM_MAX_PAYLOAD = 0xFFFF  # firmware/Makefile HOST_MAX_PAYLOAD: the largest a u16 length holds


def _error(link: RawLink) -> ErrorCode | int:
    frame = link.recv()
    assert frame.type == MsgType.ERROR
    return parse_error(frame.payload)[0]


def _stats(link: RawLink, seq: int) -> tuple[int, ...]:
    link.frame(MsgType.STATS, seq)
    frame = link.recv()
    assert frame.type == MsgType.STATS | REPLY_BIT and frame.seq == seq
    s = parse_stats(frame.payload)
    return s.samples, s.train_calls


def test_hello_reports_capabilities(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        info = dev.info
    assert info is not None
    assert info.proto_version == 1 and info.board == "host-sim"
    assert info.arena_bytes > 0 and info.max_payload == SIM_MAX_PAYLOAD
    assert {"tifed", "lsgd", "sgd"} <= set(info.kernels)
    assert info.tick_hz == 1_000_000 and info.max_layers == 4
    assert info.firmware_version == "0.2.0" and info.float_samples


def test_bad_crc_gets_link_error_and_device_keeps_working(raw: RawLink) -> None:
    body = HEADER.pack(1, MsgType.HELLO, 7, 0)
    bad = cobs_encode(body + struct.pack("<I", crc32(body) ^ 1)) + b"\x00"
    raw.send(bad)
    assert _error(raw) == ErrorCode.BAD_CRC
    raw.frame(MsgType.HELLO, 8)
    assert raw.recv().type == MsgType.HELLO | REPLY_BIT


def test_malformed_truncated_and_bad_cobs_frames_get_errors(raw: RawLink) -> None:
    good = encode_frame(1, MsgType.HELLO, 9, b"")
    raw.send(good[: len(good) // 2] + b"\x00")  # truncated
    assert _error(raw) in (ErrorCode.BAD_FRAME, ErrorCode.BAD_CRC)
    raw.send(b"\x05\x01\x00")  # COBS group runs past the end
    assert _error(raw) == ErrorCode.BAD_FRAME
    raw.send(b"\x02\x01\x00")  # shorter than a header
    assert _error(raw) == ErrorCode.BAD_FRAME
    # Length field disagreeing with the payload (CRC valid).
    body = HEADER.pack(1, MsgType.HELLO, 10, 5)
    raw.send(cobs_encode(body + struct.pack("<I", crc32(body))) + b"\x00")
    assert _error(raw) == ErrorCode.BAD_FRAME
    raw.frame(MsgType.HELLO, 11)
    assert raw.recv().type == MsgType.HELLO | REPLY_BIT


def _unchecked_frame(type_: int, seq: int, payload: bytes) -> bytes:
    """A frame with any payload size (the length field keeps its low 16 bits)."""
    body = HEADER.pack(1, type_, seq, len(payload) & 0xFFFF) + payload
    return b"\x00" + cobs_encode(body + struct.pack("<I", crc32(body))) + b"\x00"


def test_oversized_frame_is_refused_whole(raw: RawLink) -> None:
    raw.send(_unchecked_frame(MsgType.LOAD, 12, b"\x01" * (SIM_MAX_PAYLOAD + 1)))
    assert _error(raw) == ErrorCode.OVERSIZED
    raw.frame(MsgType.HELLO, 13)
    assert raw.recv().type == MsgType.HELLO | REPLY_BIT


def test_largest_advertised_frame_works_and_one_byte_more_changes_nothing(raw: RawLink) -> None:
    spec = SetupSpec(Algo.TIFED, (700, 2, 2), capacity=100)  # X holds 70,000 bytes
    raw.frame(MsgType.SETUP, 30, setup_payload(spec))
    assert raw.recv().type == MsgType.SETUP | REPLY_BIT
    data = np.random.default_rng(5).integers(0, 256, SIM_MAX_PAYLOAD - 5, np.uint8).tobytes()
    raw.frame(MsgType.LOAD, 31, load_payload(TENSOR_X, 0, data))
    reply = raw.recv()
    assert reply.type == MsgType.LOAD | REPLY_BIT
    assert struct.unpack("<I", reply.payload) == (len(data),)
    raw.send(_unchecked_frame(MsgType.LOAD, 32, load_payload(TENSOR_X, 0, bytes(len(data) + 1))))
    assert _error(raw) == ErrorCode.OVERSIZED
    raw.frame(MsgType.READ, 33, struct.pack("<BIH", TENSOR_X, 0, SIM_MAX_PAYLOAD))
    back = raw.recv()
    assert back.type == MsgType.READ | REPLY_BIT and back.payload[: len(data)] == data


def test_frame_that_decodes_longer_than_the_limit_is_refused(raw: RawLink) -> None:
    """Every 0x01 decodes to a zero: the receive buffer's worth of them would decode to more
    bytes than a frame may hold; the device measures it and refuses it as OVERSIZED."""
    max_raw = 6 + SIM_MAX_PAYLOAD + 4
    raw.frame(MsgType.STATS, 34)
    before = raw.recv()
    raw.send(b"\x00" + b"\x01" * (max_raw + max_raw // 254 + 2) + b"\x00")
    assert _error(raw) == ErrorCode.OVERSIZED
    raw.frame(MsgType.STATS, 34)  # the reply cache survived
    assert raw.recv() == before


def test_unknown_type_and_bad_version(raw: RawLink) -> None:
    raw.frame(0x42, 14)
    frame = raw.recv()
    assert frame.type == MsgType.ERROR and frame.seq == 14
    assert parse_error(frame.payload)[:2] == (ErrorCode.UNKNOWN_TYPE, 0x42)
    raw.frame(MsgType.HELLO, 15, version=2)
    assert _error(raw) == ErrorCode.BAD_VERSION


def test_duplicate_seq_gets_cached_reply_and_is_not_applied_twice(raw: RawLink) -> None:
    raw.frame(MsgType.SETUP, 20, setup_payload(TIFED))
    assert raw.recv().type == MsgType.SETUP | REPLY_BIT
    raw.frame(MsgType.LOAD, 21, load_payload(TENSOR_X, 0, bytes(range(16))))
    raw.recv()
    raw.frame(MsgType.LOAD, 22, load_payload(TENSOR_Y, 0, bytes([0, 1])))
    raw.recv()
    train = train_payload(2, batch=2, lr_inv=2048)
    raw.frame(MsgType.TRAIN, 23, train)
    first = raw.recv()
    raw.frame(MsgType.TRAIN, 23, train)  # a retry of the same command
    again = raw.recv()
    assert first == again  # same seq, same bytes: the cached reply
    assert _stats(raw, 24) == (2, 1)  # trained once
    raw.frame(MsgType.TRAIN, 25, train)  # a new seq is a new command
    raw.recv()
    assert _stats(raw, 26) == (4, 2)


def _weights(model: DeviceModel) -> dict[str, np.ndarray]:
    return model.read_params()


def test_refused_requests_change_no_state(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        model = DeviceModel(dev, TIFED)
        w = np.arange(32, dtype=np.int32).reshape(8, 4)
        model.load_params({"W0": w}, subset=True)
        before = _weights(model)
        bad = [
            (MsgType.LOAD, load_payload(tensor_id(0, TensorKind.W), 120, b"\x01" * 12)),  # past end
            (MsgType.LOAD, load_payload(tensor_id(0, TensorKind.W), 2, b"\x01" * 4)),  # unaligned
            (MsgType.LOAD, load_payload(tensor_id(3, TensorKind.W), 0, b"\x01" * 4)),  # no layer 3
            (MsgType.LOAD, b"\x00"),  # short
            (MsgType.TRAIN, train_payload(5, batch=2, lr_inv=2048)),  # more than capacity
            (MsgType.TRAIN, train_payload(2, batch=3, lr_inv=2048)),  # batch over max
            (MsgType.TRAIN, train_payload(2, batch=2, lr_inv=0)),  # lr_inv 0
            (MsgType.TRAIN, train_payload(2, batch=2, layer=2, lr_inv=2048)),  # no layer 2
            (MsgType.TRAIN, b"\x00" * 15),  # wrong length
            (MsgType.READ, struct.pack("<BIH", 0, 0, 2000)),  # over max payload
            (MsgType.PREDICT, struct.pack("<H", 9)),  # over capacity
            (MsgType.HELLO, b"x"),
            (MsgType.STATS, b"x"),
        ]
        for type_, payload in bad:
            with pytest.raises(DeviceError) as info:
                dev.request(type_, payload)
            assert info.value.code == ErrorCode.BAD_ARG, (type_, payload)
        # Labels out of range are refused by TRAIN before any update.
        dev.load(TENSOR_Y, bytes([0, 7]))
        with pytest.raises(DeviceError):
            dev.train(2, batch=2, lr_inv=2048)
        assert {k: v.tolist() for k, v in _weights(model).items()} == {
            k: v.tolist() for k, v in before.items()
        }
        assert dev.stats().samples == 0


def test_setup_too_big_is_refused_and_keeps_the_old_model(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        model = DeviceModel(dev, TIFED)
        model.load_params({"b0": np.array([1, 2, 3, 4], dtype=np.int32)}, subset=True)
        huge = SetupSpec(Algo.SGD, (4000, 4000, 10), capacity=1)
        with pytest.raises(DeviceError) as info:
            dev.setup(huge)
        assert info.value.code == ErrorCode.NO_MEMORY
        assert model.read_params(["b0"])["b0"].tolist() == [1, 2, 3, 4]
        for bad in (
            b"",
            setup_payload(TIFED)[:-1],
            bytes([9]) + setup_payload(TIFED)[1:],  # unknown algorithm
        ):
            with pytest.raises(DeviceError):
                dev.request(MsgType.SETUP, bad)
        assert model.read_params(["b0"])["b0"].tolist() == [1, 2, 3, 4]


def test_non_finite_float_weights_are_refused(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        spec = SetupSpec(Algo.LSGD, (4, 3, 2), capacity=2)
        dev.setup(spec)
        payload = np.array([1.0, np.nan, 2.0, 3.0], dtype="<f4").tobytes()
        with pytest.raises(DeviceError) as info:
            dev.load(tensor_id(0, TensorKind.W), payload)
        assert info.value.code == ErrorCode.NOT_FINITE
        assert dev.read(tensor_id(0, TensorKind.W), 16) == bytes(16)
        dev.load(TENSOR_Y, b"\x00")
        for lr in (float("inf"), float("nan"), 0.0, -0.1):
            raw_train = struct.pack("<HHBBHIf", 1, 1, 1, 0xFF, 0, 0, lr)
            with pytest.raises(DeviceError) as info:
                dev.request(MsgType.TRAIN, raw_train)
            assert info.value.code == ErrorCode.BAD_ARG
        assert dev.stats().samples == 0


def test_requests_before_setup_are_refused(sim_exe: object) -> None:
    with start_sim("tcp", lifetime=60.0) as fresh, Device.open(fresh.url) as dev:
        for call in (lambda: dev.read(TENSOR_X, 4), lambda: dev.train(1), lambda: dev.predict(1)):
            with pytest.raises(DeviceError) as info:
                call()
            assert info.value.code == ErrorCode.NOT_READY


def test_pty_transport_speaks_the_same_protocol(sim_exe: object) -> None:
    with start_sim("pty", lifetime=60.0) as dev_proc, Device.open(dev_proc.url) as dev:
        assert dev_proc.url.startswith("/dev/")
        dev.setup(TIFED)
        dev.load(TENSOR_X, bytes(range(32)))
        assert dev.read(TENSOR_X, 32) == bytes(range(32))


def test_model_survives_reconnect(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        dev.setup(TIFED)
        dev.load(TENSOR_X, b"\x07" * 32)
    with Device.open(sim.url) as dev:
        assert dev.read(TENSOR_X, 32) == b"\x07" * 32


@pytest.mark.qemu
def test_sizes_past_4_gib_are_refused_on_the_32_bit_target(qemu: Launched) -> None:
    """32768 x 32768 x 4 bytes is 2^32: the plan must not wrap to 0 on a 32-bit size_t."""
    with Device.open(qemu.url, timeout=3.0) as dev:
        for sizes in ((32768, 32768, 2), (65535, 65535, 2), (65535, 16384, 16384, 2)):
            with pytest.raises(DeviceError) as info:
                dev.setup(SetupSpec(Algo.SGD, sizes, capacity=1))
            assert info.value.code == ErrorCode.NO_MEMORY
        used, arena = dev.setup(SetupSpec(Algo.TIFED, (64, 16, 10), capacity=4))
        assert 0 < used <= arena
