"""Message types, error codes and payload layouts of the serial protocol.

The protocol in brief: docs/architecture.md#the-serial-protocol; every layout: docs/firmware.md.

The firmware's ``firmware/src/proto.h`` holds the same numbers. A request of type ``T`` is
answered by ``T | REPLY_BIT`` or by ``ERROR`` (``{code u8, request type u8, detail u16}``), both
carrying the request's sequence number. All integers are little endian.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

__all__ = [
    "LAYER_ALL",
    "MAX_LAYERS",
    "MIN_MAX_PAYLOAD",
    "PROTO_VERSION",
    "REPLY_BIT",
    "TENSOR_Q8STATE",
    "TENSOR_X",
    "TENSOR_Y",
    "Act",
    "Algo",
    "ErrorCode",
    "Hello",
    "HelloFlag",
    "Loss",
    "MsgType",
    "ProtocolError",
    "SampleFormat",
    "SetupSpec",
    "Stats",
    "TensorKind",
    "load_payload",
    "parse_error",
    "parse_hello",
    "parse_stats",
    "read_payload",
    "setup_payload",
    "tensor_id",
    "train_payload",
]

PROTO_VERSION = 1
REPLY_BIT = 0x80
MAX_LAYERS = 4
LAYER_ALL = 0xFF
TENSOR_X = 0xF0
TENSOR_Y = 0xF1
TENSOR_Q8STATE = 0xF2  # lsgd-q8 {u32 seed, u32 counter}
# The smallest receive limit a device may advertise: a 4-layer SETUP (22 bytes) must fit, and
# LOAD must carry at least 8 data bytes after its 5-byte header.
MIN_MAX_PAYLOAD = 64


class ProtocolError(ValueError):
    """A payload cannot be built or parsed (bad argument, wrong length)."""


class MsgType(enum.IntEnum):
    HELLO = 0x01
    SETUP = 0x02
    LOAD = 0x03
    TRAIN = 0x04
    READ = 0x05
    STATS = 0x06
    PREDICT = 0x07
    LINKTEST = 0x08
    TOPP = 0x09  # top-P of phi - theta over the shared layers (eddl.mcu.topp)
    ERROR = 0x7F


class ErrorCode(enum.IntEnum):
    BAD_CRC = 1
    BAD_FRAME = 2
    OVERSIZED = 3
    BAD_VERSION = 4
    UNKNOWN_TYPE = 5
    BAD_ARG = 6
    NO_MEMORY = 7
    NOT_READY = 8
    UNSUPPORTED = 9
    NOT_FINITE = 10
    SEQ_REUSED = 11  # a sequence number the device remembers came with a different command
    STALE_SEQ = 12  # a sequence number older than the device's replay window

    @property
    def is_sequence_error(self) -> bool:
        """The request was refused for its sequence number alone: nothing was applied."""
        return self in (ErrorCode.SEQ_REUSED, ErrorCode.STALE_SEQ)

    @property
    def is_link_error(self) -> bool:
        """The request was damaged on the way: nothing was applied, retransmitting is safe."""
        return self in (ErrorCode.BAD_CRC, ErrorCode.BAD_FRAME, ErrorCode.OVERSIZED)


class Algo(enum.IntEnum):
    TIFED = 1
    LSGD = 2
    SGD = 3
    LSGD_Q8 = 4


class Act(enum.IntEnum):
    LINEAR = 0
    TANH = 1
    SIGMOID = 2
    RELU = 3
    SOFTMAX = 4


class Loss(enum.IntEnum):
    BCE = 0
    CE = 1
    MSE = 2


class SampleFormat(enum.IntFlag):
    """How SETUP lays out the sample buffer (its optional last byte; none: ``PIXELS``).

    ``PIXELS``: uint8 pixels read as ``x / 255`` and u8 class labels, as every SETUP before the
    byte existed. ``FLOAT_INPUTS``: float32 features read as they are. ``FLOAT_TARGETS``:
    float32 regression targets, one per output (MSE). Float kernels (L-SGD, SGD) only."""

    PIXELS = 0
    FLOAT_INPUTS = 1
    FLOAT_TARGETS = 2


class TensorKind(enum.IntEnum):
    """Offset of a layer's tensor within its block of four ids."""

    W = 0
    B = 1
    FEEDBACK = 2
    FORMAT = 3


