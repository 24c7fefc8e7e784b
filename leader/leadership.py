"""``StaticLeadership``: the :class:`~eddl.leader.ports.Leadership` of a configured leader.

The root claims its term from the store's leadership record (one above the stored term, so
every message of an earlier incarnation is recognisably stale) and writes the record back
with its id and, once bound, its address. The store is the one source of the term.

Configured as a follower (``root=False``), it answers with the root's address as the hint
and never claims a term: a non-root leader refuses every RPC and points nodes to the root.
An elected adapter replaces this class behind the same port.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eddl.leader.checkpoint import CheckpointStore, LeadershipRecord
from eddl.leader.ports import Clock, Leadership, LeadershipState

__all__ = ["StaticLeadership"]


class StaticLeadership(Leadership):
    def __init__(
        self,
        store: CheckpointStore,
        *,
        leader_id: str = "leader",
        root: bool = True,
        root_hint: str = "",
        min_term: int = 1,
        clock: Clock = time.time,
    ) -> None:
        if min_term < 1:
            raise ValueError("term must be >= 1")
        self._store = store
        self._leader_id = leader_id
        self._clock = clock
        self._listeners: list[Callable[[LeadershipState], None]] = []
        record = store.leadership()
        # Before the leadership record existed the term was a plain stored value.
        legacy = store.get_value("term")
        last = record.term if record is not None else legacy if isinstance(legacy, int) else 0
        if root:
            term = max(min_term, last + 1)
            store.save_leadership(LeadershipRecord(term, leader_id, root_hint, clock()))
        else:
            term = max(last, 1)
        self._state = LeadershipState(term, root, root_hint)

    def state(self) -> LeadershipState:
        return self._state

    def subscribe(self, listener: Callable[[LeadershipState], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def serving_at(self, address: str) -> None:
        """The root's bound address, once known: recorded and announced as the hint."""
        state = self._state
        if not state.is_root or state.root_hint == address:
            return
        self._store.save_leadership(
            LeadershipRecord(state.term, self._leader_id, address, self._clock())
        )
        self._set(LeadershipState(state.term, True, address))

    def _set(self, state: LeadershipState) -> None:
        self._state = state
        for listener in list(self._listeners):
            listener(state)
