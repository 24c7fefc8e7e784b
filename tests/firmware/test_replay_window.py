"""The device's replay window, on the host simulator and under QEMU.

Known answers: a replayed command gets its first reply byte for byte and is not applied again;
a remembered number with another command is refused with ``SEQ_REUSED``, a number older than the
window with ``STALE_SEQ`` (exact frames below); a number that later frames overtook is executed
once. Then 10,000 frames (new commands, replays, reused numbers, corrupted frames), each checked
against a model of the window, and the final weights against a run of the same commands, each
sent once.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from eddl.mcu.driver import Device
from eddl.mcu.framing import HEADER, Frame, encode_frame
from eddl.mcu.launch import Launched
from eddl.mcu.protocol import (
    REPLY_BIT,
    TENSOR_Y,
    Algo,
    ErrorCode,
    MsgType,
    SetupSpec,
    TensorKind,
    load_payload,
    parse_error,
    parse_hello,
    parse_stats,
    tensor_id,
    train_payload,
)
from eddl.mcu.session import DeviceModel

from .conftest import RawLink

SPEC = SetupSpec(Algo.TIFED, (8, 4, 3), capacity=4, max_batch=2)
WINDOW = 16


@pytest.fixture(params=["sim", pytest.param("qemu", marks=pytest.mark.qemu)])
def device_url(request: pytest.FixtureRequest) -> Iterator[str]:
    launched: Launched = request.getfixturevalue(request.param)
    yield launched.url


def _prepare(url: str) -> None:
    """SETUP the small TIFeD model with fixed weights, feedback and samples."""
    rng = np.random.default_rng(3)
    with Device.open(url) as dev:
        model = DeviceModel(dev, SPEC)
        params = {
            name: rng.integers(-3000, 3000, shape).astype(np.int32)
            for name, shape in model.shapes().items()
        }
        model.load_params(params)
        model.load_feedback([rng.integers(-100, 100, (3, 4), dtype=np.int16)])
        model.load_samples(rng.integers(0, 256, (4, 8)), rng.integers(0, 3, 4))


def _weights_and_calls(url: str) -> tuple[list[bytes], int]:
    """The raw weights and biases of the model on the device (no SETUP), and TRAIN calls."""
    sizes = SPEC.sizes
    with Device.open(url) as dev:
        weights = []
        for layer in range(len(sizes) - 1):
            fan_in, fan_out = sizes[layer], sizes[layer + 1]
            weights.append(dev.read(tensor_id(layer, TensorKind.W), fan_in * fan_out * 4))
            weights.append(dev.read(tensor_id(layer, TensorKind.B), fan_out * 4))
        return weights, dev.stats().train_calls


def _top(link: RawLink) -> int:
    """The newest sequence number the device executed, from a HELLO on ``link``."""
    hello = parse_hello(_ask(link, MsgType.HELLO, 0xBEEF, b"").payload)
    assert hello.seq_window == WINDOW and hello.last_seq is not None
    return hello.last_seq


def _ask(link: RawLink, type_: int, seq: int, payload: bytes) -> Frame:
    link.frame(type_, seq, payload)
    return link.recv()


def _code(frame: Frame) -> ErrorCode | int:
    assert frame.type == MsgType.ERROR, frame
    return parse_error(frame.payload)[0]


def test_known_answers_of_the_replay_window(device_url: str) -> None:
    _prepare(device_url)
    before, calls = _weights_and_calls(device_url)
    link = RawLink(device_url)
    try:
        s = (_top(link) + 1) & 0xFFFF
        train = train_payload(2, batch=2, lr_inv=2048)
        first = _ask(link, MsgType.TRAIN, s, train)
        assert first.type == MsgType.TRAIN | REPLY_BIT
        # Newer commands, then the old TRAIN again: its kept reply, not a second update.
        for k in range(1, 6):
            assert _ask(link, MsgType.STATS, (s + k) & 0xFFFF, b"").type == 0x86
        assert _ask(link, MsgType.TRAIN, s, train) == first
        # The same number with another command: refused, byte for byte this frame.
        other = train_payload(4, batch=2, lr_inv=2048)
        link.frame(MsgType.TRAIN, s, other)
        assert link.recv() == Frame(1, MsgType.ERROR, s, bytes([11, MsgType.TRAIN, 0, 0]))
        assert encode_frame(1, MsgType.ERROR, 0x1234, bytes([11, 4, 0, 0])).hex() == (
            "06017f341204030b040105e7b20d9900"
        )
        # Overtaken: s+7 is skipped, s+8 executed, then s+7 arrives: executed once.
        assert _ask(link, MsgType.STATS, (s + 8) & 0xFFFF, b"").type == 0x86
        late = _ask(link, MsgType.LOAD, (s + 7) & 0xFFFF, load_payload(TENSOR_Y, 0, b"\x01"))
        assert late.type == MsgType.LOAD | REPLY_BIT
        # WINDOW numbers later the first TRAIN is out of the window: refused as stale.
        for k in range(9, 9 + WINDOW):
            _ask(link, MsgType.STATS, (s + k) & 0xFFFF, b"")
        assert _ask(link, MsgType.TRAIN, s, train) == Frame(
            1, MsgType.ERROR, s, bytes([12, MsgType.TRAIN, 0, 0])
        )
        stats = parse_stats(_ask(link, MsgType.STATS, (s + 9 + WINDOW) & 0xFFFF, b"").payload)
    finally:
        link.close()
    assert stats.train_calls == calls + 1  # the TRAIN was applied once, its replays never
    after, _ = _weights_and_calls(device_url)
    assert after != before


# ---- 10,000 frames ----


@dataclass
class Tally:
    new: int = 0
    replays: int = 0
    reused: int = 0
    stale: int = 0
    corrupted: int = 0
    applied: list[tuple[int, bytes]] = field(default_factory=list)


class WindowModel:
    """The firmware's window rules in Python: what the device must answer to each frame."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.seen: dict[int, tuple[int, Frame]] = {}  # seq -> (frame CRC, first reply)

    def classify(self, seq: int, crc: int) -> str:
        ahead = (seq - self.top) & 0xFFFF
        if ahead and ahead < 0x8000:
            return "new"
        if (self.top - seq) & 0xFFFF >= WINDOW:
            return "stale"
        if seq not in self.seen:
            return "new"
        return "replay" if self.seen[seq][0] == crc else "reused"

    def record(self, seq: int, crc: int, reply: Frame) -> None:
        self.seen[seq] = (crc, reply)
        ahead = (seq - self.top) & 0xFFFF
        if ahead and ahead < 0x8000:
            self.top = seq
        for old in [q for q in self.seen if (self.top - q) & 0xFFFF >= WINDOW]:
            del self.seen[old]


