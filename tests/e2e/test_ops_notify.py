"""systemd readiness of the real daemons: the notify datagrams, read from a socket we own.

systemd is not PID 1 here (``systemd-run --wait -p Type=notify`` needs it), so the test plays
systemd's part: it binds an ``AF_UNIX`` ``SOCK_DGRAM`` socket, passes it as ``$NOTIFY_SOCKET``
to ``eddl-leader``/``eddl-worker`` and reads what they send while starting and stopping.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.procs import TOKEN, script


def _messages(sock: socket.socket, until: str, within: float) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        out.append(fields)
        if until in fields:
            return out
    raise AssertionError(f"no {until} within {within} s; got {out}")


@pytest.mark.parametrize("role", ["leader", "worker"])
def test_daemon_sends_ready_status_and_stopping(tmp_path: Path, role: str) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        if role == "leader":
            argv = [script("eddl-leader"), "--bind", "127.0.0.1:0", "--state-dir",
                    str(tmp_path / "state"), "--insecure", "--join-token", TOKEN]  # fmt: skip
        else:
            # No leader anywhere: the worker is up (READY) and says it is not joined.
            argv = [script("eddl-worker"), "--leader", "127.0.0.1:9", "--insecure",
                    "--join-token", TOKEN, "--node-id", "w0"]  # fmt: skip
        env = {**os.environ, "NOTIFY_SOCKET": str(path)}
        with (tmp_path / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = _messages(sock, "READY", 60)[-1]
            assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid)
            if role == "leader":
                assert ready["STATUS"].startswith("leader serving, term 1, 0 node(s) alive")
            else:
                assert ready["STATUS"] == "worker: 0/1 node(s) joined, 0 task(s) done"
            proc.send_signal(signal.SIGTERM)
            stopping = _messages(sock, "STOPPING", 30)[-1]
            assert stopping["STOPPING"] == "1"
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_without_notify_socket_the_daemon_sends_nothing_and_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    argv = [script("eddl-leader"), "--bind", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"),
            "--insecure", "--join-token", TOKEN, "--port-file", str(tmp_path / "port")]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "port").exists() and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        assert (tmp_path / "port").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
