"""Start ``eddl-leader`` / ``eddl-worker`` console scripts as real processes, and stop them.

Ports are chosen by the OS (``--bind 127.0.0.1:0``) and read back from ``--port-file``. Every
wait is bounded; every process is killed in the caller's ``finally`` (and by the session's
reaper in ``tests/conftest.py`` if a test dies first).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "e2e-token"


def script(name: str) -> str:
    """The console script next to this interpreter (falls back to PATH)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"console script {name} is not installed (pip install -e .)")
    return found


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # Lines parsed so far and where the next read starts: tests ask for events many times a
    # second, and re-parsing a growing log each time costs the CPU the daemons need.
    _parsed: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def lines(self) -> list[dict[str, Any]]:
        """The process's JSON log lines so far (non-JSON lines skipped)."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                self._parsed.append(value)
        return list(self._parsed)

    def tail(self, count: int = 30) -> str:
        """The last ``count`` lines of the process's output, for a failing test's report."""
        lines = self.log.read_text(errors="replace").splitlines()[-count:]
        return "\n".join(f"[{self.name}] {line}" for line in lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The process's JSON log lines of event ``name`` so far."""
        return [line for line in self.lines() if line.get("event") == name]

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 10.0) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return int(self.popen.returncode)


def stop_all(procs: Sequence[Proc], grace: float = 10.0) -> None:
    """SIGTERM every live process at once, then wait for each (killing those past ``grace``):
    one slow shutdown does not add up over a dozen daemons."""
    for proc in procs:
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=10)


def spawn(name: str, argv: Sequence[str], log: Path) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
            start_new_session=True,
        )
    return Proc(name, popen, log)


def wait_for(predicate: Callable[[], bool], within: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(step)


def start_leader(
    tmp: Path,
    *,
    state_dir: Path | None = None,
    heartbeat: float = 0.5,
    tag: str = "leader",
    extra: Sequence[str] = (),
    insecure: bool = True,
) -> tuple[Proc, str]:
    port_file = tmp / f"{tag}.port"
    port_file.unlink(missing_ok=True)
    argv = [
        script("eddl-leader"),
        "--bind",
        "127.0.0.1:0",
        "--state-dir",
        str(state_dir or tmp / "state"),
        # Mutual TLS is the daemons' default; most tests exercise other behaviours and use the
        # loopback mode (sessions from Join). tests/e2e/test_security_*.py run mTLS.
        *(["--insecure"] if insecure else []),
        "--join-token",
        TOKEN,
        "--port-file",
        str(port_file),
        "--heartbeat-interval",
        str(heartbeat),
        *extra,
    ]
    proc = spawn(tag, argv, tmp / f"{tag}.log")
    return proc, serving_at(proc, port_file)


def serving_at(proc: Proc, port_file: Path) -> str:
    """Wait for the port ``proc`` writes to ``port_file``; its loopback address."""

    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited early:\n{proc.log.read_text()[-3000:]}")
        return port_file.exists() and port_file.read_text().strip().isdigit()

    wait_for(ready, 60, f"{proc.name}'s port file")
    return f"127.0.0.1:{int(port_file.read_text())}"


def start_sub_leader(
    tmp: Path,
    root: str,
    name: str,
    *,
    heartbeat: float = 0.5,
    extra: Sequence[str] = (),
    insecure: bool = True,
) -> tuple[Proc, str]:
    """``eddl-leader --upstream ROOT``: a sub-leader of ``root``; its group's address."""
    port_file = tmp / f"{name}.port"
    argv = [
        script("eddl-leader"),
        "--upstream",
        root,
        *(["--insecure", "--join-token", TOKEN] if insecure else []),
        "--bind",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
        "--leader-id",
        name,
        "--heartbeat-interval",
        str(heartbeat),
        *extra,
    ]
    proc = spawn(name, argv, tmp / f"{name}.log")
    return proc, serving_at(proc, port_file)


def start_worker(
    tmp: Path,
    address: str,
    node_id: str,
    *,
    throttle: float = 1.0,
    extra: Sequence[str] = (),
    insecure: bool = True,
) -> Proc:
    argv = [
        script("eddl-worker"),
        "--leader",
        address,
        "--node-id",
        node_id,
        *(["--insecure"] if insecure else []),
        "--join-token",
        TOKEN,
        "--throttle",
        str(throttle),
        *extra,
    ]
    return spawn(node_id, argv, tmp / f"{node_id}.log")


def token(state: Path, role: str) -> str:
    """A join token of ``role`` from ``eddl token create`` on the root's state directory."""
    done = eddl("token", "create", "--state-dir", str(state), "--role", role, "--ttl", "300")
    if done.returncode != 0:
        raise AssertionError(f"eddl token create failed: {done.stderr}")
    return done.stdout.strip()


def eddl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [script("eddl"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def status(address: str) -> dict[str, Any]:
    done = eddl("status", "--json", "--leader", address, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"eddl status failed: {done.stderr}")
    value: dict[str, Any] = json.loads(done.stdout)
    return value


def wait_done(address: str, within: float = 150) -> dict[str, Any]:
    """Poll ``eddl status`` until the current job is no longer running; its last status."""
    box: dict[str, Any] = {}

    def finished() -> bool:
        box.update(status(address))
        return box["state"] not in ("running", "ending")

    wait_for(finished, within, "the job to finish", step=0.5)
    return box
