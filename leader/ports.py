"""The ports of the leader's core: what it needs from the world, as small interfaces.

* :class:`Leadership` - the term, whether this process is the root leader, who the root is
  (an address hint for nodes that reached a non-root), and notifications when that changes.
  Adapters: :class:`~eddl.leader.leadership.StaticLeadership` (one leader, configured);
  an elected adapter (etcd and the like) fits behind the same interface.
* :class:`Clock` - monotonic seconds; tests pass a virtual clock.
* :class:`EventSink` - where job events go once they happened (watchers, long-polls).
* The checkpoint store (:class:`~eddl.leader.checkpoint.CheckpointStore`) is the fourth port;
  it lives in ``checkpoint`` with its records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from eddl.leader.events import Event

__all__ = ["Clock", "EventSink", "Leadership", "LeadershipState"]


class Clock(Protocol):
    """Monotonic seconds (``time.monotonic`` is one)."""

    def __call__(self) -> float: ...


class EventSink(Protocol):
    """Receives every job event after it was recorded, in order."""

    def emit(self, event: Event) -> None: ...


@dataclass(frozen=True)
class LeadershipState:
    """What a :class:`Leadership` says at one moment."""

    term: int
    is_root: bool
    root_hint: str  # the root's address ("" when unknown; this process's own when root)


class Leadership(ABC):
    """The one source of the leader's term and of who the root is."""

    @abstractmethod
    def state(self) -> LeadershipState: ...

    @abstractmethod
    def subscribe(self, listener: Callable[[LeadershipState], None]) -> Callable[[], None]:
        """Call ``listener`` on every change; returns the unsubscribe function."""

    @property
    def term(self) -> int:
        return self.state().term

    def is_root(self) -> bool:
        return self.state().is_root

    def root_hint(self) -> str:
        return self.state().root_hint
