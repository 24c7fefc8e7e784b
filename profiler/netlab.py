"""A real, rate-limited link for checking the probe: two network namespaces and a veth pair.

:func:`shaped_link` creates namespaces ``eddl<pid>s`` (server side) and ``eddl<pid>c`` (client
side) joined by a veth pair addressed ``10.213.77.1/30`` / ``10.213.77.2/30`` (the addresses
exist only inside those namespaces), and shapes **both directions** with a token bucket
(``tc qdisc ... root tbf``) on each end, so upload and download see the same rate. It needs
root (``CAP_NET_ADMIN``) and iproute2; :func:`netns_unavailable_reason` says why not when it
cannot run. The namespaces are always deleted on exit, which also removes the veth pair.

Used by the probe's integration test and by ``bench/profiler.py``; processes are started in a
namespace with :meth:`ShapedLink.command`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["NetnsError", "ShapedLink", "netns_unavailable_reason", "shaped_link"]

SERVER_IP = "10.213.77.1"
CLIENT_IP = "10.213.77.2"
_CMD_TIMEOUT_S = 10.0
_counter = itertools.count()


class NetnsError(RuntimeError):
    """A namespace, veth or qdisc command failed."""


def _run(args: Sequence[str]) -> None:
    try:
        out = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(args)}: {exc}") from exc
    if out.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {out.stderr.strip() or out.returncode}")


def netns_unavailable_reason() -> str | None:
    """``None`` when namespaces can be made here, else the reason (for a loud skip)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CI runs as root)"
    name = f"eddlchk{os.getpid()}x{next(_counter)}"
    try:
        _run(["ip", "netns", "add", name])
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run(["ip", "netns", "del", name])
    except NetnsError as exc:
        return f"cannot delete a network namespace: {exc}"
    return None


def _tbf_args(rate_mbit: float) -> list[str]:
    # The bucket must hold at least one jiffy of traffic at the rate (and a GSO burst); 32 KiB
    # or 4 ms of traffic, whichever is larger, keeps the initial burst small next to a
    # transfer of ~1 s. latency bounds the queue (bufferbloat would inflate the RTT).
    burst = max(32 * 1024, int(rate_mbit * 1e6 / 8 * 0.004))
    return ["tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "50ms"]


@dataclass(frozen=True, slots=True)
class ShapedLink:
    """Two namespaces joined by a veth pair shaped to ``rate_mbit`` in both directions."""

    server_ns: str
    client_ns: str
    server_dev: str
    client_dev: str
    rate_mbit: float
    server_ip: str = SERVER_IP
    client_ip: str = CLIENT_IP

    @property
    def rate_bytes_per_second(self) -> float:
        return self.rate_mbit * 1e6 / 8

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the ``"server"`` or ``"client"`` namespace."""
        if side not in ("server", "client"):
            raise ValueError(f"side must be 'server' or 'client', got {side!r}")
        ns = self.server_ns if side == "server" else self.client_ns
        return ["ip", "netns", "exec", ns, *argv]

    def set_rate(self, rate_mbit: float) -> ShapedLink:
        """Re-shape both ends to ``rate_mbit``; returns the updated description."""
        _check_rate(rate_mbit)
        for ns, dev in ((self.server_ns, self.server_dev), (self.client_ns, self.client_dev)):
            _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", *_tbf_args(rate_mbit)])
        return ShapedLink(
            self.server_ns, self.client_ns, self.server_dev, self.client_dev, rate_mbit
        )


def _check_rate(rate_mbit: float) -> None:
    if isinstance(rate_mbit, bool) or not isinstance(rate_mbit, int | float):
        raise ValueError(f"rate_mbit must be a number, got {rate_mbit!r}")
    if not 0.1 <= rate_mbit <= 10_000:
        raise ValueError(f"rate_mbit must lie in [0.1, 10000], got {rate_mbit!r}")


@contextmanager
def shaped_link(rate_mbit: float) -> Iterator[ShapedLink]:
    """Create the namespaces and the shaped veth pair; delete them on exit, whatever happens."""
    _check_rate(rate_mbit)
    tag = f"{os.getpid()}x{next(_counter)}"
    server_ns, client_ns = f"eddl{tag}s", f"eddl{tag}c"
    # Interface names are limited to 15 characters.
    server_dev, client_dev = f"ep{tag}s"[:15], f"ep{tag}c"[:15]
    created: list[str] = []
    try:
        for ns in (server_ns, client_ns):
            _run(["ip", "netns", "add", ns])
            created.append(ns)
        _run(
            ["ip", "link", "add", server_dev, "netns", server_ns, "type", "veth",
             "peer", "name", client_dev, "netns", client_ns]
        )  # fmt: skip
        for ns, dev, ip in ((server_ns, server_dev, SERVER_IP), (client_ns, client_dev, CLIENT_IP)):
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        link = ShapedLink(server_ns, client_ns, server_dev, client_dev, rate_mbit)
        link = link.set_rate(rate_mbit)
        yield link
    finally:
        for ns in reversed(created):
            # Nothing better to do in a teardown; the name carries the pid for manual cleanup.
            with contextlib.suppress(NetnsError):
                _run(["ip", "netns", "del", ns])
