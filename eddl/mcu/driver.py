"""The MCU driver: stop-and-wait requests over any pyserial URL, with bounded retransmission.

Every request carries a fresh sequence number. The driver sends it (after a ``0x00`` that
flushes any garbage the device holds), waits for a reply with the same number, and sends the
*same* frame again on a timeout, a damaged reply or a link ERROR, at most ``retries`` times. The
firmware remembers a window of recent sequence numbers with a hash of each command and answers a
repeated one from its reply cache without applying the request again, so a retry can never apply
a command twice. HELLO tells the driver the newest number the device executed, and the driver
continues after it; a request refused for its number alone (``SEQ_REUSED``, ``STALE_SEQ``: some
other client used the device) is sent once more under a fresh number after a new HELLO.
Blocking I/O runs in the caller's thread; :class:`AsyncDevice` moves it off the event loop with
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import serial

from eddl.log import get_logger

from .framing import CRC_BYTES, HEADER, FrameError, FrameReader, decode_frame, encode_frame
from .protocol import (
    PROTO_VERSION,
    REPLY_BIT,
    ErrorCode,
    Hello,
    MsgType,
    ProtocolError,
    SetupSpec,
    Stats,
    load_payload,
    parse_error,
    parse_hello,
    parse_stats,
    read_payload,
    setup_payload,
    train_payload,
)

__all__ = ["Device", "DeviceError", "LinkError", "LinkStats", "McuError"]

log = get_logger("mcu.driver")

# Upper bound of the firmware's receive buffer before HELLO told us the real one.
_DEFAULT_MAX_PAYLOAD = 1024
# Bytes taken per read: a few frames of the largest size, so a fast link needs few calls.
_READ_MAX = 1 << 18
# Seconds a write may wait for the link to take any byte before the link counts as dead.
_STALL_MIN = 5.0


class McuError(Exception):
    """Base of the MCU driver's errors."""


class LinkError(McuError):
    """No valid reply after every retransmission, or the link closed."""


class DeviceError(McuError):
    """The device refused a request with an ERROR frame; nothing was changed on the device."""

    def __init__(self, code: ErrorCode | int, request: int, detail: int = 0) -> None:
        name = code.name if isinstance(code, ErrorCode) else f"code {code}"
        try:
            req = MsgType(request).name
        except ValueError:
            req = f"0x{request:02x}"
        super().__init__(f"device refused {req}: {name}")
        self.code = code
        self.request = request
        self.detail = detail