def tensor_id(layer: int, kind: TensorKind) -> int:
    if not 0 <= layer < MAX_LAYERS:
        raise ProtocolError(f"layer {layer} out of range 0..{MAX_LAYERS - 1}")
    return 4 * layer + int(kind)


class HelloFlag(enum.IntFlag):
    """HELLO's flags byte (its last byte; a firmware without it sets none).

    ``HAS_SEQ``: the device has executed a sequence number (the newest is in the reply).
    ``FLOAT_SAMPLES``: SETUP takes float32 samples (:class:`SampleFormat`), firmware 0.2.0 and
    later with the float kernels built; firmware 0.1.x sets ``HAS_SEQ`` alone."""

    HAS_SEQ = 1
    FLOAT_SAMPLES = 2


@dataclass(frozen=True)
class Hello:
    """Device capabilities from HELLO."""

    proto_version: int
    firmware_version: str
    ram_bytes: int
    flash_bytes: int
    arena_bytes: int
    max_payload: int
    kernels: tuple[str, ...]
    tick_hz: int
    max_layers: int
    board: str
    # The replay window: how many sequence numbers the device remembers, and the newest one it
    # has executed (None: none yet, or a firmware that does not say).
    seq_window: int = 0
    last_seq: int | None = None
    # SETUP takes float32 samples (HelloFlag.FLOAT_SAMPLES); False for older firmware.
    float_samples: bool = False


_HELLO = struct.Struct("<BBBBIIIHHIBB")
_HELLO_WINDOW = struct.Struct("<HBB")


def parse_hello(payload: bytes) -> Hello:
    if len(payload) < _HELLO.size:
        raise ProtocolError(f"HELLO reply of {len(payload)} bytes is too short")
    (
        proto,
        major,
        minor,
        patch,
        ram,
        flash,
        arena,
        max_payload,
        kernels,
        tick_hz,
        layers,
        name_len,
    ) = _HELLO.unpack_from(payload)
    if max_payload < MIN_MAX_PAYLOAD:
        raise ProtocolError(
            f"device advertises a {max_payload}-byte max payload, below {MIN_MAX_PAYLOAD}"
        )
    name = payload[_HELLO.size : _HELLO.size + name_len]
    if len(name) != name_len:
        raise ProtocolError("HELLO reply truncated in the board name")
    names = {Algo.TIFED: "tifed", Algo.LSGD: "lsgd", Algo.SGD: "sgd", Algo.LSGD_Q8: "lsgd-q8"}
    built = tuple(n for a, n in names.items() if kernels & (1 << a))
    window, last_seq, flags = 0, None, HelloFlag(0)
    tail = payload[_HELLO.size + name_len :]
    if len(tail) >= _HELLO_WINDOW.size:
        top, window, bits = _HELLO_WINDOW.unpack_from(tail)
        # Bits this host does not know (a later firmware's) are ignored.
        flags = HelloFlag(bits & (HelloFlag.HAS_SEQ | HelloFlag.FLOAT_SAMPLES))
        last_seq = top if HelloFlag.HAS_SEQ in flags else None
    return Hello(
        proto,
        f"{major}.{minor}.{patch}",
        ram,
        flash,
        arena,
        max_payload,
        built,
        tick_hz,
        layers,
        name.decode("ascii", "replace"),
        window,
        last_seq,
        HelloFlag.FLOAT_SAMPLES in flags,
    )


@dataclass(frozen=True)
class Stats:
    samples: int
    kernel_ticks: int
    last_train_ticks: int
    train_calls: int
    frames_ok: int
    frames_bad: int
    duplicates: int
    errors: int
    arena_used: int


_STATS = struct.Struct("<IQIIIIIII")


def parse_stats(payload: bytes) -> Stats:
    if len(payload) != _STATS.size:
        raise ProtocolError(f"STATS reply of {len(payload)} bytes, expected {_STATS.size}")
    return Stats(*_STATS.unpack(payload))


def parse_error(payload: bytes) -> tuple[ErrorCode | int, int, int]:
    """``(code, request type, detail)`` of an ERROR payload (unknown codes stay ints)."""
    if len(payload) != 4:
        raise ProtocolError(f"ERROR payload of {len(payload)} bytes, expected 4")
    code, req, detail = struct.unpack("<BBH", payload)
    try:
        return ErrorCode(code), req, detail
    except ValueError:
        return code, req, detail


