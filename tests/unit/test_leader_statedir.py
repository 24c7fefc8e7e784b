"""The state directory's lock: one owner at a time, released on exit or death."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eddl.leader.statedir import LOCK_FILE, StateDirInUseError, StateDirLock

HOLDER = """
import sys, time
from pathlib import Path
from eddl.leader.statedir import StateDirLock
lock = StateDirLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_second_lock_on_the_same_directory_is_refused_until_released(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path / "state").acquire()
    with pytest.raises(StateDirInUseError, match="in use by another eddl-leader"):
        StateDirLock(tmp_path / "state").acquire()
    first.release()
    with StateDirLock(tmp_path / "state") as again:
        assert again.held and (tmp_path / "state" / LOCK_FILE).exists()
    assert not again.held


def test_the_lock_of_another_process_names_its_pid_and_dies_with_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(StateDirInUseError, match=f"pid {proc.pid}"):
            StateDirLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # the kernel dropped the dead holder's lock: no stale lock file blocks a restart
    StateDirLock(tmp_path).acquire().release()
