"""``eddl profile`` as real processes: table, JSON, --serve-probe and --probe together."""

from __future__ import annotations

import json
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.timeout(120)

EDDL = [sys.executable, "-m", "eddl.cli"]


def run_eddl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDDL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def probe_port() -> Iterator[int]:
    proc = subprocess.Popen(
        [*EDDL, "profile", "--serve-probe", "--bind", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = None
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while port is None and time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("PROBE_PORT "):
                    port = int(line.split()[1])
        assert port is not None, "eddl profile --serve-probe did not announce its port"
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=15) == 0  # SIGTERM is a clean shutdown
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def test_json_profile_with_probe_against_a_served_probe(probe_port: int) -> None:
    out = run_eddl(
        "profile", "--json", "--node-id", "n7", "--probe", f"127.0.0.1:{probe_port}",
        "--probe-bytes", "262144",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["static"]["node_id"] == "n7"
    assert data["dynamic"]["memory_available_bytes"] > 0
    (link,) = data["network"]
    assert link["peer"] == f"127.0.0.1:{probe_port}" and link["source"] == "probe"
    assert link["upload_bytes_per_second"] > 0 and link["download_bytes_per_second"] > 0


def test_table_profile_with_benchmark() -> None:
    out = run_eddl("profile", "--benchmark", "lsgd", "--model", "784-40-32-10")
    assert out.returncode == 0, out.stderr
    assert "static" in out.stdout and "lsgd 784-40-32-10" in out.stdout
    assert "microbenchmark" in out.stdout


def test_probe_of_nobody_fails_cleanly_within_the_timeout() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out = run_eddl("profile", "--probe", f"127.0.0.1:{port}", "--probe-timeout", "3")
    assert out.returncode == 1
    assert "unreachable" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("profile", "--benchmark", "sgd", "--model", "784-x-10"),
        ("profile", "--probe-bytes", "0", "--probe", "127.0.0.1:1"),
    ],
)
def test_bad_arguments_exit_2(args: tuple[str, ...]) -> None:
    out = run_eddl(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "configuration error" in out.stderr
