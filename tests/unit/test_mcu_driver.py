"""The driver's request engine against a fake serial link (no device, no firmware)."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from eddl.mcu import link
from eddl.mcu.aio import AsyncDevice
from eddl.mcu.driver import Device, DeviceError, LinkError
from eddl.mcu.framing import Frame, FrameReader, decode_frame, encode_frame
from eddl.mcu.protocol import REPLY_BIT, ErrorCode, MsgType, ProtocolError

Handler = Callable[[Frame, int], list[bytes]]


class FakeSerial:
    """A pyserial look-alike: frames the driver writes go to ``handler(frame, attempt)``,
    whose returned byte strings become readable."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.rx = bytearray()
        self.reader = FrameReader(1 << 16)
        self.seen: list[Frame] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        for enc in self.reader.feed(data):
            assert enc is not None
            frame = decode_frame(enc)
            attempt = sum(1 for f in self.seen if f.seq == frame.seq)
            self.seen.append(frame)
            for out in self.handler(frame, attempt):
                self.rx += out
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self.rx)

    def read(self, n: int) -> bytes:
        if not self.rx:
            time.sleep(0.002)
            return b""
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def close(self) -> None:
        self.closed = True


def reply(
    frame: Frame, payload: bytes = b"", type_: int | None = None, seq: int | None = None
) -> bytes:
    t = frame.type | REPLY_BIT if type_ is None else type_
    return encode_frame(1, t, frame.seq if seq is None else seq, payload)


def error(frame: Frame, code: ErrorCode, seq: int | None = None) -> bytes:
    return encode_frame(
        1,
        MsgType.ERROR,
        frame.seq if seq is None else seq,
        struct.pack("<BBH", code, frame.type, 0),
    )


def make(handler: Handler, retries: int = 3) -> tuple[Device, FakeSerial]:
    port = FakeSerial(handler)
    dev = Device(port, timeout=0.05, retries=retries, rng=random.Random(1))  # type: ignore[arg-type]
    return dev, port


def test_request_returns_reply_payload() -> None:
    dev, port = make(lambda f, a: [reply(f, b"ok")])
    assert dev.request(MsgType.STATS) == b"ok"
    assert len(port.seen) == 1 and dev.link.retransmits == 0


def test_lost_reply_is_retransmitted_with_the_same_seq() -> None:
    dev, port = make(lambda f, a: [] if a == 0 else [reply(f, b"late")])
    assert dev.request(MsgType.STATS) == b"late"
    assert [f.seq for f in port.seen] == [port.seen[0].seq] * 2
    assert dev.link.retransmits == 1


def test_damaged_and_stale_frames_are_skipped() -> None:
    def handler(f: Frame, a: int) -> list[bytes]:
        good = reply(f, b"x")
        damaged = bytearray(good)
        damaged[2] ^= 0x40
        return [b"\x07\x07\x00", bytes(damaged), reply(f, b"old", seq=(f.seq - 1) & 0xFFFF), good]

    dev, _ = make(handler)
    assert dev.request(MsgType.STATS) == b"x"
    assert dev.link.bad_frames == 2 and dev.link.stale_frames == 1


def test_link_error_triggers_an_immediate_retransmit() -> None:
    dev, port = make(lambda f, a: [error(f, ErrorCode.BAD_CRC, 0xFFFF)] if a == 0 else [reply(f)])
    start = time.monotonic()
    assert dev.request(MsgType.HELLO) == b""
    assert dev.link.link_errors == 1 and len(port.seen) == 2
    assert time.monotonic() - start < 0.05 * 2


def test_device_error_is_raised_without_retrying() -> None:
    dev, port = make(lambda f, a: [error(f, ErrorCode.NO_MEMORY)])
    with pytest.raises(DeviceError) as info:
        dev.request(MsgType.SETUP, b"\x01")
    assert info.value.code == ErrorCode.NO_MEMORY and info.value.request == MsgType.SETUP
    assert "NO_MEMORY" in str(info.value) and len(port.seen) == 1


def test_silent_device_gives_link_error_after_bounded_attempts() -> None:
    dev, port = make(lambda f, a: [], retries=2)
    with pytest.raises(LinkError):
        dev.request(MsgType.STATS)
    assert len(port.seen) == 3


def test_wrong_reply_type_and_oversized_payload_are_protocol_errors() -> None:
    dev, port = make(lambda f, a: [reply(f, type_=MsgType.READ | REPLY_BIT)])
    with pytest.raises(ProtocolError):
        dev.request(MsgType.STATS)
    with pytest.raises(ProtocolError):
        dev.request(MsgType.LOAD, bytes(5000))
    assert len(port.seen) == 1  # the oversized one never went out


def test_sequence_numbers_advance_and_wrap() -> None:
    dev, port = make(lambda f, a: [reply(f)])
    dev._seq = 0xFFFE
    for _ in range(3):
        dev.request(MsgType.STATS)
    assert [f.seq for f in port.seen] == [0xFFFF, 0, 1]


