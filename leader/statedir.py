"""``StateDirLock``: one leader process per state directory.

Two leaders on one directory would both resume the same job and number its events alike; the
first write of the slower one then fails on a duplicate key and versions lose their events.
The owner holds an exclusive ``fcntl.flock`` on ``<state_dir>/leader.lock`` for as long as it
runs; the kernel drops it when the process dies (SIGKILL included), so a crashed leader never
leaves a stale lock behind. A second leader finds the lock held and exits at once with
:data:`EXIT_STATE_DIR_IN_USE`, before it opens the store or binds a port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from eddl.leader.errors import LeaderError

__all__ = ["EXIT_STATE_DIR_IN_USE", "LOCK_FILE", "StateDirInUseError", "StateDirLock"]

LOCK_FILE = "leader.lock"
# eddl-leader's exit status when another leader owns its state directory (2 is a bad config,
# 1 any other failure to start).
EXIT_STATE_DIR_IN_USE = 3


class StateDirInUseError(LeaderError):
    """Another process holds the state directory's lock."""

    code = "FAILED_PRECONDITION"


class StateDirLock:
    """Exclusive ownership of a state directory; :meth:`acquire` first, :meth:`release` last."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StateDirLock:
        """Take the lock or raise :class:`StateDirInUseError` without waiting."""
        if self._fd is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirInUseError(
                f"state directory {self.state_dir} is in use by another eddl-leader"
                f"{f' (pid {holder})' if holder else ''}; stop it or choose another --state-dir"
            ) from None
        # The holder's pid, for the message above; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> StateDirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
