"""A network interface's byte counters, as the kernel keeps them.

The root leader reads them to know how busy its own link is: the kernel counts every byte as
it crosses the interface, where the gRPC edge sees a message only once it has arrived whole (a
model-sized update on a saturated link arrives many seconds after its first byte, or never).
They count all of the interface's traffic, EDDL's and anything else's, which is what fills
the link. Read on demand (psutil reads ``/proc/net/dev``), never in a loop of their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = ["InterfaceBytes", "InterfaceCounter"]

_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")  # Linux: at most IFNAMSIZ - 1 characters


@dataclass(frozen=True)
class InterfaceBytes:
    """Bytes an interface received and sent since it came up."""

    received: int
    sent: int


def _psutil_counters() -> Mapping[str, Any]:
    counters: Mapping[str, Any] = psutil.net_io_counters(pernic=True, nowrap=True)
    return counters


class InterfaceCounter:
    """The byte counters of the interface ``name``; a name that is malformed or that this
    machine lacks is refused here, with the interfaces it has."""

    def __init__(
        self, name: str, counters: Callable[[], Mapping[str, Any]] = _psutil_counters
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"interface name {name[:64]!r} is not a network interface's name")
        self.name = name
        self._counters = counters
        found = counters()
        if name not in found:
            have = ", ".join(sorted(found)) or "none"
            raise ValueError(f"no network interface {name!r} here (interfaces: {have})")

    def read(self) -> InterfaceBytes | None:
        """The counters now; ``None`` while the interface is gone."""
        entry = self._counters().get(self.name)
        if entry is None:
            return None
        return InterfaceBytes(int(entry.bytes_recv), int(entry.bytes_sent))
