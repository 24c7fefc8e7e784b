"""The notify protocol's message format, addresses and watchdog interval."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from eddl.ops.sdnotify import SystemdNotifier, watchdog_interval


def test_messages_reach_the_socket_as_key_value_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("serving\non two lines")
        assert (
            sock.recv(1024).decode()
            == f"READY=1\nSTATUS=serving on two lines\nMAINPID={os.getpid()}"
        )
        assert notifier.stopping()
        assert sock.recv(1024).decode() == "STOPPING=1\nSTATUS=stopping"


def test_abstract_socket_names_start_with_at() -> None:
    name = f"eddl-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(1024) == b"STATUS=hello"


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not SystemdNotifier({}).ready("x")
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert gone.enabled and not gone.ready("x") and gone.sent == []


def test_watchdog_interval_is_half_the_timeout_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert (
        watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    )
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
