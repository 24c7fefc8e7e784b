"""The network probe's server side: the ``Probe`` gRPC service that leaders mount.

``Ping`` echoes for round-trip time, ``Upload`` swallows a stream and reports what arrived,
``Download`` streams a requested amount. Requests beyond :class:`ProbeLimits` (a payload, a
chunk or a whole transfer too large, too many probes at once) are refused with
``INVALID_ARGUMENT`` / ``RESOURCE_EXHAUSTED`` before any work, so a probe cannot be used to
make a leader send or swallow unbounded data.

Mount it in a daemon with :func:`add_probe_servicer`, or run it alone::

    python -m eddl.profiler serve --bind 127.0.0.1:0   # prints "PROBE_PORT <port>", serves
    eddl profile --serve-probe                          # the same, from the CLI
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from eddl.log import get_logger
from eddl.net.server import RunningServer, start_server
from eddl.proto.v1 import probe_pb2, probe_pb2_grpc

__all__ = [
    "PROBE_SERVICE_NAME",
    "ProbeLimits",
    "ProbeServicer",
    "add_probe_servicer",
    "serve_probe",
    "start_probe_server",
]

PROBE_SERVICE_NAME = probe_pb2.DESCRIPTOR.services_by_name["Probe"].full_name
_log = get_logger("profiler.probe")


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """What one probe request may ask of the server."""

    max_ping_bytes: int = 64 * 1024
    max_chunk_bytes: int = 1024 * 1024
    max_transfer_bytes: int = 256 * 1024 * 1024
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        for name in ("max_ping_bytes", "max_chunk_bytes", "max_transfer_bytes", "max_concurrent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        # gRPC refuses messages over 4 MiB by default; a bigger chunk could never arrive.
        if self.max_chunk_bytes > 3 * 1024 * 1024:
            raise ValueError("max_chunk_bytes must be <= 3 MiB (gRPC's message limit is 4 MiB)")


class ProbeServicer(probe_pb2_grpc.ProbeServicer):
    """Validates each request against ``limits``, then does the (trivial) work."""

    def __init__(self, limits: ProbeLimits | None = None) -> None:
        self.limits = limits if limits is not None else ProbeLimits()
        self._slots = asyncio.Semaphore(self.limits.max_concurrent)
        self._filler = os.urandom(self.limits.max_chunk_bytes)

    async def _acquire(self, context: grpc.aio.ServicerContext[object, object]) -> None:
        # Semaphore.locked() is "no slot free": refuse at once rather than queue the prober.
        if self._slots.locked():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many probes at once")
        await self._slots.acquire()

    async def Ping(
        self,
        request: probe_pb2.PingRequest,
        context: grpc.aio.ServicerContext[probe_pb2.PingRequest, probe_pb2.PingReply],
    ) -> probe_pb2.PingReply:
        lim = self.limits.max_ping_bytes
        if len(request.payload) > lim or request.reply_bytes > lim:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ping payload and reply_bytes must be <= {lim} bytes",
            )
        return probe_pb2.PingReply(
            payload=self._filler[: request.reply_bytes], server_time=time.time()
        )

    async def Upload(
        self,
        request_iterator: AsyncIterator[probe_pb2.ProbeChunk],
        context: grpc.aio.ServicerContext[probe_pb2.ProbeChunk, probe_pb2.UploadReply],
    ) -> probe_pb2.UploadReply:
        await self._acquire(context)
        try:
            total = 0
            chunks = 0
            first = last = 0.0
            async for chunk in request_iterator:
                size = len(chunk.payload)
                if size > self.limits.max_chunk_bytes:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"chunk of {size} bytes exceeds {self.limits.max_chunk_bytes}",
                    )
                total += size
                if total > self.limits.max_transfer_bytes:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"upload exceeds {self.limits.max_transfer_bytes} bytes",
                    )
                last = time.perf_counter()
                if chunks == 0:
                    first = last
                chunks += 1
            return probe_pb2.UploadReply(
                bytes_received=total, chunks_received=chunks, server_seconds=last - first
            )
        finally:
            self._slots.release()

    async def Download(
        self,
        request: probe_pb2.DownloadRequest,
        context: grpc.aio.ServicerContext[probe_pb2.DownloadRequest, probe_pb2.ProbeChunk],
    ) -> AsyncIterator[probe_pb2.ProbeChunk]:
        total, chunk_bytes = request.total_bytes, request.chunk_bytes
        if total < 1 or total > self.limits.max_transfer_bytes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"total_bytes must lie in 1..{self.limits.max_transfer_bytes}, got {total}",
            )
        if chunk_bytes < 1 or chunk_bytes > self.limits.max_chunk_bytes:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"chunk_bytes must lie in 1..{self.limits.max_chunk_bytes}, got {chunk_bytes}",
            )
        await self._acquire(context)
        try:
            full = probe_pb2.ProbeChunk(payload=self._filler[:chunk_bytes])
            sent = 0
            while sent < total:
                n = min(chunk_bytes, total - sent)
                yield full if n == chunk_bytes else probe_pb2.ProbeChunk(payload=self._filler[:n])
                sent += n
        finally:
            self._slots.release()


def add_probe_servicer(server: grpc.aio.Server, limits: ProbeLimits | None = None) -> None:
    """Mount the Probe service on a daemon's ``grpc.aio`` server."""
    probe_pb2_grpc.add_ProbeServicer_to_server(ProbeServicer(limits), server)


async def start_probe_server(
    bind: str = "127.0.0.1:0", limits: ProbeLimits | None = None
) -> RunningServer:
    """Start a server with only the Probe service (plus health and reflection)."""
    return await start_server(
        bind,
        [(probe_pb2_grpc.add_ProbeServicer_to_server, ProbeServicer(limits))],
        service_names=[PROBE_SERVICE_NAME],
    )


async def serve_probe(
    bind: str = "0.0.0.0:0",
    limits: ProbeLimits | None = None,
    announce: bool = True,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the Probe service until ``stop`` is set or SIGINT/SIGTERM arrives.

    With ``announce``, prints ``PROBE_PORT <port>`` on stdout once listening (for scripts).
    """
    running = await start_probe_server(bind, limits)
    done = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available off the main thread or off POSIX: then only `stop` ends serving.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    try:
        if announce:
            print(f"PROBE_PORT {running.port}", flush=True)
        _log.info("probe.serving", address=running.address)
        await done.wait()
    finally:
        await running.stop(grace=1.0)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
