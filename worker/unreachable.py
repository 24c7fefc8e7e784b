"""What a worker says while it cannot reach a leader: where it is trying and for how long.

The worker retries forever (a leader may come back at any time, and under systemd nobody would
restart it otherwise), so silence would hide a wrong address or a firewall. The first failure
is logged at info with the address and the reason; the retries themselves are logged by
:class:`~eddl.worker.link.LeaderLink`. Once the leader has been unreachable for ``warn_after_s``
(a minute: longer than a leader restart takes) a warning says how long, where the worker is
trying, which leaders it knows and how many calls failed, and repeats every ``repeat_s`` while
the outage lasts. A success after failures says how long the outage was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from eddl.log import get_logger

__all__ = ["UnreachableReporter"]


class UnreachableReporter:
    """Logs an outage of the leader link; :meth:`failed` per failed call, :meth:`reached`
    after a successful one. ``clock`` is a monotonic clock in seconds."""

    def __init__(
        self,
        *,
        warn_after_s: float = 60.0,
        repeat_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        log: Any = None,
    ) -> None:
        if warn_after_s < 0 or repeat_s <= 0:
            raise ValueError("need warn_after_s >= 0 and repeat_s > 0")
        self.warn_after_s = warn_after_s
        self.repeat_s = repeat_s
        self._clock = clock
        self._log = log if log is not None else get_logger("worker")
        self._since: float | None = None
        self._warned_at: float | None = None
        self.failures = 0
        self.last_reason = ""

    @property
    def failing_s(self) -> float:
        """How long the leader has been unreachable (0 while it is not)."""
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, address: str, reason: str, leaders: Sequence[str] = ()) -> None:
        """A call to ``address`` failed because the leader could not be reached."""
        now = self._clock()
        self.failures += 1
        self.last_reason = reason
        if self._since is None:
            self._since = now
            self._log.info("leader unreachable", leader=address, reason=reason)
            return
        failing = now - self._since
        if failing < self.warn_after_s:
            return
        if self._warned_at is not None and now - self._warned_at < self.repeat_s:
            return
        self._warned_at = now
        self._log.warning(
            "leader unreachable, still trying",
            leader=address,
            leaders=list(leaders) or [address],
            failing_s=round(failing, 1),
            failed_calls=self.failures,
            reason=reason,
        )

    def reached(self, address: str) -> None:
        """A call to ``address`` succeeded: the outage, if any, is over."""
        if self._since is None:
            return
        self._log.info(
            "leader reachable again",
            leader=address,
            failed_for_s=round(self._clock() - self._since, 1),
            failed_calls=self.failures,
        )
        self._since = None
        self._warned_at = None
        self.failures = 0
        self.last_reason = ""
