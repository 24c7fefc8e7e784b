"""The static profile: what the node is, read once from psutil, the OS and board sources."""

from __future__ import annotations

import platform
import socket

import numpy as np
import psutil

from eddl.profiler.profiles import StaticProfile
from eddl.profiler.sources import HostSources

__all__ = ["collect_static"]


def _max_frequency_mhz(sources: HostSources) -> float | None:
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, RuntimeError):
        freq = None
    # psutil reports max = 0.0 when the OS does not expose it (common in VMs): unknown, not 0.
    if freq is not None and freq.max and freq.max > 0:
        return float(freq.max)
    mhz = sources.max_frequency_mhz()
    return None if mhz is None else float(mhz)


def _has_battery() -> bool:
    try:
        return psutil.sensors_battery() is not None
    except (OSError, NotImplementedError, RuntimeError, AttributeError):
        return False


def collect_static(
    node_id: str,
    role: str,
    sources: HostSources | None = None,
) -> StaticProfile:
    """Describe this machine. Fields the OS does not expose are ``None``."""
    src = sources if sources is not None else HostSources()
    physical = psutil.cpu_count(logical=False)
    return StaticProfile(
        node_id=node_id,
        role=role,
        hostname=socket.gethostname(),
        architecture=platform.machine(),
        cpu_model=src.cpu_model() or (platform.processor() or None),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=physical if physical else None,
        max_frequency_mhz=_max_frequency_mhz(src),
        total_memory_bytes=int(psutil.virtual_memory().total),
        os_name=platform.system(),
        os_release=platform.release(),
        python_version=platform.python_version(),
        numpy_version=np.__version__,
        board_model=src.board_model(),
        has_temperature=src.has_temperature(),
        has_throttle_status=src.has_throttle_status(),
        has_battery=_has_battery(),
    )
