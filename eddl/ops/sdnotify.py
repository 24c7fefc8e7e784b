"""systemd's notify protocol: one datagram per message to the socket in ``$NOTIFY_SOCKET``.

A unit with ``Type=notify`` counts as started only once the daemon sends ``READY=1``; ``STATUS=``
is the line ``systemctl status`` shows; ``STOPPING=1`` says a stop is under way; with
``WatchdogSec=`` set, systemd passes ``WATCHDOG_USEC`` and restarts a daemon that stops sending
``WATCHDOG=1``. The protocol is small enough that a dependency would be more code to trust than
this module (sd_notify(3)): a ``SOCK_DGRAM`` ``AF_UNIX`` datagram of ``KEY=VALUE`` lines, to a
path, or to an abstract socket when the name starts with ``@``. Without ``$NOTIFY_SOCKET`` (not
run by systemd) every call does nothing, so the daemons call it unconditionally.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["SystemdNotifier", "watchdog_interval"]


def _address(raw: str) -> str | bytes:
    # "@name" is an abstract socket: a leading NUL byte on Linux.
    return b"\0" + raw[1:].encode() if raw.startswith("@") else raw


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC`` (None: no watchdog).

    ``$WATCHDOG_PID``, when set, names the process the watchdog is for; another process (a child
    that inherited the environment) must not ping on its behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


class SystemdNotifier:
    """Sends notify messages; every method is a no-op when ``$NOTIFY_SOCKET`` is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = _address(raw) if raw else None
        self.watchdog_s = watchdog_interval(env)
        self.sent: list[str] = []  # every message sent, oldest first (for logs and tests)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (``ready=1`` -> ``READY=1``); False when not under systemd.

        A lost datagram is not an error for the daemon (systemd may be restarting): it is
        reported by the return value, never raised.
        """
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{k.upper()}={_one_line(v)}" for k, v in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError:
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str) -> bool:
        return self.send(ready=1, status=status, mainpid=os.getpid())

    def status(self, status: str) -> bool:
        return self.send(status=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(stopping=1, status=status)

    async def watchdog(self, status: Callable[[], str] | None = None) -> None:
        """Ping ``WATCHDOG=1`` from the event loop until cancelled: a loop that hangs stops the
        pings, and systemd restarts the daemon. Each ping refreshes ``STATUS=`` too."""
        if self.watchdog_s is None or self.address is None:
            return
        while True:
            fields: dict[str, str | int] = {"watchdog": 1}
            if status is not None:
                fields["status"] = status()
            self.send(**fields)
            await asyncio.sleep(self.watchdog_s)


def _one_line(value: str | int) -> str:
    # A newline would start a new KEY=VALUE line that the daemon never meant to send.
    return " ".join(str(value).split())