def test_load_and_read_are_chunked_to_max_payload() -> None:
    store = bytearray(3000)

    def handler(f: Frame, a: int) -> list[bytes]:
        if f.type == MsgType.LOAD:
            off = struct.unpack_from("<I", f.payload, 1)[0]
            data = f.payload[5:]
            store[off : off + len(data)] = data
            return [reply(f, struct.pack("<I", off + len(data)))]
        _, off, n = struct.unpack("<BIH", f.payload)
        return [reply(f, bytes(store[off : off + n]))]

    dev, port = make(handler)
    blob = bytes(random.Random(3).randbytes(3000))
    dev.load(0, blob)
    assert dev.read(0, 3000) == blob
    assert all(len(f.payload) <= dev.max_payload for f in port.seen)
    assert len(port.seen) > 4


def test_chunks_follow_the_max_payload_hello_advertises() -> None:
    store = bytearray(40_000)
    hello = struct.pack("<BBBBIIIHHIBB", 1, 0, 1, 0, 1, 1, 1, 8192, 2, 1, 4, 0)

    def handler(f: Frame, a: int) -> list[bytes]:
        if f.type == MsgType.HELLO:
            return [reply(f, hello)]
        if f.type == MsgType.LOAD:
            off = struct.unpack_from("<I", f.payload, 1)[0]
            data = f.payload[5:]
            store[off : off + len(data)] = data
            return [reply(f, struct.pack("<I", off + len(data)))]
        _, off, n = struct.unpack("<BIH", f.payload)
        return [reply(f, bytes(store[off : off + n]))]

    dev, port = make(handler)
    assert dev.hello().max_payload == 8192 == dev.max_payload
    blob = random.Random(4).randbytes(40_000)
    dev.load(0, blob)
    assert dev.read(0, 40_000) == blob
    loads = [f for f in port.seen if f.type == MsgType.LOAD]
    # Distinct sequence numbers: on a loaded machine a 50 ms timeout may retransmit a frame.
    assert len({f.seq for f in loads}) == 5 and max(len(f.payload) for f in loads) <= 8192
    with pytest.raises(ProtocolError):
        dev.request(MsgType.LOAD, bytes(8193))  # over the advertised limit: never sent
    assert port.seen[-1].type == MsgType.READ


class QueuedLink(FakeSerial):
    """A slow link: each reply becomes readable ``per_frame`` s after the one before it, as
    frames queued behind each other on a serial line."""

    def __init__(self, handler: Handler, per_frame: float) -> None:
        super().__init__(handler)
        self.per_frame = per_frame
        self.queue: list[tuple[float, bytes]] = []

    def write(self, data: bytes) -> int:
        before = len(self.rx)
        super().write(data)
        if len(self.rx) > before:
            start = max([time.monotonic(), *(t for t, _ in self.queue[-1:])])
            self.queue.append((start + self.per_frame, bytes(self.rx[before:])))
            del self.rx[before:]
        return len(data)

    def read(self, n: int) -> bytes:
        while self.queue and self.queue[0][0] <= time.monotonic():
            self.rx += self.queue.pop(0)[1]
        return super().read(n)


def test_a_window_queued_on_a_slow_link_is_not_retransmitted() -> None:
    """Four replies 0.6 timeouts apart: the last comes 2.4 timeouts after it was sent, but
    each came within a timeout of the one before, so nothing was lost and nothing is resent."""
    port = QueuedLink(lambda f, a: [reply(f, bytes(8))], per_frame=0.06)
    dev = Device(port, timeout=0.1, retries=3, window=4, rng=random.Random(2))  # type: ignore[arg-type]
    bodies = dev.pipeline(MsgType.READ, [struct.pack("<BIH", 0, 8 * k, 8) for k in range(4)])
    assert bodies == [bytes(8)] * 4
    assert dev.link.retransmits == 0 and len(port.seen) == 4


def test_a_silent_link_still_times_out_in_a_window() -> None:
    dev, _ = make(lambda f, a: [], retries=2)
    dev.window = 4
    with pytest.raises(LinkError):
        dev.pipeline(MsgType.READ, [struct.pack("<BIH", 0, 0, 8)] * 3)
    assert dev.link.retransmits == 2 * 3  # each of the three, in turn, up to its retries


async def test_async_device_runs_requests_off_the_loop() -> None:
    dev, _ = make(lambda f, a: [reply(f, struct.pack("<IQIIIIIII", 3, 9, 0, 1, 0, 0, 0, 0, 0))])
    adev = AsyncDevice(dev)
    stats = await adev.stats()
    assert stats.samples == 3 and stats.kernel_ticks == 9
    await adev.close()
    assert dev.port.closed


def test_constructor_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        Device(FakeSerial(lambda f, a: []), timeout=0)  # type: ignore[arg-type]


