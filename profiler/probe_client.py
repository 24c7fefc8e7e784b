"""The network probe's client: RTT and bandwidth to a peer that serves ``Probe``.

Round-trip time is the median of a few small ``Ping`` calls, after one that opens the
connection. Bandwidth, in each direction, is ``bytes / seconds`` of a timed bulk transfer
(``Upload``: this node to the peer; ``Download``: the peer to this node), measured after one
smaller warm-up transfer (TCP slow start, HTTP/2 window growth), repeated and reduced to the
median. Figures are goodput: payload bytes only.

Everything is bounded by ``ProbeConfig.timeout_s``: each RPC carries a deadline equal to the
time left, so a peer that accepts the connection and never answers ends in :class:`ProbeTimeout`
and one that drops the connection in :class:`ProbeUnavailable`, never a hang. Sizes are checked
before anything is sent (``ValueError``); a peer refusing them answers ``INVALID_ARGUMENT``,
raised as :class:`ProbeRefused`.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import grpc

from eddl.net.channel import open_channel
from eddl.profiler.profiles import LinkEstimate, LinkSource
from eddl.proto.v1 import probe_pb2, probe_pb2_grpc

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "ProbeClient",
    "ProbeConfig",
    "ProbeError",
    "ProbeRefused",
    "ProbeResult",
    "ProbeTimeout",
    "ProbeUnavailable",
    "probe_peer",
]

MAX_PAYLOAD_BYTES = 1 << 30
MAX_CHUNK_BYTES = 1 << 20
_MAX_PING_BYTES = 64 * 1024


class ProbeError(RuntimeError):
    """A probe of ``peer`` failed; ``code`` is the gRPC status when there was one."""

    def __init__(self, peer: str, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"probe of {peer}: {message}")
        self.peer = peer
        self.code = code


class ProbeTimeout(ProbeError):
    """The peer did not answer within the configured timeout."""


class ProbeUnavailable(ProbeError):
    """The peer could not be reached or dropped the connection."""


class ProbeRefused(ProbeError):
    """The peer refused the request (e.g. a transfer larger than it accepts)."""


def _int_in(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """How much to send and how long to wait. Checked at construction (``ValueError``)."""

    payload_bytes: int = 1 << 20
    chunk_bytes: int = 256 * 1024
    repeats: int = 3
    ping_count: int = 5
    ping_bytes: int = 64
    timeout_s: float = 30.0
    warmup: bool = True

    def __post_init__(self) -> None:
        _int_in("payload_bytes", self.payload_bytes, 1, MAX_PAYLOAD_BYTES)
        _int_in("chunk_bytes", self.chunk_bytes, 1, MAX_CHUNK_BYTES)
        _int_in("repeats", self.repeats, 1, 100)
        _int_in("ping_count", self.ping_count, 1, 1000)
        _int_in("ping_bytes", self.ping_bytes, 0, _MAX_PING_BYTES)
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise ValueError(f"timeout_s must be a finite number, got {t!r}")
        if not 0 < t <= 3600:
            raise ValueError(f"timeout_s must lie in (0, 3600], got {t!r}")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Medians of one probe run, plus every individual figure behind them."""

    peer: str
    rtt_seconds: float
    upload_bytes_per_second: float
    download_bytes_per_second: float
    rtt_samples: tuple[float, ...]
    upload_samples: tuple[float, ...]
    download_samples: tuple[float, ...]
    measured_at: float

    def to_link_estimate(self) -> LinkEstimate:
        return LinkEstimate(
            peer=self.peer,
            rtt_seconds=self.rtt_seconds,
            upload_bytes_per_second=self.upload_bytes_per_second,
            download_bytes_per_second=self.download_bytes_per_second,
            source=LinkSource.PROBE,
            measured_at=self.measured_at,
            confidence=1.0,
            observations=len(self.upload_samples),
        )


