"""A fault-injecting TCP proxy for link tests: it sits between the driver and a device.

Each direction is cut into frames at the ``0x00`` delimiters; a seeded generator decides per
frame whether to flip a bit, truncate it, drop it whole or inject random bytes, up to a bounded
number of faults. The proxy serves one client at a time for at most ``lifetime`` seconds.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FaultPlan", "FaultProxy"]

KINDS = ("flip", "truncate", "drop", "inject")


@dataclass
class FaultPlan:
    """Probability of a fault per frame and direction, the kinds to draw from, and a budget."""

    rate: float = 0.2
    kinds: tuple[str, ...] = KINDS
    max_faults: int = 200
    seed: int = 0
    to_device: bool = True
    to_host: bool = True
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Faults injected so far (all kinds, both directions)."""
        return sum(self.counts[k] for k in KINDS)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be a non-empty subset of {KINDS}")


class _Mangler:
    def __init__(self, plan: FaultPlan, rng: random.Random, direction: str, lock: threading.Lock):
        self.plan = plan
        self.rng = rng
        self.direction = direction
        self.lock = lock
        self.pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        out = bytearray()
        while True:
            end = self.pending.find(0)
            if end < 0:
                return bytes(out)
            frame = bytes(self.pending[: end + 1])
            del self.pending[: end + 1]
            out += self._mangle(frame)

    def _mangle(self, frame: bytes) -> bytes:
        with self.lock:
            plan = self.plan
            if len(frame) < 2 or plan.total >= plan.max_faults:
                return frame
            if self.rng.random() >= plan.rate:
                return frame
            kind = self.rng.choice(plan.kinds)
            plan.counts[kind] += 1
            plan.counts[f"{kind}:{self.direction}"] += 1
            body = bytearray(frame[:-1])
            if kind == "flip":
                at = self.rng.randrange(len(body))
                body[at] ^= 1 << self.rng.randrange(8)
            elif kind == "truncate":
                del body[self.rng.randrange(len(body)) :]
            elif kind == "drop":
                return b""
            else:
                noise = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 8)))
                at = self.rng.randrange(len(body) + 1)
                body[at:at] = noise
            return bytes(body) + b"\x00"


class FaultProxy:
    """Listens on 127.0.0.1 (port 0) and relays to ``upstream`` (host, port), mangling frames."""

    def __init__(
        self, upstream: tuple[str, int], plan: FaultPlan, *, lifetime: float = 120.0
    ) -> None:
        self.upstream = upstream
        self.plan = plan
        self.lifetime = lifetime
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)

    @classmethod
    def for_url(cls, url: str, plan: FaultPlan, *, lifetime: float = 120.0) -> FaultProxy:
        if not url.startswith("socket://"):
            raise ValueError(f"the fault proxy needs a socket:// device URL, got {url}")
        host, _, port = url.removeprefix("socket://").partition(":")
        return cls((host, int(port)), plan, lifetime=lifetime)

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        deadline = time.monotonic() + self.lifetime
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.closing(client):
                try:
                    device = socket.create_connection(self.upstream, timeout=5.0)
                except OSError:
                    continue
                with contextlib.closing(device):
                    self._relay(client, device, deadline)

    def _relay(self, client: socket.socket, device: socket.socket, deadline: float) -> None:
        for s in (client, device):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        down = _Mangler(self.plan, self._rng, "to_device", self._lock)
        up = _Mangler(self.plan, self._rng, "to_host", self._lock)
        routes = {
            client.fileno(): (client, device, down, self.plan.to_device),
            device.fileno(): (device, client, up, self.plan.to_host),
        }
        with selectors.DefaultSelector() as sel:
            for s in (client, device):
                sel.register(s, selectors.EVENT_READ)
            while not self._stop.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(0.1):
                    src, dst, mangler, active = routes[key.fd]
                    try:
                        data = src.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    out = mangler.feed(data) if active else data
                    if out:
                        dst.setblocking(True)
                        try:
                            dst.sendall(out)
                        except OSError:
                            return
                        finally:
                            dst.setblocking(False)
