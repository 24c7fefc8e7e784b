"""The Probe service and its client over real gRPC on 127.0.0.1, and misbehaving peers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from eddl.net.channel import open_channel
from eddl.net.server import RunningServer
from eddl.profiler.probe import ProbeLimits, start_probe_server
from eddl.profiler.probe_client import (
    ProbeClient,
    ProbeConfig,
    ProbeRefused,
    ProbeTimeout,
    ProbeUnavailable,
    probe_peer,
)
from eddl.profiler.profiles import LinkSource
from eddl.proto.v1 import probe_pb2, probe_pb2_grpc

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_probe_server("127.0.0.1:0", ProbeLimits(max_transfer_bytes=4 << 20))
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


async def test_measures_rtt_and_both_directions(server: RunningServer) -> None:
    config = ProbeConfig(payload_bytes=1 << 20, chunk_bytes=64 * 1024, repeats=2, ping_count=3)
    result = await probe_peer(f"127.0.0.1:{server.port}", config)
    assert len(result.rtt_samples) == 3 and len(result.upload_samples) == 2
    assert len(result.download_samples) == 2
    assert 0 < result.rtt_seconds < config.timeout_s
    assert result.upload_bytes_per_second > 0 and result.download_bytes_per_second > 0
    link = result.to_link_estimate()
    assert link.source is LinkSource.PROBE and link.peer == f"127.0.0.1:{server.port}"


async def test_uneven_last_chunk_is_counted_exactly(server: RunningServer) -> None:
    async with ProbeClient(f"127.0.0.1:{server.port}", ProbeConfig(chunk_bytes=1000)) as client:
        assert await client.upload(2500) > 0
        assert await client.download(2500) > 0


async def test_server_refuses_oversize_download_and_upload(server: RunningServer) -> None:
    peer = f"127.0.0.1:{server.port}"
    async with ProbeClient(peer, ProbeConfig(chunk_bytes=256 * 1024)) as client:
        with pytest.raises(ProbeRefused) as info:
            await client.download(5 << 20)  # the server accepts at most 4 MiB
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ProbeRefused) as info:
            await client.upload(5 << 20)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert await client.ping() > 0  # the server is still fine


async def test_server_refuses_bad_requests_from_any_client(server: RunningServer) -> None:
    async with open_channel(f"127.0.0.1:{server.port}") as channel:
        stub = probe_pb2_grpc.ProbeStub(channel)
        for request in (
            probe_pb2.DownloadRequest(total_bytes=0, chunk_bytes=10),
            probe_pb2.DownloadRequest(total_bytes=10, chunk_bytes=0),
            probe_pb2.DownloadRequest(total_bytes=10, chunk_bytes=2 << 20),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Download(request, timeout=10):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Ping(probe_pb2.PingRequest(reply_bytes=1 << 20), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_too_many_concurrent_probes_are_refused() -> None:
    running = await start_probe_server("127.0.0.1:0", ProbeLimits(max_concurrent=1))
    try:
        async with open_channel(f"127.0.0.1:{running.port}") as channel:
            stub = probe_pb2_grpc.ProbeStub(channel)
            release = asyncio.Event()

            async def slow_chunks() -> AsyncIterator[probe_pb2.ProbeChunk]:
                yield probe_pb2.ProbeChunk(payload=b"x")
                await release.wait()

            first = asyncio.ensure_future(stub.Upload(slow_chunks(), timeout=20))
            await asyncio.sleep(0.3)  # let the first upload take the only slot
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Download(
                    probe_pb2.DownloadRequest(total_bytes=10, chunk_bytes=10), timeout=10
                ):
                    pass
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            reply = await first
            assert reply.bytes_received == 1
    finally:
        await running.stop(grace=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"payload_bytes": 1 << 40},
        {"payload_bytes": 0},
        {"payload_bytes": -1},
        {"chunk_bytes": 64 << 20},
        {"repeats": 0},
        {"timeout_s": 0.0},
        {"timeout_s": float("nan")},
    ],
)
def test_absurd_settings_are_refused_before_anything_is_sent(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ProbeConfig(**kwargs)  # type: ignore[arg-type]


class RawPeer:
    """A TCP server that accepts connections and then misbehaves in a chosen way."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "silent":
                self._conns.append(conn)  # keep it open, never read, never write
            else:  # "close": read a little of the client's preface, then hang up
                conn.settimeout(2.0)
                with contextlib.suppress(OSError):
                    conn.recv(16)
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@contextlib.contextmanager
def raw_peer(mode: str) -> Iterator[RawPeer]:
    peer = RawPeer(mode)
    try:
        yield peer
    finally:
        peer.close()


async def test_silent_peer_times_out_within_the_configured_timeout() -> None:
    with raw_peer("silent") as peer:
        t0 = time.monotonic()
        with pytest.raises(ProbeTimeout, match=r"127\.0\.0\.1"):
            await probe_peer(f"127.0.0.1:{peer.port}", ProbeConfig(timeout_s=1.5))
        elapsed = time.monotonic() - t0
        assert peer.accepted >= 1
    assert elapsed < 1.5 + 5.0  # the configured timeout, plus generous slack for a busy CI


async def test_peer_closing_mid_probe_is_unavailable() -> None:
    with raw_peer("close") as peer:
        with pytest.raises(ProbeUnavailable):
            await probe_peer(f"127.0.0.1:{peer.port}", ProbeConfig(timeout_s=5.0))
        assert peer.accepted >= 1


class CuttingProxy:
    """Relays TCP between a client and a real probe server, then cuts both connections once
    ``cut_after`` bytes have flowed (in either direction): a peer dying mid-transfer."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.relayed = 0
        self.cut = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pump, args=(a, b, client, upstream), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, *both: socket.socket) -> None:
        src.settimeout(0.2)
        while not self._stop.is_set() and not self.cut.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self.relayed += len(data)
                over = self.relayed >= self.cut_after
            if over:
                self.cut.set()
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in both:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for t in self._threads:
            t.join(5)


@pytest.mark.parametrize("direction", ["upload", "download"])
async def test_peer_dying_mid_transfer_ends_in_a_clear_error(
    server: RunningServer, direction: str
) -> None:
    proxy = CuttingProxy(server.port, cut_after=512 * 1024)
    try:
        async with ProbeClient(
            f"127.0.0.1:{proxy.port}", ProbeConfig(chunk_bytes=16 * 1024, timeout_s=10.0)
        ) as client:
            assert await client.ping() > 0  # the link works until it is cut
            transfer = client.upload if direction == "upload" else client.download
            with pytest.raises(ProbeUnavailable):
                await transfer(4 << 20)
        assert proxy.cut.is_set()
    finally:
        proxy.close()


async def test_nobody_listening_is_unavailable() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ProbeUnavailable):
        await probe_peer(f"127.0.0.1:{port}", ProbeConfig(timeout_s=5.0))


async def test_absurd_transfer_size_is_refused_before_connecting() -> None:
    with raw_peer("silent") as peer:
        async with ProbeClient(f"127.0.0.1:{peer.port}") as client:
            with pytest.raises(ValueError, match="total_bytes"):
                await client.upload(1 << 40)
            with pytest.raises(ValueError, match="total_bytes"):
                await client.download(0)
            with pytest.raises(ValueError, match="payload_bytes"):
                await client.ping(1 << 30)
        assert peer.accepted == 0


def test_peer_must_be_host_port() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        ProbeClient("localhost")
