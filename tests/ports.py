"""Loopback ports for the daemons a test starts with an address on their command line.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same
range every ``connect()`` on the machine draws its source port from. Between the probe
socket closing and the daemon binding the port, any outgoing connection (an etcd client, a
gRPC channel between two daemons already up) can take it, and the daemon exits with
"address in use". Ports below the ephemeral range are never source ports: this hands those
out at random, each at most once per test run, after checking that each one binds now.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 8000  # ports tried below the ephemeral range
_given: set[int] = set()  # handed out, with the port after each
_pick = random.Random()  # seeded from the OS: two runs side by side pick apart


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _binds(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on and no outgoing connection can take as its source port.

    The port after it is free too and never handed out: a leader serves its certificate
    bootstrap on its port + 1 unless told otherwise, so two daemons on neighbouring ports
    would share one (gRPC binds with SO_REUSEPORT, so the second bind does not fail)."""
    high = _ephemeral_low()
    low = max(1024, high - _SPAN)
    if high - low >= 100:
        for _ in range(1000):
            port = _pick.randrange(low, high - 1)
            if _given.isdisjoint((port, port + 1)) and _binds(port) and _binds(port + 1):
                _given.update((port, port + 1))
                return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
