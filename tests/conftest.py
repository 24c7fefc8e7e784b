"""Shared fixtures: reap child processes a test left behind, shipped data helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture(scope="session", autouse=True)
def _reap_children() -> Iterator[None]:
    """Kill any child process (daemon, simulator, QEMU) still alive when the session ends."""
    yield
    me = psutil.Process(os.getpid())
    children = me.children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=5)
