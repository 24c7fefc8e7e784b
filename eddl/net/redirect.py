"""``not-leader`` redirects: a leader that is not the root points callers to the root.

A non-root leader answers every Cluster and Admin call ``FAILED_PRECONDITION`` with the reason
``not-leader`` in trailing metadata ``eddl-reason`` and the root's address in
``eddl-leader-hint`` (empty when it does not know the root). Clients turn such an error into a
:class:`NotLeaderError` with :func:`not_leader` and call the hinted address instead.
"""

from __future__ import annotations

import grpc

from eddl.net.status import REASON_KEY

__all__ = ["LEADER_HINT_KEY", "NOT_LEADER", "NotLeaderError", "not_leader", "not_leader_metadata"]

LEADER_HINT_KEY = "eddl-leader-hint"
NOT_LEADER = "not-leader"


class NotLeaderError(Exception):
    """The called leader is not the root; ``hint`` is the root's address ("" if unknown)."""

    def __init__(self, address: str, hint: str) -> None:
        self.address = address
        self.hint = hint
        where = f"the root is {hint}" if hint else "it does not know the root"
        super().__init__(f"{address or 'the leader'} is not the root leader; {where}")


def not_leader_metadata(hint: str) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a ``not-leader`` refusal."""
    return ((REASON_KEY, NOT_LEADER), (LEADER_HINT_KEY, hint))


def not_leader(exc: grpc.aio.AioRpcError, address: str = "") -> NotLeaderError | None:
    """The redirect ``exc`` carries, or ``None`` when it is any other error."""
    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    metadata = {key: value for key, value in exc.trailing_metadata() or ()}
    if metadata.get(REASON_KEY) != NOT_LEADER:
        return None
    hint = metadata.get(LEADER_HINT_KEY, "")
    return NotLeaderError(address, hint if isinstance(hint, str) else "")
