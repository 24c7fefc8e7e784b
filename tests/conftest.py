"""Shared fixtures: reap child processes a test left behind, shipped data helpers."""

from __future__ import annotations

import contextlib
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
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(children, timeout=5)
