"""Periodic sampling of the dynamic profile on a background thread.

A thread (not an asyncio task) because psutil reads are blocking system calls and because both
the asyncio daemons and plain scripts use it the same way; the thread only wakes once per period,
which is what keeps the profiler's own cost far below 1% of one core (see ``bench/profiler.py``).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType

from eddl.log import get_logger
from eddl.profiler.dynamic import DynamicCollector
from eddl.profiler.profiles import DynamicProfile

__all__ = ["DEFAULT_PERIOD_S", "Sampler"]

DEFAULT_PERIOD_S = 5.0
_log = get_logger("profiler.sampler")


class Sampler:
    """Samples ``collector`` every ``period_s`` seconds; keeps the last ``history`` samples.

    ``on_sample`` (optional) is called on the sampler thread with each new sample; an exception
    it raises is logged and does not stop sampling. Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        period_s: float = DEFAULT_PERIOD_S,
        history: int = 120,
        collector: DynamicCollector | None = None,
        on_sample: Callable[[DynamicProfile], None] | None = None,
    ) -> None:
        if isinstance(period_s, bool) or not isinstance(period_s, int | float):
            raise TypeError(f"period_s must be a number, got {type(period_s).__name__}")
        if not math.isfinite(period_s) or period_s <= 0:
            raise ValueError(f"period_s must be a finite number > 0, got {period_s!r}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        self.period_s = float(period_s)
        self._collector = collector
        self._on_sample = on_sample
        self._samples: deque[DynamicProfile] = deque(maxlen=history)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Take a first sample now, then one every period on a daemon thread."""
        if self.running:
            raise RuntimeError("sampler is already running")
        if self._collector is None:
            self._collector = DynamicCollector()
        self._stop.clear()
        self.sample_now()
        self._thread = threading.Thread(target=self._run, name="eddl-profiler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def sample_now(self) -> DynamicProfile:
        """Take a sample immediately (also recorded in the history)."""
        if self._collector is None:
            self._collector = DynamicCollector()
        sample = self._collector.sample()
        with self._lock:
            self._samples.append(sample)
        if self._on_sample is not None:
            try:
                self._on_sample(sample)
            except Exception:  # a consumer's bug must not end profiling
                _log.exception("profiler.on_sample_failed")
        return sample

    def latest(self) -> DynamicProfile | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def history(self) -> list[DynamicProfile]:
        """Samples oldest first."""
        with self._lock:
            return list(self._samples)

    def _run(self) -> None:
        # Event.wait both paces the loop and makes stop() immediate.
        while not self._stop.wait(self.period_s):
            try:
                self.sample_now()
            except Exception:  # a transient OS error must not end profiling
                self.errors += 1
                _log.exception("profiler.sample_failed")
