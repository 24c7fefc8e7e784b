"""bench.disturb: a frozen process is always continued, when stopped and when cancelled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bench.disturb import freeze


def _state(pid: int) -> str:
    """The process's state letter from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_freeze_stops_the_process_and_leaves_it_running() -> None:
    proc = _child()
    try:

        async def run() -> tuple[int, str]:
            stop = asyncio.Event()
            task = asyncio.create_task(freeze(proc, stop))
            for _ in range(500):  # bounded: until the first freeze is seen
                await asyncio.sleep(0.01)
                if _state(proc.pid) == "T":
                    break
            seen = _state(proc.pid)
            stop.set()
            return await task, seen

        count, seen = asyncio.run(run())
        assert seen == "T"
        assert count >= 1
        assert _state(proc.pid) != "T"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_cancelled_freeze_continues_the_process() -> None:
    proc = _child()
    try:

        async def run() -> None:
            task = asyncio.create_task(freeze(proc, asyncio.Event()))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if _state(proc.pid) == "T":
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())
        assert _state(proc.pid) != "T"
    finally:
        proc.kill()
        proc.wait(10)