@dataclass(frozen=True)
class SetupSpec:
    """What SETUP allocates: algorithm, layer widths, sample buffer and mini-batch capacity."""

    algo: Algo
    sizes: tuple[int, ...]
    capacity: int
    max_batch: int = 1
    activations: tuple[Act, ...] = ()
    loss: Loss = Loss.BCE
    target: int = 16
    act_shift: int = 8
    shared_layers: int = 0  # layers 0..k-1 get a theta snapshot for top-P (MsgType.TOPP)
    sample_format: SampleFormat = SampleFormat.PIXELS

    def __post_init__(self) -> None:
        layers = len(self.sizes) - 1
        if not 1 <= layers <= MAX_LAYERS:
            raise ProtocolError(f"need 1..{MAX_LAYERS} layers, got sizes {self.sizes}")
        if any(not 1 <= s <= 0xFFFF for s in self.sizes):
            raise ProtocolError(f"layer widths must be in 1..65535: {self.sizes}")
        if self.activations and len(self.activations) != layers:
            raise ProtocolError("one activation per layer")
        if not 1 <= self.max_batch <= self.capacity <= 0xFFFF:
            raise ProtocolError("need 1 <= max_batch <= capacity <= 65535")
        if not 0 <= self.shared_layers <= layers:
            raise ProtocolError(f"shared_layers must be in 0..{layers}")
        fmt = SampleFormat(self.sample_format)
        if fmt and self.algo not in (Algo.LSGD, Algo.SGD):
            raise ProtocolError(
                f"float samples need a float kernel (lsgd, sgd), not {self.algo.name}"
            )
        if SampleFormat.FLOAT_TARGETS in fmt and self.loss != Loss.MSE:
            raise ProtocolError("float32 targets are regression targets: the loss must be MSE")

    @property
    def float_inputs(self) -> bool:
        return SampleFormat.FLOAT_INPUTS in SampleFormat(self.sample_format)

    @property
    def float_targets(self) -> bool:
        return SampleFormat.FLOAT_TARGETS in SampleFormat(self.sample_format)


def setup_payload(spec: SetupSpec) -> bytes:
    """SETUP's payload; the sample-format byte is sent only when it is not ``PIXELS``, so a
    pixel model's SETUP is byte for byte what it always was."""
    layers = len(spec.sizes) - 1
    acts = spec.activations or tuple(Act.LINEAR for _ in range(layers))
    fmt = bytes([int(spec.sample_format)]) if spec.sample_format else b""
    return (
        struct.pack(
            "<BBBBBBHH",
            spec.algo,
            layers,
            spec.loss,
            spec.target,
            spec.act_shift,
            spec.shared_layers,
            spec.capacity,
            spec.max_batch,
        )
        + struct.pack(f"<{layers + 1}H", *spec.sizes)
        + bytes(int(a) for a in acts)
        + fmt
    )


def load_payload(tensor: int, offset: int, data: bytes) -> bytes:
    if not data:
        raise ProtocolError("LOAD needs at least one byte")
    return struct.pack("<BI", tensor, offset) + data


def read_payload(tensor: int, offset: int, length: int) -> bytes:
    if not 1 <= length <= 0xFFFF:
        raise ProtocolError(f"READ length {length} out of range")
    return struct.pack("<BIH", tensor, offset, length)


def train_payload(
    n: int,
    *,
    batch: int = 1,
    epochs: int = 1,
    layer: int | None = None,
    lr_inv: int = 0,
    lr: float = 0.0,
) -> bytes:
    if not 1 <= n <= 0xFFFF or not 1 <= batch <= 0xFFFF or not 1 <= epochs <= 0xFF:
        raise ProtocolError(f"TRAIN n={n} batch={batch} epochs={epochs} out of range")
    if layer is not None and not 0 <= layer < MAX_LAYERS:
        raise ProtocolError(f"layer {layer} out of range")
    if not 0 <= lr_inv <= 0xFFFFFFFF:
        raise ProtocolError(f"lr_inv {lr_inv} out of range")
    if not math.isfinite(lr):
        raise ProtocolError(f"learning rate must be finite, got {lr}")
    return struct.pack(
        "<HHBBHIf", n, batch, epochs, LAYER_ALL if layer is None else layer, 0, lr_inv, lr
    )