class ProbeClient:
    """Probes one peer (``host:port``). Use ``async with``, or call :meth:`close`."""

    def __init__(
        self,
        peer: str,
        config: ProbeConfig | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if not isinstance(peer, str) or ":" not in peer:
            raise ValueError(f"peer must be HOST:PORT, got {peer!r}")
        self.peer = peer
        self.config = config if config is not None else ProbeConfig()
        # A cluster daemon speaks mutual TLS: ``credentials`` of a cluster certificate.
        self._channel = open_channel(peer, credentials=credentials)
        self._stub = probe_pb2_grpc.ProbeStub(self._channel)
        self._chunk = probe_pb2.ProbeChunk(payload=os.urandom(self.config.chunk_bytes))
        self._ping_payload = os.urandom(self.config.ping_bytes)
        self._deadline: float | None = None

    async def __aenter__(self) -> ProbeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # -- bounded calls ------------------------------------------------------------------------

    def _time_left(self) -> float:
        if self._deadline is None:
            return self.config.timeout_s
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ProbeTimeout(self.peer, f"no result within {self.config.timeout_s} s")
        return left

    def _error(self, exc: grpc.aio.AioRpcError, *, streaming: bool = False) -> ProbeError:
        code = exc.code()
        detail = exc.details() or code.name
        if streaming and code == grpc.StatusCode.INTERNAL:
            # A client-stream write that fails because the connection went away surfaces as
            # INTERNAL "Internal error from Core" in grpc aio (grpc/grpc#36066).
            return ProbeUnavailable(self.peer, f"connection lost while streaming: {detail}", code)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ProbeTimeout(
                self.peer, f"no answer within {self.config.timeout_s} s ({detail})", code
            )
        if code == grpc.StatusCode.UNAVAILABLE:
            return ProbeUnavailable(self.peer, f"unreachable or connection lost: {detail}", code)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            return ProbeRefused(self.peer, f"refused: {detail}", code)
        return ProbeError(self.peer, f"{code.name}: {detail}", code)

    async def ping(self, payload_bytes: int | None = None) -> float:
        """One round trip carrying ``payload_bytes`` each way; returns seconds."""
        size = self.config.ping_bytes if payload_bytes is None else payload_bytes
        _int_in("payload_bytes", size, 0, _MAX_PING_BYTES)
        payload = self._ping_payload if size == len(self._ping_payload) else os.urandom(size)
        request = probe_pb2.PingRequest(payload=payload, reply_bytes=size)
        t0 = time.perf_counter()
        try:
            await self._stub.Ping(request, timeout=self._time_left())
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        return time.perf_counter() - t0

    async def upload(self, total_bytes: int) -> float:
        """Stream ``total_bytes`` to the peer; returns payload bytes per second."""
        _int_in("total_bytes", total_bytes, 1, MAX_PAYLOAD_BYTES)
        chunk = self._chunk
        size = self.config.chunk_bytes

        async def chunks() -> AsyncIterator[probe_pb2.ProbeChunk]:
            sent = 0
            while sent < total_bytes:
                n = min(size, total_bytes - sent)
                yield chunk if n == size else probe_pb2.ProbeChunk(payload=chunk.payload[:n])
                sent += n

        t0 = time.perf_counter()
        try:
            reply = await self._stub.Upload(chunks(), timeout=self._time_left())
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, streaming=True) from exc
        seconds = time.perf_counter() - t0
        if reply.bytes_received != total_bytes:
            raise ProbeError(
                self.peer, f"peer received {reply.bytes_received} of {total_bytes} bytes"
            )
        return total_bytes / seconds

    async def download(self, total_bytes: int) -> float:
        """Have the peer stream ``total_bytes``; returns payload bytes per second."""
        _int_in("total_bytes", total_bytes, 1, MAX_PAYLOAD_BYTES)
        request = probe_pb2.DownloadRequest(
            total_bytes=total_bytes, chunk_bytes=self.config.chunk_bytes
        )
        received = 0
        t0 = time.perf_counter()
        try:
            async for chunk in self._stub.Download(request, timeout=self._time_left()):
                received += len(chunk.payload)
                if received > total_bytes:
                    raise ProbeError(self.peer, f"peer sent more than {total_bytes} bytes")
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from exc
        seconds = time.perf_counter() - t0
        if received != total_bytes:
            raise ProbeError(self.peer, f"peer sent {received} of {total_bytes} bytes")
        return total_bytes / seconds

    # -- the whole measurement ----------------------------------------------------------------

    async def measure(self) -> ProbeResult:
        """RTT, upload and download rates, all within ``config.timeout_s``."""
        cfg = self.config
        self._deadline = time.monotonic() + cfg.timeout_s
        try:
            # The outer guard catches anything not covered by an RPC deadline (e.g. a stalled
            # request stream); the RPC deadlines normally fire first with a precise reason.
            async with asyncio.timeout(cfg.timeout_s + 1.0):
                return await self._measure(cfg)
        except TimeoutError as exc:
            raise ProbeTimeout(self.peer, f"no result within {cfg.timeout_s} s") from exc
        finally:
            self._deadline = None

    async def _measure(self, cfg: ProbeConfig) -> ProbeResult:
        await self.ping()  # connects (TCP + HTTP/2 handshake): not a round trip to report
        rtts = [await self.ping() for _ in range(cfg.ping_count)]
        warm = min(cfg.payload_bytes, max(cfg.chunk_bytes, cfg.payload_bytes // 4))
        if cfg.warmup:
            await self.upload(warm)
        ups = [await self.upload(cfg.payload_bytes) for _ in range(cfg.repeats)]
        if cfg.warmup:
            await self.download(warm)
        downs = [await self.download(cfg.payload_bytes) for _ in range(cfg.repeats)]
        return ProbeResult(
            peer=self.peer,
            rtt_seconds=statistics.median(rtts),
            upload_bytes_per_second=statistics.median(ups),
            download_bytes_per_second=statistics.median(downs),
            rtt_samples=tuple(rtts),
            upload_samples=tuple(ups),
            download_samples=tuple(downs),
            measured_at=time.time(),
        )


async def probe_peer(
    peer: str,
    config: ProbeConfig | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> ProbeResult:
    """Measure the link to ``peer`` once (opens and closes its own channel)."""
    async with ProbeClient(peer, config, credentials) as client:
        return await client.measure()
