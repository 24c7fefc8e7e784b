"""Requests and replies over a :class:`~eddl.mcu.link.Link`: sequence numbers, HELLO, retries.

Every request carries a fresh sequence number. The driver sends it (after a ``0x00`` that
flushes any garbage the device holds), waits for a reply with the same number, and sends the
*same* frame again on a timeout, a damaged reply or a link ERROR, at most ``retries`` times. The
firmware remembers a window of recent sequence numbers with a hash of each command and answers a
repeated one from its reply cache without applying the request again, so a retry can never apply
a command twice. HELLO tells the driver the newest number the device executed, and the driver
continues after it; a request refused for its number alone (``SEQ_REUSED``, ``STALE_SEQ``: some
other client used the device) is sent once more under a fresh number after a new HELLO.
Idempotent requests (LOAD of distinct spans, READ) go out ``window`` at a time (:meth:`pipeline`).
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Sequence

import serial

from eddl.log import get_logger

from .framing import encode_frame
from .link import DeviceError, Link, LinkError
from .protocol import (
    PROTO_VERSION,
    REPLY_BIT,
    ErrorCode,
    Hello,
    MsgType,
    ProtocolError,
    parse_error,
    parse_hello,
)

__all__ = ["Exchange"]

log = get_logger("mcu.driver")

# Upper bound of the firmware's receive buffer before HELLO told us the real one.
_DEFAULT_MAX_PAYLOAD = 1024


class Exchange(Link):
    """Stop-and-wait and pipelined requests with bounded retransmission, in sequence with the
    device (the base of :class:`~eddl.mcu.driver.Device`, which adds the commands)."""

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
        # LOAD/READ frames in flight at once. A real board needs an interrupt- or DMA-driven
        # receive buffer of window x frame bytes for a window above 1 (QEMU buffers for us).
        self.window = window
        self.info: Hello | None = None
        self._seq = (rng or random.Random()).randrange(0x10000)
        super().__init__(port, timeout=timeout, retries=retries)

    @property
    def max_payload(self) -> int:
        return self.info.max_payload if self.info else _DEFAULT_MAX_PAYLOAD

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


class _Resync(Exception):
    """A first transmission was refused for its sequence number (internal to ``request``)."""


def _is_sequence_error(code: ErrorCode | int) -> bool:
    return isinstance(code, ErrorCode) and code.is_sequence_error
