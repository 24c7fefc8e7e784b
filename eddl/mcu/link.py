"""The framed serial link under the MCU driver: bytes in and out, frames cut, replies matched.

:class:`Link` owns the port (any ``serial.serial_for_url`` transport). On a TCP socket or a POSIX
tty it reads and writes the non-blocking descriptor directly; other transports go through
``port.read/write``. It writes whole frames, cuts what arrives into frames, and hands back the
first valid reply to a set of sequence numbers, counting what it drops (:class:`LinkStats`). The
errors of the driver live here too, since every layer above raises them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import select
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple, Self

import serial

from .framing import CRC_BYTES, HEADER, FrameError, FrameReader, decode_frame
from .protocol import PROTO_VERSION, ErrorCode, MsgType, ProtocolError, parse_error

__all__ = ["DeviceError", "Link", "LinkError", "LinkStats", "McuError"]

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


class Link:
    """A serial port carrying frames: the byte I/O and the matching of replies to requests.

    ``timeout`` and ``retries`` bound how long a write may stall (as long as every retry would
    wait for a reply); the request layer above (:class:`~eddl.mcu.exchange.Exchange`) checks
    them and sends the frames."""

    def __init__(self, port: serial.SerialBase, *, timeout: float, retries: int) -> None:
        self.port = port
        # Non-blocking reads return whatever has arrived; waiting is done with select().
        self.port.timeout = 0
        self.timeout = timeout
        self.retries = retries
        self.link = LinkStats()
        self._reader = FrameReader(2 * (HEADER.size + 0xFFFF + CRC_BYTES))
        self._backlog: collections.deque[bytes | None] = collections.deque()
        self._direct = _direct_io(port)

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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
