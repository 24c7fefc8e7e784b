"""Membership: who is in the cluster, their profiles, heartbeats and expiry.

A node joins with a join token (compared in constant time), then sends heartbeats every
``heartbeat_interval`` seconds; workers add ±``jitter`` to the interval so a cluster that
started together does not beat in lock-step. A node is *gone* once ``patience`` (2) beats are
missed: ``now - last_seen > patience × interval × (1 + jitter)``. :meth:`Membership.expire`
declares such nodes gone and calls the ``on_gone`` callbacks at once (the coordinator re-queues
their tasks there). A gone node that calls again gets :class:`NodeExpiredError`, the explicit
answer that tells it to rejoin; rejoining opens a new *session*, so anything tied to the old
session (a task, a late update) is recognisably stale.

Nodes of role ``mcu`` are microcontrollers joined by their gateway; they must bring their
:class:`~eddl.leader.capability.McuCapabilities` (what jobs they can run), and no other role may.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from eddl.leader.capability import McuCapabilities
from eddl.leader.errors import (
    InvalidArgumentError,
    JoinRefusedError,
    NodeExpiredError,
    UnknownNodeError,
)
from eddl.log import get_logger

__all__ = ["GoneCallback", "Membership", "Node", "NodeProfile", "Role"]

log = get_logger("leader.membership")


class Role(StrEnum):
    WORKER = "worker"
    GATEWAY = "gateway"
    MCU = "mcu"
    LEADER = "leader"


@dataclass(frozen=True)
class NodeProfile:
    """What the scheduler needs from a node's runtime profile.

    ``benchmark_sps`` is the micro-benchmark of the job's kernel (samples/s), the prior used
    until real task times exist. ``static`` and ``dynamic`` keep the profiler's full records
    (dataclasses of ``eddl.profiler``) for ``eddl status``; the logic does not read into them.
    """

    benchmark_sps: float | None = None
    static: Any = None
    dynamic: Any = None
    bandwidth_bps: float | None = None


@dataclass
class Node:
    """One member. ``mcu`` is set exactly for role ``mcu`` (fixed for the session)."""

    node_id: str
    role: Role
    session: int
    joined_at: float
    last_seen: float
    profile: NodeProfile = field(default_factory=NodeProfile)
    address: str = ""
    alive: bool = True
    gone_at: float | None = None
    gone_reason: str = ""
    leave_reason: str = ""  # what the node said when it left (a gateway: "device lost: ...")
    mcu: McuCapabilities | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": self.role.value,
            "session": self.session,
            "joined_at": self.joined_at,
            "last_seen": self.last_seen,
            "alive": self.alive,
            "address": self.address,
            "benchmark_sps": self.profile.benchmark_sps,
            "gone_reason": self.gone_reason,
            "leave_reason": self.leave_reason,
            "mcu": None if self.mcu is None else self.mcu.to_dict(),
        }


GoneCallback = Callable[[Node, Literal["left", "expired"]], None]


class Membership:
    """The node table. Synchronous and fast; time comes from the injected ``now``."""

    def __init__(
        self,
        *,
        heartbeat_interval: float = 1.0,
        patience: int = 2,
        jitter: float = 0.1,
        join_tokens: Mapping[str, Role] | None = None,
        now: Callable[[], float] = time.monotonic,
        max_departed: int = 1024,
    ) -> None:
        if max_departed < 0:
            raise ValueError("max_departed must be >= 0")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        if patience < 1:
            raise ValueError("patience must be >= 1")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self.heartbeat_interval = heartbeat_interval
        self.patience = patience
        self.jitter = jitter
        # token -> the most privileged role it admits (a leader token also admits workers).
        self._tokens = dict(join_tokens or {})
        self._now = now
        self._nodes: dict[str, Node] = {}
        self._sessions = 0
        self._callbacks: list[GoneCallback] = []
        # Departed nodes stay listed (status shows why they went) but only the most recent
        # ``max_departed`` of them: memory does not grow with every node id ever seen.
        self._max_departed = max_departed

    # -- configuration -------------------------------------------------------------------
    def on_gone(self, callback: GoneCallback) -> None:
        """Call ``callback(node, "left" | "expired")`` when a node leaves or expires."""
        self._callbacks.append(callback)

    @property
    def timeout(self) -> float:
        """Silence after which a node is gone: ``patience`` intervals, with the jitter allowed."""
        return self.patience * self.heartbeat_interval * (1.0 + self.jitter)

    # -- calls from nodes ------------------------------------------------------------------
    def join(
        self,
        node_id: str,
        token: str,
        *,
        role: Role | str = Role.WORKER,
        profile: NodeProfile | None = None,
        address: str = "",
        mcu: McuCapabilities | None = None,
    ) -> Node:
        """Admit ``node_id``; a node already present rejoins with a new session.

        Raises :class:`JoinRefusedError` for a wrong token and ``ValueError`` for a bad id or
        role, or an ``mcu`` role without capabilities (or capabilities on another role);
        nothing changes in any case.
        """
        role = _role(role)
        _check_node_id(node_id)
        if role is Role.MCU and mcu is None:
            raise InvalidArgumentError(
                f"node {node_id!r}: role mcu needs an McuProfile (arena, algorithms, layers)"
            )
        if role is not Role.MCU and mcu is not None:
            raise InvalidArgumentError(
                f"node {node_id!r}: an McuProfile is only for role mcu, not {role.value}"
            )
        self._check_token(token, role)
        now = self._now()
        self._sessions += 1
        previous = self._nodes.get(node_id)
        if previous is not None and previous.alive:
            # The old session is over: whatever it held goes back before the new one starts.
            self._mark_gone(previous, "left", now, "rejoined")
        node = Node(
            node_id, role, self._sessions, now, now, profile or NodeProfile(), address, mcu=mcu
        )
        self._nodes[node_id] = node
        log.info("node_joined", node_id=node_id, role=role.value, session=node.session)
        return node

    def heartbeat(self, node_id: str, *, profile: NodeProfile | None = None) -> Node:
        """Record a beat (and a fresher profile); a gone node gets :class:`NodeExpiredError`."""
        node = self.require(node_id)
        node.last_seen = self._now()
        if profile is not None:
            node.profile = profile
        return node

    def leave(self, node_id: str, reason: str = "") -> Node:
        """A clean goodbye: the node's work goes back to the queue at once.

        ``reason`` is kept (at most 200 printable characters) for status and events.
        """
        node = self.require(node_id)
        node.leave_reason = "".join(c for c in reason[:200] if c.isprintable())
        self._mark_gone(node, "left", self._now(), node.leave_reason or "left")
        return node

    # -- queries -------------------------------------------------------------------------
    def require(self, node_id: str, session: int | None = None) -> Node:
        """The live node ``node_id`` (in ``session`` if given), or the right typed error."""
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNodeError(f"node {node_id!r} has not joined")
        if not node.alive:
            if node.gone_reason == "left":
                raise UnknownNodeError(f"node {node_id!r} left; join again")
            raise NodeExpiredError(
                f"node {node_id!r} was declared gone ({node.gone_reason}); its work was "
                "re-queued: join again"
            )
        if session is not None and node.session != session:
            raise NodeExpiredError(
                f"node {node_id!r} session {session} is over (now {node.session})"
            )
        return node

    def get(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def alive(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.alive]

    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def __contains__(self, node_id: object) -> bool:
        node = self._nodes.get(node_id) if isinstance(node_id, str) else None
        return node is not None and node.alive

    def __len__(self) -> int:
        return len(self.alive())

    # -- time ----------------------------------------------------------------------------
    def expire(self) -> list[Node]:
        """Declare gone every node silent for longer than :attr:`timeout`; returns them."""
        now = self._now()
        gone = [n for n in self._nodes.values() if n.alive and now - n.last_seen > self.timeout]
        for node in gone:
            missed = (now - node.last_seen) / self.heartbeat_interval
            self._mark_gone(
                node,
                "expired",
                now,
                f"silent {now - node.last_seen:.1f} s, ~{missed:.1f} heartbeat intervals",
            )
        return gone

    def forget_gone(self, older_than: float) -> list[str]:
        """Drop records of nodes gone for more than ``older_than`` seconds, and the oldest
        departed beyond ``max_departed``; returns the forgotten node ids."""
        now = self._now()
        departed = sorted(
            (n for n in self._nodes.values() if not n.alive and n.gone_at is not None),
            key=lambda n: n.gone_at or 0.0,
        )
        surplus = len(departed) - self._max_departed
        drop = [
            n.node_id
            for i, n in enumerate(departed)
            if i < surplus or now - (n.gone_at or now) > older_than
        ]
        for key in drop:
            del self._nodes[key]
        return drop

    # -- internals -----------------------------------------------------------------------
    def _check_token(self, token: str, role: Role) -> None:
        if not self._tokens:
            return  # an open cluster (tests, `eddl local`): the daemon decides to allow it
        granted: Role | None = None
        for known, known_role in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                granted = known_role
        if granted is None:
            raise JoinRefusedError("unknown or wrong join token")
        if role is Role.LEADER and granted is not Role.LEADER:
            raise JoinRefusedError("this join token does not admit leaders")

    def _mark_gone(
        self, node: Node, kind: Literal["left", "expired"], now: float, reason: str
    ) -> None:
        node.alive = False
        node.gone_at = now
        node.gone_reason = "left" if kind == "left" else reason
        log.info("node_gone", node_id=node.node_id, kind=kind, reason=reason)
        for callback in list(self._callbacks):
            callback(node, kind)


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise ValueError(f"unknown role {role!r}; known: {[r.value for r in Role]}") from None


def _check_node_id(node_id: str) -> None:
    if not isinstance(node_id, str) or not 0 < len(node_id) <= 128 or not node_id.isprintable():
        raise ValueError(f"node id must be 1-128 printable characters, got {node_id!r}")
