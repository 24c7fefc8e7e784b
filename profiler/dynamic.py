"""The dynamic profile: one sample of the node's current state.

CPU percentages are measured between two consecutive calls (psutil's ``interval=None``
behaviour), so a :class:`DynamicCollector` is created once and asked for samples on a period;
its first sample primes the counters and reports the average since the process started.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import psutil

from eddl.profiler.profiles import DynamicProfile
from eddl.profiler.sources import THROTTLED_NOW_MASK, HostSources

__all__ = ["DynamicCollector"]


class DynamicCollector:
    """Takes :class:`DynamicProfile` samples of this machine and of one process (default: self).

    ``clock`` gives the Unix time stamped on each sample (injectable for tests).
    """

    def __init__(
        self,
        sources: HostSources | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = sources if sources is not None else HostSources()
        self._process = psutil.Process(pid if pid is not None else os.getpid())
        self._clock = clock
        self._has_loadavg = hasattr(os, "getloadavg")
        try:
            self._has_battery = psutil.sensors_battery() is not None
        except (OSError, NotImplementedError, RuntimeError, AttributeError):
            self._has_battery = False
        # Prime the interval counters so that the first real sample is meaningful.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)

    def _load_average(self) -> tuple[float | None, float | None, float | None]:
        if not self._has_loadavg:
            return None, None, None
        try:
            one, five, fifteen = os.getloadavg()
        except OSError:
            return None, None, None
        return one, five, fifteen

    def _battery(self) -> tuple[float | None, bool | None]:
        if not self._has_battery:
            return None, None
        try:
            battery = psutil.sensors_battery()
        except (OSError, RuntimeError):
            return None, None
        if battery is None:
            return None, None
        percent = min(max(float(battery.percent), 0.0), 100.0)
        plugged = None if battery.power_plugged is None else bool(battery.power_plugged)
        return percent, plugged

    def _frequency(self) -> float | None:
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError, RuntimeError):
            return None
        return float(freq.current) if freq is not None and freq.current > 0 else None

    def sample(self) -> DynamicProfile:
        """Read the machine now."""
        mem = psutil.virtual_memory()
        load1, load5, load15 = self._load_average()
        flags = self.sources.throttle_flags()
        battery_percent, plugged = self._battery()
        with self._process.oneshot():
            rss = int(self._process.memory_info().rss)
            proc_cpu = float(self._process.cpu_percent(interval=None))
        return DynamicProfile(
            timestamp=self._clock(),
            cpu_percent=min(max(float(psutil.cpu_percent(interval=None)), 0.0), 100.0),
            load_average_1m=load1,
            load_average_5m=load5,
            load_average_15m=load15,
            memory_available_bytes=int(mem.available),
            memory_percent=min(max(float(mem.percent), 0.0), 100.0),
            temperature_celsius=self.sources.temperature_celsius(),
            throttled=None if flags is None else bool(flags & THROTTLED_NOW_MASK),
            throttle_flags=flags,
            battery_percent=battery_percent,
            battery_plugged=plugged,
            process_rss_bytes=rss,
            process_cpu_percent=max(proc_cpu, 0.0),
            cpu_frequency_mhz=self._frequency(),
        )