class LinkStats:
    """What the driver saw on the link (for logs, tests and benchmarks)."""

    def __init__(self) -> None:
        self.requests = 0
        self.retransmits = 0
        self.bad_frames = 0
        self.stale_frames = 0
        self.link_errors = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class Device:
    """One device on a serial link (``serial.serial_for_url``: path, pty, ``socket://``)."""

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        timeout: float = 1.0,
        retries: int = 8,
        window: int = 4,
        rng: random.Random | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0 or window < 1:
            raise ValueError("timeout must be positive, retries >= 0 and window >= 1")
        self.port = port
        # Non-blocking reads return whatever has arrived; waiting is done with select().
        self.port.timeout = 0
        self.timeout = timeout
        self.retries = retries
        # LOAD/READ frames in flight at once. A real board needs an interrupt- or DMA-driven
        # receive buffer of window x frame bytes for a window above 1 (QEMU buffers for us).
        self.window = window
        self.link = LinkStats()
        self.info: Hello | None = None
        self._seq = (rng or random.Random()).randrange(0x10000)
        self._reader = FrameReader(2 * (HEADER.size + 0xFFFF + CRC_BYTES))
        self._backlog: collections.deque[bytes | None] = collections.deque()
        self._direct = _direct_io(port)

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout: float = 1.0,
        retries: int = 8,
        baudrate: int = 115200,
        connect_timeout: float = 10.0,
        window: int = 4,
    ) -> Device:
        """Open ``url`` (retrying a refused TCP connection for ``connect_timeout`` s), HELLO."""
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                port = serial.serial_for_url(url, baudrate=baudrate, timeout=0)
                break
            except (serial.SerialException, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise LinkError(f"cannot open {url}: {exc}") from exc
                time.sleep(0.05)
        _no_delay(port)
        dev = cls(port, timeout=timeout, retries=retries, window=window)
        try:
            # A link that was just (re)opened may miss its first frame (a board resetting on
            # open, a TCP serial backend still switching clients), so HELLO retries quickly.
            dev.hello(timeout=min(timeout, 0.3))
        except BaseException:
            dev.close()
            raise
        return dev

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def max_payload(self) -> int:
        return self.info.max_payload if self.info else _DEFAULT_MAX_PAYLOAD

    # ---- the request/reply engine ----

    def request(
        self, type_: MsgType, payload: bytes = b"", *, timeout: float | None = None
    ) -> bytes:
        """Send one request and return its reply payload (retransmitting as needed).

        A request refused for its sequence number alone, on its first transmission, was not
        applied: the driver learns the device's newest number from HELLO and sends it once more
        under the next one. A later refusal raises :class:`DeviceError`."""
        try:
            return self._request(type_, payload, timeout=timeout, resync=True)
        except _Resync:
            self.hello()
            return self._request(type_, payload, timeout=timeout, resync=False)

    def _request(
        self, type_: MsgType, payload: bytes, *, timeout: float | None, resync: bool
    ) -> bytes:
        if len(payload) > self.max_payload:
            raise ProtocolError(
                f"{len(payload)}-byte payload exceeds the device's {self.max_payload}"
            )
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        frame = encode_frame(PROTO_VERSION, int(type_), seq, payload, lead=True)
        wait = self.timeout if timeout is None else timeout
        self.link.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.link.retransmits += 1
                log.debug("retransmit", type=type_.name, seq=seq, attempt=attempt)
            self._write(frame)
            reply = self._await(seq, wait)
            if reply is None:
                continue
            rtype, body = reply
            if rtype == MsgType.ERROR:
                code, req, detail = parse_error(body)
                # Only the first transmission: a refusal of a retransmission could hide an
                # earlier copy that was applied (its reply lost) and then left the window.
                if resync and attempt == 0 and _is_sequence_error(code):
                    raise _Resync
                raise DeviceError(code, req, detail)
            if rtype != (int(type_) | REPLY_BIT):
                raise ProtocolError(f"reply type 0x{rtype:02x} to {type_.name}")
            return body
        raise LinkError(f"{type_.name}: no valid reply after {self.retries + 1} attempts")

    def _write(self, data: bytes | memoryview, idle: Callable[[], bool] | None = None) -> None:
        """Write all of ``data``. While the link cannot take more, ``idle()`` is called to do
        other work (it returns False when it has none) before waiting for the link."""
        direct = self._direct
        if direct is None:
            try:
                self.port.write(data)
                self.port.flush()
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"write failed: {exc}") from exc
            return
        fd, send = direct.fd, direct.send
        view = memoryview(data)
        # A link that takes nothing for as long as every retry would wait for a reply (and at
        # least _STALL_MIN: a slow UART frees its buffer in steps) is dead.
        stall = max(self.timeout * (self.retries + 1), _STALL_MIN)
        while view:
            try:
                n = send(view)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                raise LinkError(f"write failed: {exc}") from exc
            if n:
                view = view[n:]
                continue
            if idle is not None and idle():
                continue
            try:
                ready = select.select([], [fd], [], stall)[1]
            except (OSError, ValueError) as exc:
                raise LinkError(f"write failed: {exc}") from exc
            if not ready:
                raise LinkError(f"write stalled: the link took nothing for {stall:.1f} s")

    def _read_some(self, wait: float) -> bytes:
        """Whatever bytes have arrived, waiting up to ``wait`` seconds for the first one."""
        direct = self._direct
        try:
            if direct is not None:
                data = self._recv(direct)
                if not data and select.select([direct.fd], [], [], wait)[0]:
                    data = self._recv(direct)
                    if not data:
                        raise LinkError("the link closed")
                return data
            data = bytes(self.port.read(65536))
            if data:
                return data
            try:
                fd = self.port.fileno()
            except (AttributeError, OSError, ValueError, serial.SerialException):
                time.sleep(min(wait, 0.002))  # a transport without a file descriptor
                return b""
            select.select([fd], [], [], wait)
            return bytes(self.port.read(65536))
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"read failed: {exc}") from exc

    @staticmethod
    def _recv(direct: _DirectIO) -> bytes:
        """Everything that has arrived, up to ``_READ_MAX`` bytes: a tty hands out at most a
        few KB per read, so this reads until nothing is left rather than returning once."""
        chunks: list[bytes] = []
        total = 0
        while total < _READ_MAX:
            try:
                chunk = direct.recv(_READ_MAX - total)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:  # end of stream: the caller finds out on its next read
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    def _await(self, seq: int, wait: float) -> tuple[int, bytes] | None:
        """The reply (type, payload) to ``seq``, or None to retransmit (timeout, link error)."""
        got = self._await_any({seq}, wait)
        return None if got is None else got[1:]

    def _await_any(self, seqs: set[int], wait: float) -> tuple[int, int, bytes] | None:
        """The first reply (seq, type, payload) to one of ``seqs``, or None (timeout, link
        error)."""
        deadline = time.monotonic() + wait
        while True:
            while self._backlog:
                encoded = self._backlog.popleft()
                if encoded is None:
                    self.link.bad_frames += 1
                    continue
                try:
                    frame = decode_frame(encoded)
                except FrameError:
                    self.link.bad_frames += 1
                    continue
                if frame.type == MsgType.ERROR and len(frame.payload) == 4:
                    code, _req, _detail = parse_error(frame.payload)
                    if isinstance(code, ErrorCode) and code.is_link_error:
                        # Some frame we sent arrived damaged; ours may be the one.
                        self.link.link_errors += 1
                        return None
                if frame.seq not in seqs:
                    self.link.stale_frames += 1
                    continue
                if frame.version != PROTO_VERSION:
                    raise ProtocolError(f"device speaks protocol {frame.version}")
                return frame.seq, frame.type, frame.payload
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._backlog.extend(self._reader.feed(self._read_some(min(0.05, left))))

    # ---- messages ----

    def hello(self, *, timeout: float | None = None) -> Hello:
        """Ask for the device's capabilities, and continue after its newest sequence number
        (HELLO is never refused for its number: the device always executes it)."""
        info = parse_hello(self._request(MsgType.HELLO, b"", timeout=timeout, resync=False))
        if info.proto_version != PROTO_VERSION:
            raise ProtocolError(f"device speaks protocol {info.proto_version}")
        self.info = info
        if info.last_seq is not None:
            self._seq = info.last_seq
        return info

    def setup(self, spec: SetupSpec) -> tuple[int, int]:
        """Allocate the model on the device: ``(arena bytes used, arena size)``."""
        used, arena = struct.unpack("<II", self.request(MsgType.SETUP, setup_payload(spec)))
        return used, arena

    def load(self, tensor: int, data: bytes, *, offset: int = 0) -> None:
        """Write ``data`` into a tensor in ``max_payload`` frames, ``window`` in flight."""
        step = (self.max_payload - 5) & ~7
        payloads = [
            load_payload(tensor, offset + start, data[start : start + step])
            for start in range(0, len(data), step)
        ]
        for body in self._pipeline_synced(MsgType.LOAD, payloads):
            if len(body) != 4:
                raise ProtocolError(f"LOAD reply of {len(body)} bytes")

    def read(self, tensor: int, nbytes: int, *, offset: int = 0) -> bytes:
        """Read ``nbytes`` of a tensor in ``max_payload`` frames, ``window`` in flight."""
        step = self.max_payload & ~7
        spans = [(off, min(step, nbytes - off)) for off in range(0, nbytes, step)]
        bodies = self._pipeline_synced(
            MsgType.READ, [read_payload(tensor, offset + off, n) for off, n in spans]
        )
        for body, (_, n) in zip(bodies, spans, strict=True):
            if len(body) != n:
                raise ProtocolError(f"READ returned {len(body)} bytes, asked {n}")
        return b"".join(bodies)

    def _pipeline_synced(self, type_: MsgType, payloads: Sequence[bytes]) -> list[bytes]:
        """:meth:`pipeline`, run again once after a HELLO when the device refused a request
        for its sequence number: LOADs of distinct spans and READs may be repeated."""
        try:
            return self.pipeline(type_, payloads)
        except DeviceError as exc:
            if not _is_sequence_error(exc.code):
                raise
        self.hello()
        return self.pipeline(type_, payloads)

    def pipeline(self, type_: MsgType, payloads: Sequence[bytes]) -> list[bytes]:
        """Send idempotent requests (LOAD of distinct spans, READ) with up to ``window`` in
        flight; return the reply payloads in order.

        The device's replay window (16 numbers) is deeper than any pipeline window in use, so a
        retransmitted LOAD gets its kept reply and a READ is answered again (it changes
        nothing). The window hides the round trip, which dominates on slow links.
        """
        for p in payloads:
            if len(p) > self.max_payload:
                raise ProtocolError(f"{len(p)}-byte payload exceeds {self.max_payload}")
        # A retransmitted request must still be inside the device's replay window.
        seen = self.info.seq_window if self.info is not None else 0
        depth = min(self.window, seen) if seen else self.window
        replies: dict[int, bytes] = {}
        inflight: dict[int, tuple[int, bytes, int, float]] = {}  # seq -> (index, frame, tries, t)
        # Frames are encoded up to a window ahead, in the time this thread would otherwise
        # block: while a write waits for the link to take more bytes (a pty or a UART takes
        # them only as fast as the device reads) and before waiting for a reply. Encoding and
        # transfer then overlap instead of taking turns.
        ahead: collections.deque[tuple[int, bytes]] = collections.deque()
        nxt = 0  # the next payload to encode

        def encode_one() -> bool:
            nonlocal nxt
            if nxt >= len(payloads) or len(ahead) >= depth:
                return False
            self._seq = (self._seq + 1) & 0xFFFF
            frame = encode_frame(PROTO_VERSION, int(type_), self._seq, payloads[nxt], lead=True)
            ahead.append((self._seq, frame))
            nxt += 1
            return True

        sent = 0
        # The requests of a window queue behind each other on the link: the oldest one's clock
        # starts when it was sent or when the previous reply came in, whichever is later, so a
        # deep window of large frames on a slow link is not mistaken for lost frames.
        progress = time.monotonic()
        while len(replies) < len(payloads):
            while sent < len(payloads) and len(inflight) < depth:
                if not ahead:
                    encode_one()
                seq, frame = ahead.popleft()
                self.link.requests += 1
                self._write(frame, idle=encode_one)
                inflight[seq] = (sent, frame, 0, time.monotonic())
                sent += 1
            while encode_one():
                pass
            oldest = min(inflight, key=lambda s: inflight[s][3])
            wait = max(inflight[oldest][3], progress) + self.timeout - time.monotonic()
            got = self._await_any(set(inflight), wait) if wait > 0 else None
            if got is not None:
                seq, rtype, body = got
                progress = time.monotonic()
                index = inflight.pop(seq)[0]
                if rtype == MsgType.ERROR:
                    code, req, detail = parse_error(body)
                    raise DeviceError(code, req, detail)
                if rtype != (int(type_) | REPLY_BIT):
                    raise ProtocolError(f"reply type 0x{rtype:02x} to {type_.name}")
                replies[index] = body
                continue
            # The oldest timed out or a link error came back: resend the oldest.
            index, frame, tries, _ = inflight[oldest]
            if tries >= self.retries:
                raise LinkError(f"{type_.name}: no valid reply after {self.retries + 1} attempts")
            self.link.retransmits += 1
            self._write(frame)
            inflight[oldest] = (index, frame, tries + 1, time.monotonic())
        return [replies[i] for i in range(len(payloads))]

    def train(
        self,
        n: int,
        *,
        batch: int = 1,
        epochs: int = 1,
        layer: int | None = None,
        lr_inv: int = 0,
        lr: float = 0.0,
        timeout: float | None = None,
    ) -> tuple[int, int]:
        """Train on the first ``n`` buffered samples: ``(samples trained, kernel ticks)``."""
        body = self.request(
            MsgType.TRAIN,
            train_payload(n, batch=batch, epochs=epochs, layer=layer, lr_inv=lr_inv, lr=lr),
            timeout=timeout,
        )
        samples, ticks = struct.unpack("<II", body)
        return samples, ticks

    def predict(self, n: int, *, timeout: float | None = None) -> npt.NDArray[np.int64]:
        body = self.request(MsgType.PREDICT, struct.pack("<H", n), timeout=timeout)
        if len(body) != n:
            raise ProtocolError(f"PREDICT returned {len(body)} labels, asked {n}")
        return np.frombuffer(body, dtype=np.uint8).astype(np.int64)

    def stats(self) -> Stats:
        return parse_stats(self.request(MsgType.STATS))

    def linktest_upload(self, nbytes: int, *, timeout: float = 60.0) -> float:
        """Seconds to push ``nbytes`` raw bytes (no framing) to the device: the raw link rate."""
        self.request(MsgType.LINKTEST, struct.pack("<BI", 0, nbytes))
        seq = self._seq
        blob = memoryview(bytes(range(1, 256)) * (nbytes // 255 + 1))
        start = time.perf_counter()
        # One write per frame's worth of bytes, as LOAD makes: the comparison is then about
        # what framing costs, not about how many system calls each side was allowed.
        step = self.max_payload
        for k in range(0, nbytes, step):
            self._write(blob[k : min(nbytes, k + step)])
        if self._await(seq, timeout) is None:
            raise LinkError("LINKTEST upload: no completion frame")
        return time.perf_counter() - start

    def linktest_download(self, nbytes: int, *, timeout: float = 60.0) -> float:
        """Seconds for the device to send ``nbytes`` raw bytes plus one short frame."""
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        start = time.perf_counter()
        request = struct.pack("<BI", 1, nbytes)
        self._write(encode_frame(PROTO_VERSION, MsgType.LINKTEST, seq, request, lead=True))
        got = 0
        deadline = time.monotonic() + timeout
        while got < nbytes:
            if time.monotonic() > deadline:
                raise LinkError("LINKTEST download timed out")
            chunk = self._read_some(0.05)
            got += len(chunk)
            if got > nbytes:  # the completion frame's first bytes came with the last chunk
                self._backlog.extend(self._reader.feed(chunk[len(chunk) - (got - nbytes) :]))
        if self._await(seq, timeout) is None:
            raise LinkError("LINKTEST download: no completion frame")
        return time.perf_counter() - start


class _Resync(Exception):
    """A first transmission was refused for its sequence number (internal to ``request``)."""


def _is_sequence_error(code: ErrorCode | int) -> bool:
    return isinstance(code, ErrorCode) and code.is_sequence_error


class _DirectIO(NamedTuple):
    """Non-blocking system calls on a port's descriptor: ``send`` returns how many bytes
    went out, ``recv`` what has arrived (b"" if nothing has)."""

    fd: int
    send: Callable[[memoryview], int]
    recv: Callable[[int], bytes]


def _direct_io(port: serial.SerialBase) -> _DirectIO | None:
    """Direct I/O on ``port`` when it is a TCP socket or a POSIX tty (both of which pyserial
    opens non-blocking), or None for other transports (which go through ``port.read/write``).

    Writing directly lets the driver do useful work while the link is full; it also skips
    ``port.write``'s copy of the unsent rest after each partial write, and ``flush()``, which
    on a tty waits until every byte has left (on a UART, until the last bit is on the wire) and
    so would leave the link idle between frames. Reading directly takes what has arrived in
    one system call and one copy, where ``port.read`` copies it twice.
    """
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket) and sock.gettimeout() == 0.0:
        return _DirectIO(sock.fileno(), sock.send, sock.recv)
    fd = getattr(port, "fd", None)
    if isinstance(port, serial.Serial) and isinstance(fd, int) and hasattr(os, "get_blocking"):
        with contextlib.suppress(OSError):
            if not os.get_blocking(fd):
                write, read = functools.partial(os.write, fd), functools.partial(os.read, fd)
                return _DirectIO(fd, write, read)
    return None


def _no_delay(port: serial.SerialBase) -> None:
    """Disable Nagle on ``socket://`` links: each small request would otherwise wait for the
    previous segment's ACK (delayed ACKs cost up to tens of ms per request)."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
