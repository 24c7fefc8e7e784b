"""The MCU driver: :class:`Device`, the commands a device answers, over any pyserial URL.

The layers under it: :mod:`eddl.mcu.link` (byte I/O, frames, reply matching, the errors) and
:mod:`eddl.mcu.exchange` (sequence numbers, HELLO, bounded retransmission, pipelined requests).
Blocking I/O runs in the caller's thread; :class:`AsyncDevice` moves it off the event loop with
:func:`asyncio.to_thread`.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import numpy.typing as npt
import serial

from .exchange import Exchange
from .framing import encode_frame
from .link import DeviceError, LinkError, LinkStats, McuError
from .protocol import (
    PROTO_VERSION,
    MsgType,
    ProtocolError,
    SetupSpec,
    Stats,
    load_payload,
    parse_stats,
    read_payload,
    setup_payload,
    train_payload,
)

# The errors are raised by every layer; importers take them from here, with Device.
__all__ = ["Device", "DeviceError", "LinkError", "LinkStats", "McuError"]


class Device(Exchange):
    """One device on a serial link (``serial.serial_for_url``: path, pty, ``socket://``)."""

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


def _no_delay(port: serial.SerialBase) -> None:
    """Disable Nagle on ``socket://`` links: each small request would otherwise wait for the
    previous segment's ACK (delayed ACKs cost up to tens of ms per request)."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
