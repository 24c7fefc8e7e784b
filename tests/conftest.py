"""Shared fixtures: reap child processes a test left behind, shipped data helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import structlog

from tests.etcd_procs import EtcdMember, etcd_cluster


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


@pytest.fixture(scope="session", autouse=True)
def _no_user_credentials(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The ``eddl`` command (in-process or a child) must not pick up the user's admin
    certificate: point its config dir at an empty folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDDL_CONFIG_DIR", str(tmp_path_factory.mktemp("eddl-config")))
        yield


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Entry points called in-process configure structlog for the stream they were given (often
    a capture that closes with the test); later tests must not log into it."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def every_log_level() -> Iterator[None]:
    """Every record, info and warnings included, reaches ``structlog.testing.capture_logs``
    whatever level an earlier test configured; that configuration is restored after."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdMember]:
    """One real etcd member on free loopback ports, killed by its PID after the test."""
    with etcd_cluster(tmp_path / "etcd") as members:
        yield members[0]
