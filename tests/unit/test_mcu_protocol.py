"""Payload layouts and their validation (mirrors firmware/src/proto.h)."""

from __future__ import annotations

import struct

import pytest

from eddl.mcu import protocol as p


def test_setup_payload_layout() -> None:
    spec = p.SetupSpec(
        p.Algo.LSGD,
        (784, 40, 32, 10),
        capacity=50,
        activations=(p.Act.TANH, p.Act.TANH, p.Act.SIGMOID),
    )
    raw = p.setup_payload(spec)
    assert raw[:10] == struct.pack("<BBBBBBHH", 2, 3, 0, 16, 8, 0, 50, 1)
    assert struct.unpack("<4H", raw[10:18]) == (784, 40, 32, 10)
    assert raw[18:] == bytes([1, 1, 2])


@pytest.mark.parametrize(
    "kw",
    [
        {"sizes": (4,)},
        {"sizes": (4, 3, 3, 3, 3, 3)},
        {"sizes": (4, 0, 2)},
        {"sizes": (70000, 2)},
        {"capacity": 0},
        {"max_batch": 9, "capacity": 4},
        {"activations": (p.Act.TANH,)},
    ],
)
def test_setup_spec_refuses_bad_shapes(kw: dict[str, object]) -> None:
    args: dict[str, object] = {"algo": p.Algo.TIFED, "sizes": (4, 3, 2), "capacity": 4}
    args.update(kw)
    with pytest.raises(p.ProtocolError):
        p.SetupSpec(**args)  # type: ignore[arg-type]


def test_train_payload_layout_and_refusals() -> None:
    raw = p.train_payload(25, batch=5, epochs=3, layer=1, lr_inv=4096, lr=0.5)
    assert raw == struct.pack("<HHBBHIf", 25, 5, 3, 1, 0, 4096, 0.5)
    assert p.train_payload(1)[5] == p.LAYER_ALL
    for kw in (
        {"n": 0},
        {"n": 70000},
        {"n": 1, "epochs": 0},
        {"n": 1, "layer": 4},
        {"n": 1, "lr": float("nan")},
        {"n": 1, "lr_inv": -1},
    ):
        with pytest.raises(p.ProtocolError):
            p.train_payload(**kw)


def test_hello_and_stats_parsing() -> None:
    raw = (
        struct.pack(
            "<BBBBIIIHHIBB",
            1,
            0,
            1,
            2,
            98304,
            524288,
            86016,
            1024,
            (1 << 1) | (1 << 4),
            25_000_000,
            4,
            3,
        )
        + b"due"
    )
    hello = p.parse_hello(raw)
    assert hello.firmware_version == "0.1.2" and hello.board == "due"
    assert hello.kernels == ("tifed", "lsgd-q8") and hello.tick_hz == 25_000_000
    with pytest.raises(p.ProtocolError):
        p.parse_hello(raw[:10])
    with pytest.raises(p.ProtocolError):
        p.parse_hello(raw[:-1])
    stats = p.parse_stats(struct.pack("<IQIIIIIII", 5, 2**40, 7, 1, 2, 3, 4, 5, 6))
    assert stats.kernel_ticks == 2**40 and stats.arena_used == 6
    with pytest.raises(p.ProtocolError):
        p.parse_stats(b"\x00" * 39)


def _hello(version: tuple[int, int, int], tail: bytes) -> bytes:
    head = struct.pack("<BBBBIIIHHIBB", 1, *version, 98304, 524288, 86016, 1024, 0x1E, 1000, 4, 3)
    return head + b"due" + tail


@pytest.mark.parametrize(
    ("version", "tail", "last_seq", "float_samples"),
    [
        ((0, 1, 0), b"", None, False),  # before the replay window: no flags byte at all
        ((0, 1, 0), struct.pack("<HBB", 9, 16, 0), None, False),
        ((0, 1, 0), struct.pack("<HBB", 9, 16, 1), 9, False),  # 0.1.x: bit 0 alone
        ((0, 2, 0), struct.pack("<HBB", 9, 16, 2), None, True),
        ((0, 2, 0), struct.pack("<HBB", 9, 16, 3), 9, True),
        ((0, 3, 0), struct.pack("<HBB", 9, 16, 0xFF), 9, True),  # a later firmware's new bits
    ],
)
def test_hello_flags_of_old_and_new_firmware(
    version: tuple[int, int, int], tail: bytes, last_seq: int | None, float_samples: bool
) -> None:
    hello = p.parse_hello(_hello(version, tail))
    assert hello.firmware_version == "{}.{}.{}".format(*version) and hello.board == "due"
    assert (hello.last_seq, hello.float_samples) == (last_seq, float_samples)
    assert hello.kernels == ("tifed", "lsgd", "sgd", "lsgd-q8")


@pytest.mark.parametrize("max_payload", [0, 13, p.MIN_MAX_PAYLOAD - 1])
def test_hello_with_a_too_small_max_payload_is_refused(max_payload: int) -> None:
    raw = struct.pack("<BBBBIIIHHIBB", 1, 0, 1, 0, 1, 1, 1, max_payload, 2, 1, 4, 0)
    with pytest.raises(p.ProtocolError, match="max payload"):
        p.parse_hello(raw)


@pytest.mark.parametrize("max_payload", [p.MIN_MAX_PAYLOAD, 1024, 0xFFFF])
def test_hello_carries_any_max_payload_a_u16_holds(max_payload: int) -> None:
    raw = struct.pack("<BBBBIIIHHIBB", 1, 0, 1, 0, 1, 1, 1, max_payload, 2, 1, 4, 0)
    assert p.parse_hello(raw).max_payload == max_payload


def test_error_codes() -> None:
    assert p.parse_error(bytes([7, 2, 0, 0])) == (p.ErrorCode.NO_MEMORY, 2, 0)
    assert p.parse_error(bytes([200, 2, 1, 0]))[0] == 200
    assert p.ErrorCode.BAD_CRC.is_link_error and not p.ErrorCode.BAD_ARG.is_link_error
    with pytest.raises(p.ProtocolError):
        p.parse_error(b"\x01")


def test_tensor_ids() -> None:
    assert p.tensor_id(2, p.TensorKind.B) == 9
    with pytest.raises(p.ProtocolError):
        p.tensor_id(4, p.TensorKind.W)
    with pytest.raises(p.ProtocolError):
        p.load_payload(0, 0, b"")
    with pytest.raises(p.ProtocolError):
        p.read_payload(0, 0, 0)