def _command(rng: random.Random) -> tuple[int, bytes]:
    if rng.random() < 0.7:
        n = rng.choice([2, 4])
        return MsgType.TRAIN, train_payload(n, batch=2, lr_inv=rng.choice([512, 2048, 8192]))
    labels = bytes(rng.randrange(3) for _ in range(4))
    return MsgType.LOAD, load_payload(TENSOR_Y, 0, labels)


def _corrupt(rng: random.Random, encoded: bytes) -> bytes:
    """A damaged copy of one encoded frame: a bit flipped, cut short, or bytes injected."""
    original = encoded[:-1]
    while True:  # a flip to 0x00 turned back into 0x01 may have changed nothing: draw again
        body = bytearray(original)
        kind = rng.randrange(3)
        if kind == 0:
            at = rng.randrange(len(body))
            body[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del body[rng.randrange(1, len(body)) :]
        else:
            at = rng.randrange(len(body) + 1)
            body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        # No zero inside: one frame in, exactly one reply out.
        damaged = bytes(b or 1 for b in body)
        if damaged != original:
            return b"\x00" + damaged + b"\x00"


def _crc(type_: int, seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(HEADER.pack(1, type_, seq, len(payload))))


def run_frames(url: str, frames: int, seed: int) -> Tally:
    """Send ``frames`` frames stop-and-wait; check every reply against :class:`WindowModel`."""
    rng = random.Random(seed)
    tally = Tally()
    sent: list[tuple[int, int, bytes]] = []  # (seq, type, payload) of valid frames
    skipped: list[int] = []
    link = RawLink(url)
    try:
        model = WindowModel(_top(link))
        nxt = (model.top + 1) & 0xFFFF
        for _ in range(frames):
            roll = rng.random()
            if roll < 0.25:
                type_, payload = _command(rng)
                seq = rng.randrange(0x10000)
                link.send(_corrupt(rng, encode_frame(1, type_, seq, payload)))
                reply = link.recv()
                assert _code(reply) in (ErrorCode.BAD_CRC, ErrorCode.BAD_FRAME)
                tally.corrupted += 1
                continue
            if roll < 0.45 and sent:
                seq, type_, payload = rng.choice(sent[-3 * WINDOW :])  # an exact old frame
            elif roll < 0.55 and sent:
                seq = rng.choice(sent[-2 * WINDOW :])[0]
                type_, payload = _command(rng)  # that number, maybe another command
            elif skipped and rng.random() < 0.3:
                seq = skipped.pop(rng.randrange(len(skipped)))
                type_, payload = _command(rng)
            else:
                if rng.random() < 0.1:
                    skipped.append(nxt)
                    nxt = (nxt + 1) & 0xFFFF
                seq, (type_, payload) = nxt, _command(rng)
                nxt = (nxt + 1) & 0xFFFF
            crc = _crc(type_, seq, payload)
            kind = model.classify(seq, crc)
            reply = _ask(link, type_, seq, payload)
            assert reply.seq == seq
            if kind == "new":
                assert reply.type == type_ | REPLY_BIT, reply
                model.record(seq, crc, reply)
                tally.new += 1
                tally.applied.append((type_, payload))
                sent.append((seq, type_, payload))
            elif kind == "replay":
                assert reply == model.seen[seq][1]
                tally.replays += 1
            elif kind == "reused":
                assert _code(reply) == ErrorCode.SEQ_REUSED
                tally.reused += 1
            else:
                assert _code(reply) == ErrorCode.STALE_SEQ
                tally.stale += 1
    finally:
        link.close()
    return tally


def test_ten_thousand_corrupted_and_replayed_frames_apply_each_command_once(
    device_url: str,
) -> None:
    _prepare(device_url)
    _, calls = _weights_and_calls(device_url)
    started = time.monotonic()
    tally = run_frames(device_url, 10_000, seed=14)
    took = time.monotonic() - started
    weights, calls_after = _weights_and_calls(device_url)
    trains = sum(1 for t, _ in tally.applied if t == MsgType.TRAIN)
    assert calls_after - calls == trains
    assert min(tally.replays, tally.reused, tally.stale, tally.corrupted) > 300
    # The same commands, each sent once, from the same start.
    _prepare(device_url)
    with Device.open(device_url) as dev:
        for type_, payload in tally.applied:
            dev.request(MsgType(type_), payload)
    clean, _ = _weights_and_calls(device_url)
    assert weights == clean
    print(
        f"\n{device_url}: {tally.new} applied, {tally.replays} replays, {tally.reused} reused,"
        f" {tally.stale} stale, {tally.corrupted} corrupted in {took:.1f} s"
    )
