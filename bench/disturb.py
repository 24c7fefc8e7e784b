"""What the policies benchmark does to one worker while a job runs: leave, crash or freeze.

Each disturbance acts on a real worker process of a :class:`LocalCluster`, by its PID, until
the caller sets ``stop``; every loop is bounded in count as well. The policies part of
:mod:`bench.cluster` starts one per job and reports the count it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess

from eddl.cluster import LocalCluster

__all__ = ["FREEZE_GAP_S", "FREEZE_S", "MAX_EVENTS", "churn", "freeze"]

# A bound on the events of one job (a job of several minutes stays far below it).
MAX_EVENTS = 2000
# Freezes: the worker is stopped (SIGSTOP) for FREEZE_S, then continued (SIGCONT) and left to
# run FREEZE_GAP_S: a device that stalls (swapping, thermal throttling, a long pause) and holds
# up every sync round it is part of. FREEZE_S is shorter than the leader's heartbeat patience (2
# beats of 0.5 s): the node is declared gone only when the freeze and the time since its last
# beat together exceed the patience, and then it rejoins when it runs again.
FREEZE_S = 0.9
FREEZE_GAP_S = 0.6


async def churn(
    cluster: LocalCluster, index: int, period: float, stop: asyncio.Event, *, crash: bool = False
) -> int:
    """Worker ``index`` leaves every ``period`` s (``crash``: is killed with SIGKILL, so the
    leader must notice it by missed heartbeats) and is started again 2 s later; returns the
    count."""
    flips = 0
    while not stop.is_set() and flips < MAX_EVENTS:
        try:
            await asyncio.wait_for(stop.wait(), period)
            break
        except TimeoutError:
            pass
        if crash:
            proc = cluster.procs[f"worker-{index}"]
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
        else:
            await asyncio.to_thread(cluster.stop_worker, index)
        flips += 1
        await asyncio.sleep(min(2.0, period / 4))
        cluster.start_worker(index)
    return flips


async def freeze(proc: subprocess.Popen[bytes], stop: asyncio.Event) -> int:
    """Stop the process ``proc`` (SIGSTOP) for ``FREEZE_S`` and continue it (SIGCONT), every
    ``FREEZE_S + FREEZE_GAP_S``, until ``stop``; it is always continued, even when cancelled.
    Returns the count."""
    freezes = 0
    while not stop.is_set() and freezes < MAX_EVENTS and proc.poll() is None:
        os.kill(proc.pid, signal.SIGSTOP)
        freezes += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FREEZE_S)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FREEZE_GAP_S)
    return freezes
