"""Stopping ``eddl local`` from outside: SIGTERM, SIGHUP and SIGINT stop the cluster and remove
the temporary folder; after SIGKILL the kernel kills the cluster's processes (PDEATHSIG).

Every test collects the PIDs of the processes under ``eddl local`` while it runs, and kills any
still alive by PID at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from eddl.childproc import PDEATHSIG_SUPPORTED
from tests.e2e.procs import script

pytestmark = pytest.mark.slow

# A job that runs until it is stopped: its target is out of reach and its epochs many.
ENDLESS_JOB = """[job]
dataset = "digits"
algorithm = "sgd"
model = { sizes = [64, 16, 10], activations = ["tanh", "sigmoid"], loss = "bce" }
hyper = { lr = 0.05, batch_size = 8 }
target_accuracy = 0.9999
max_epochs = 100000.0
task_seconds = 0.5
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _descendants(pid: int) -> set[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    return set()


class Run:
    """One ``eddl local`` process with TMPDIR under the test's folder, and what ran under it."""

    def __init__(self, tmp: Path, argv: list[str]) -> None:
        self.tmp = tmp / "tmp"
        self.tmp.mkdir()
        self.out = tmp / "local.out"
        with self.out.open("wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TMPDIR": str(self.tmp)},
                start_new_session=True,
            )
        self.pids: set[int] = set()

    def collect(self) -> None:
        self.pids |= _descendants(self.popen.pid)

    def wait_for(self, text: str, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while text not in self.out.read_text(errors="replace"):
            self.collect()
            assert self.popen.poll() is None, self.out.read_text(errors="replace")
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.out.read_text()}"
            time.sleep(0.1)
        self.collect()

    def wait_exit(self, within: float = 90.0) -> int:
        deadline = time.monotonic() + within
        while self.popen.poll() is None:
            self.collect()
            assert time.monotonic() < deadline, "eddl local did not exit"
            time.sleep(0.1)
        return int(self.popen.returncode)

    def left_alive(self, within: float) -> list[int]:
        deadline = time.monotonic() + within
        while any(_alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return sorted(p for p in self.pids if _alive(p))

    def leftover_folders(self) -> list[Path]:
        return sorted(self.tmp.glob("eddl-local-*"))

    def kill_all(self) -> None:
        for pid in [self.popen.pid, *self.pids]:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


@contextlib.contextmanager
def _endless_local(tmp: Path) -> Iterator[Run]:
    job = tmp / "endless.toml"
    job.write_text(ENDLESS_JOB)
    run = Run(tmp, [script("eddl"), "local", "--workers", "2", "--job", str(job)])
    try:
        run.wait_for("job_started")
        assert len(run.pids) >= 3, run.pids  # the leader and two workers
        assert len(run.leftover_folders()) == 1
        yield run
    finally:
        run.kill_all()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=str)
def test_a_stop_signal_stops_every_process_and_removes_the_folder(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with _endless_local(tmp_path) as run:
        run.popen.send_signal(sig)
        assert run.wait_exit() == 128 + sig
        assert run.left_alive(within=5.0) == []
        assert run.leftover_folders() == []
        assert f"stopped by {sig.name}" in run.out.read_text()


@pytest.mark.skipif(not PDEATHSIG_SUPPORTED, reason="PR_SET_PDEATHSIG is Linux only")
def test_no_process_outlives_a_sigkilled_eddl_local(tmp_path: Path) -> None:
    with _endless_local(tmp_path) as run:
        run.popen.kill()
        run.popen.wait(10)
        assert run.left_alive(within=15.0) == []


def test_timeout_term_3_leaves_no_process_and_no_folder(tmp_path: Path) -> None:
    # The command as a user would type it, stopped wherever it is after 3 s.
    run = Run(tmp_path, ["timeout", "-s", "TERM", "3", script("eddl"), "local", "--workers", "2"])
    try:
        code = run.wait_exit()
        # 124: timeout stopped it; 0: the job completed within 3 s on a fast machine.
        assert code in (0, 124), run.out.read_text()
        assert run.left_alive(within=5.0) == []
        assert run.leftover_folders() == []
    finally:
        run.kill_all()
