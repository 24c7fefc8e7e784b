"""The processes the fleet simulator runs against: a root leader with its metrics endpoint,
and sub-leaders started by hand (``eddl-leader --upstream``); each stopped by its pid."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.scale import TOKEN, _leader, stop

__all__ = ["fleet_leader", "sub_leaders"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fleet_leader(
    state: Path, heartbeat_s: float, flags: Sequence[str] = ()
) -> Iterator[tuple[str, str, int]]:
    """A leader process with its metrics endpoint and further ``flags``; yields (address,
    metrics url, pid). Its log is ``state/leader.log``."""
    port = _free_port()
    extra = ["--metrics-bind", f"127.0.0.1:{port}", "--heartbeat-interval", f"{heartbeat_s:g}"]
    with _leader(sys.executable, state, extra=[*extra, *flags]) as (address, pid):
        yield address, f"http://127.0.0.1:{port}/metrics", pid


@contextlib.contextmanager
def sub_leaders(root: str, count: int, state: Path, heartbeat_s: float) -> Iterator[list[str]]:
    """``count`` sub-leader processes (``eddl-leader --upstream root``); yields their
    addresses, stops them by pid."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        addresses = []
        for i in range(count):
            port_file = state / f"sub{i}.port"
            argv = [sys.executable, "-P", "-m", "eddl.leader.main", "--upstream", root]
            argv += ["--insecure", "--join-token", TOKEN, "--bind", "127.0.0.1:0"]
            argv += ["--port-file", str(port_file), "--leader-id", f"sub{i}"]
            argv += ["--heartbeat-interval", f"{heartbeat_s:g}"]
            with (state / f"sub{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip().isdigit()):
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sub-leader {i} did not start; see {state}/sub{i}.log")
                time.sleep(0.1)
            addresses.append(f"127.0.0.1:{int(port_file.read_text())}")
        yield addresses
    finally:
        for proc in procs:
            stop(proc)
