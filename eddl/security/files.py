"""Small private files of the security state: written atomically, mode 0600, under a lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["locked", "read_json", "write_private"]

MAX_STATE_BYTES = 8 * 1024 * 1024


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; the file is mode 0600 from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def read_json(path: Path, default: Any) -> Any:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return default
    if len(raw) > MAX_STATE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_STATE_BYTES} bytes")
    return json.loads(raw)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock (``path`` + ``.lock``) shared by the leader and the ``eddl`` command."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
