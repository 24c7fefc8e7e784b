"""The probe against real shaped links: two network namespaces, a veth pair, ``tc tbf``.

Both directions of the veth pair are shaped to the same rate, and both the upload and the
download estimate must lie within ±25% of it. The probe reports goodput (payload bytes), so
it reads about 4% under the shaped rate: TCP/IP and Ethernet headers take 66 of every 1514
bytes on the wire. Needs root; skipped, with the reason in the summary, where namespaces
cannot be created.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from eddl.profiler.netlab import ShapedLink, netns_unavailable_reason, shaped_link

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(180)]

_SERVER_START_TIMEOUT_S = 30.0


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"NETNS TEST SKIPPED: {reason}")


def read_port(proc: subprocess.Popen[str], timeout: float) -> int:
    """The port from the server's ``PROBE_PORT <n>`` line, waiting at most ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("PROBE_PORT "):
                return int(line.split()[1])
    raise AssertionError(f"probe server did not announce its port within {timeout} s")


@pytest.fixture
def probe_server() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(link: ShapedLink) -> int:
        argv = [sys.executable, "-m", "eddl.profiler", "serve", "--bind", f"{link.server_ip}:0"]
        proc = subprocess.Popen(link.command("server", argv), stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return read_port(proc, _SERVER_START_TIMEOUT_S)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_probe(link: ShapedLink, port: int) -> dict[str, object]:
    # About half a second per timed transfer at the shaped rate.
    payload = int(link.rate_bytes_per_second * 0.5)
    argv = [
        sys.executable, "-m", "eddl.profiler", "probe", f"{link.server_ip}:{port}",
        "--payload-bytes", str(payload), "--chunk-bytes", str(64 * 1024),
        "--repeats", "3", "--timeout", "60",
    ]  # fmt: skip
    out = subprocess.run(
        link.command("client", argv), capture_output=True, text=True, timeout=90, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("rate_mbit", [8.0, 40.0])
def test_probe_estimate_is_within_25_percent_of_the_shaped_rate(
    rate_mbit: float, probe_server: object
) -> None:
    with shaped_link(rate_mbit) as link:
        port = probe_server(link)  # type: ignore[operator]
        result = run_probe(link, port)
    shaped = rate_mbit * 1e6 / 8
    up = float(result["upload_bytes_per_second"])  # type: ignore[arg-type]
    down = float(result["download_bytes_per_second"])  # type: ignore[arg-type]
    assert up == pytest.approx(shaped, rel=0.25), result
    assert down == pytest.approx(shaped, rel=0.25), result
    assert 0 < float(result["rtt_seconds"]) < 1.0  # type: ignore[arg-type]


def test_namespaces_are_gone_after_the_link_is_closed() -> None:
    with shaped_link(8.0) as link:
        names = {link.server_ns, link.client_ns}
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
        assert names <= {line.split()[0] for line in listed.stdout.splitlines() if line}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert not names & {line.split()[0] for line in listed.stdout.splitlines() if line}
