"""Stop signals for commands that own child processes (``eddl local``).

:class:`StopOnSignals` turns SIGINT, SIGTERM and SIGHUP into one clean path: outside an event
loop the signal raises :class:`Stopped` where the main thread is; while an event loop runs, it
cancels the loop's main task instead (an exception raised from a signal handler in the middle
of gRPC's callbacks could be swallowed there). Only the first signal counts, and during a
cleanup (:meth:`StopOnSignals.deferred`) it is only recorded, so that a second Ctrl-C or a
``kill`` cannot cut the stopping of the children short; :meth:`StopOnSignals.check` raises it
afterwards. The command exits with 128 + the signal's number, as a shell reports a process
killed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "StopOnSignals", "Stopped"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: nothing may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class StopOnSignals:
    """SIGINT/SIGTERM/SIGHUP: raise :class:`Stopped` in the main thread, or, while the event
    loop runs, cancel its main task (an exception raised inside gRPC's callbacks could be lost).
    Only the first signal counts, so a second one cannot cut the cleanup short."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: dict[int, Any] = {}
        self._deferred = False

    def __enter__(self) -> StopOnSignals:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self._deferred:
            return  # cleaning up already: check() raises once it is done
        if self._task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            return
        raise Stopped(signum)

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped(self.signum)

    @contextlib.contextmanager
    def cancelling(self, task: asyncio.Task[Any]) -> Iterator[None]:
        self._task, self._loop = task, asyncio.get_running_loop()
        try:
            yield
        finally:
            self._task = self._loop = None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Let a signal only be recorded (the cleanup runs to its end)."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the stop signals back (create a folder and remember it, nothing in between)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
