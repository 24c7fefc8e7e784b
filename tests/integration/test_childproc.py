"""eddl.childproc with real processes: a bound child dies with its parent, even a SIGKILLed one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from eddl.childproc import PARENT_GONE, PDEATHSIG_SUPPORTED, bound_to_parent, main, python_module

pytestmark = pytest.mark.skipif(not PDEATHSIG_SUPPORTED, reason="PR_SET_PDEATHSIG is Linux only")

# A parent that starts `sleep 300` bound to itself, from a thread that then ends ("thread") or
# from its main thread ("main"), prints the child's PID and waits to be killed.
PARENT = """
import subprocess, sys, threading, time
from pathlib import Path
from eddl.childproc import bound_to_parent
box = []
def start():
    box.append(subprocess.Popen(bound_to_parent(["sleep", "300"])))
    # The launcher arms the signal before it execs: wait for that, then let the thread end.
    comm = Path(f"/proc/{box[0].pid}/comm")
    deadline = time.monotonic() + 20
    while comm.read_text().strip() != "sleep" and time.monotonic() < deadline:
        time.sleep(0.02)
if sys.argv[1] == "thread":
    t = threading.Thread(target=start); t.start(); t.join()
else:
    start()
print(box[0].pid, flush=True)
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def _wait_exec(pid: int, name: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while psutil.Process(pid).name() != name:
        assert time.monotonic() < deadline, f"{pid} never became {name}"
        time.sleep(0.05)


def _start_parent(mode: str) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), line
    return parent, int(line)


def _kill(*pids: int) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_a_bound_child_dies_when_its_parent_is_sigkilled() -> None:
    parent, child = _start_parent("main")
    try:
        _wait_exec(child, "sleep")
        assert not _gone(child)  # the launcher exec'd the command, which runs
        parent.kill()
        parent.wait(10)
        assert _wait_gone(child, 10), "the child outlived its SIGKILLed parent"
    finally:
        _kill(parent.pid, child)
        parent.wait(10)


def test_the_death_signal_follows_the_thread_that_started_the_child() -> None:
    # Why LocalCluster keeps one thread for all its children: a child started from a thread
    # that ends dies with that thread, while the process lives on.
    parent, child = _start_parent("thread")
    try:
        assert _wait_gone(child, 10)
        assert parent.poll() is None
    finally:
        _kill(parent.pid, child)
        parent.wait(10)


def test_the_launcher_starts_nothing_when_its_parent_is_not_the_expected_one() -> None:
    # Stands for a parent that died between the fork and prctl: getppid() is someone else.
    done = subprocess.run(
        python_module("eddl.childproc", str(os.getppid()), "--", "sleep", "300"),
        timeout=30,
        check=False,
    )
    assert done.returncode == PARENT_GONE


def test_the_command_gets_default_signal_dispositions_and_no_blocked_signal() -> None:
    # Python ignores SIGPIPE at start-up; a command exec'd from it would inherit that.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        done = subprocess.run(
            bound_to_parent(["cat", "/proc/self/status"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    fields = dict(line.split(":\t", 1) for line in done.stdout.splitlines() if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0
    assert int(fields["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1)) == 0


def test_bad_launcher_arguments_are_refused() -> None:
    assert main(["not-a-pid", "--", "sleep"]) == 2
    assert main([str(os.getpid()), "sleep", "1"]) == 2
    with pytest.raises(ValueError):
        bound_to_parent([])


def test_a_module_runs_with_the_interpreter_given_else_this_one() -> None:
    assert python_module("m", "a")[:3] == [sys.executable, "-P", "-m"]
    other = python_module("eddl.childproc", python="/opt/other/bin/python")
    assert other == ["/opt/other/bin/python", "-P", "-m", "eddl.childproc"]
