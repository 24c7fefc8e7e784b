"""Loopback ports for the daemons a test starts with an address on their command line.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same
range every ``connect()`` on the machine draws its source port from. Between the probe
socket closing and the daemon binding the port, any outgoing connection (an etcd client, a
gRPC channel between two daemons already up) can take it, and the daemon exits with
"address in use". Ports below the ephemeral range are never source ports: this hands those
out, each at most once per test run, after checking that each one binds now.
"""

from __future__ import annotations

import itertools
import os
import socket
from pathlib import Path

_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 8000  # ports tried below the ephemeral range
_given: set[int] = set()


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
    """A port nothing listens on and no outgoing connection can take as its source port."""
    high = _ephemeral_low()
    low = max(1024, high - _SPAN)
    if high - low >= 100:
        # Start each pytest process somewhere else in the span: two runs side by side
        # (a developer's and a fresh clone's) rarely walk the same ports.
        start = os.getpid() % (high - low)
        for offset in itertools.islice(itertools.count(), high - low):
            port = low + (start + offset) % (high - low)
            if port not in _given and _binds(port):
                _given.add(port)
                return port
    with socket.socket() as s:  # no room below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