def test_pipeline_keeps_at_most_window_in_flight_and_resends_the_oldest() -> None:
    held: list[Frame] = []
    max_in_flight = 0

    def handler(f: Frame, a: int) -> list[bytes]:
        nonlocal max_in_flight
        if f.payload == b"\x00" and a == 0:
            return []  # the first request's reply is lost once
        held.append(f)
        max_in_flight = max(max_in_flight, len(held))
        # Answer in reverse order once three are waiting (or at the end).
        if len(held) >= 3 or f.payload == b"\x07":
            out = [reply(g, g.payload) for g in reversed(held)]
            held.clear()
            return out
        return []

    port = FakeSerial(handler)
    dev = Device(port, timeout=0.05, retries=3, window=3, rng=random.Random(2))  # type: ignore[arg-type]
    bodies = dev.pipeline(MsgType.READ, [bytes([i]) for i in range(8)])
    assert bodies == [bytes([i]) for i in range(8)]
    assert dev.link.retransmits >= 1
    assert max_in_flight <= 3


def test_pipeline_raises_device_error_and_link_error() -> None:
    dev, _ = make(lambda f, a: [error(f, ErrorCode.BAD_ARG)])
    with pytest.raises(DeviceError):
        dev.pipeline(MsgType.LOAD, [b"\x00" * 6, b"\x01" * 6])
    dev, port = make(lambda f, a: [], retries=1)
    with pytest.raises(LinkError):
        dev.pipeline(MsgType.READ, [b"a", b"b"])
    assert len(port.seen) <= 2 + 2  # two first tries, one retry of the oldest at most each


class SocketPort:
    """Just enough of pyserial's ``socket://`` port for the driver's direct, non-blocking
    writes: the ``_socket`` it sends on (one end of a real socket pair)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._socket = sock
        self.timeout: float | None = 0

    def write(self, data: bytes) -> int:
        raise AssertionError("the driver writes to the socket itself")

    def close(self) -> None:
        self._socket.close()


def _small_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def test_a_full_link_runs_idle_work_and_delivers_every_byte_in_order() -> None:
    ours, theirs = _small_pair()
    dev = Device(SocketPort(ours), timeout=1.0, retries=2)  # type: ignore[arg-type]
    blob = random.Random(5).randbytes(400_000)  # far more than both socket buffers hold
    got = bytearray()

    def drain() -> None:
        theirs.settimeout(5.0)
        time.sleep(0.05)  # let the writer find the link full first
        while len(got) < len(blob):
            chunk = theirs.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    idle_calls = 0

    def idle() -> bool:
        nonlocal idle_calls
        idle_calls += 1
        return idle_calls <= 3  # some work, then none: the write must wait for the link

    dev._write(blob, idle=idle)
    reader.join(10.0)
    assert bytes(got) == blob
    assert idle_calls >= 4
    dev.close()
    theirs.close()


def test_a_link_that_takes_nothing_is_a_link_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link, "_STALL_MIN", 0.1)
    ours, theirs = _small_pair()
    dev = Device(SocketPort(ours), timeout=0.05, retries=1)  # type: ignore[arg-type]
    start = time.monotonic()
    with pytest.raises(LinkError, match="stalled"):
        dev._write(bytes(1_000_000))
    assert time.monotonic() - start < 5.0
    dev.close()
    theirs.close()


def test_pipeline_sends_consecutive_sequence_numbers_in_order() -> None:
    dev, port = make(lambda f, a: [reply(f, struct.pack("<I", 0))])
    dev.window = 3
    payloads = [struct.pack("<BI", 0, 8 * k) + bytes(8) for k in range(10)]
    dev.pipeline(MsgType.LOAD, payloads)
    seqs = [f.seq for f in port.seen]
    assert seqs == [(seqs[0] + k) & 0xFFFF for k in range(10)]
    assert [f.payload for f in port.seen] == payloads
    dev.request(MsgType.STATS)  # the next request takes the next number
    assert port.seen[-1].seq == (seqs[-1] + 1) & 0xFFFF


def test_a_refused_pipeline_leaves_the_driver_usable() -> None:
    def handler(f: Frame, a: int) -> list[bytes]:
        if f.type == MsgType.LOAD and f.payload[1] == 3:
            return [error(f, ErrorCode.BAD_ARG)]
        return [reply(f, struct.pack("<I", 0))]

    dev, port = make(handler)
    dev.window = 2
    with pytest.raises(DeviceError):
        dev.pipeline(MsgType.LOAD, [struct.pack("<BI", 0, k) + bytes(4) for k in range(8)])
    assert dev.request(MsgType.STATS) == struct.pack("<I", 0)
    assert port.seen[-1].seq not in {f.seq for f in port.seen[:-1]}


def test_direct_reads_return_what_arrived_and_report_a_closed_link() -> None:
    ours, theirs = socket.socketpair()
    dev = Device(SocketPort(ours), timeout=0.5, retries=1)  # type: ignore[arg-type]
    assert dev._read_some(0.01) == b""  # nothing yet: waits, then returns empty
    theirs.sendall(b"abc\x00def")
    got = b""
    deadline = time.monotonic() + 5.0
    while len(got) < 7 and time.monotonic() < deadline:
        got += dev._read_some(0.1)
    assert got == b"abc\x00def"
    theirs.close()
    with pytest.raises(LinkError, match="closed"):
        dev._read_some(1.0)
    dev.close()
