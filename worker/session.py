"""The node's membership at its leader: join, call with retry and rejoin, leave.

Every call of the worker goes through :meth:`LeaderSession.call`, which joins (again) first
when needed. When the leader is away (``UNAVAILABLE``, a deadline, a call it ends itself) the
next join moves down the leader list with backoff (:class:`~eddl.worker.link.LeaderLink`);
when it has forgotten the node (unknown node, new term) the node joins it again; a non-root
leader's ``not-leader`` answer sends it to the root it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from eddl.log import get_logger
from eddl.net import REASON_KEY
from eddl.net.redirect import not_leader
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.worker.config import WorkerConfig
from eddl.worker.link import LeaderLink
from eddl.worker.unreachable import UnreachableReporter

__all__ = ["LINK_DOWN", "REJOIN_REASONS", "JoinRefusedError", "LeaderSession", "rpc_reason"]

log = get_logger("worker")
T = TypeVar("T")

REJOIN_REASONS = {"unknown-node", "stale-term"}
# The leader away, too slow, or ending the call itself (CANCELLED: a leader that stops, or
# one overloaded enough to drop calls): the daemon tries again, at the next leader it knows.
LINK_DOWN = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


class JoinRefusedError(RuntimeError):
    """The leader refused the node (wrong join token): retrying cannot help."""


def rpc_reason(exc: grpc.aio.AioRpcError) -> str:
    """The machine-readable reason a leader's error carries in its trailing metadata."""
    for key, value in exc.trailing_metadata() or ():
        if key == REASON_KEY:
            return str(value)
    return ""


class LeaderSession:
    """One node's standing with its leader: the term it joined in, the heartbeat interval the
    leader set, and whether it is joined right now (``joined``; ``changed`` is set on every
    change). ``join_request`` builds what the node says about itself at each join."""

    def __init__(
        self,
        config: WorkerConfig,
        node_id: str,
        link: LeaderLink,
        join_request: Callable[[], Awaitable[cluster_pb2.JoinRequest]],
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.link = link
        self._join_request = join_request
        # Says where the worker is trying and for how long while no leader answers.
        self.unreachable = UnreachableReporter()
        self.term = 0
        self.heartbeat_s = 1.0
        self.jitter = 0.1
        self.joined = asyncio.Event()
        self.changed = asyncio.Event()
        self._join_lock = asyncio.Lock()
        self._link_broken = False

    def envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=job_id, model_version=version, term=self.term, node_id=self.node_id
        )

    def lost(self, reason: str, *, link_down: bool) -> None:
        """The leader is gone (``link_down``) or no longer knows the node: join again."""
        if self.joined.is_set():
            log.info("lost the leader", reason=reason, leader=self.link.address)
        self.joined.clear()
        self.changed.set()
        self._link_broken = self._link_broken or link_down
        if link_down:
            self.unreachable.failed(self.link.address, reason, self.link.leaders)

    async def ensure_joined(self) -> None:
        if self.joined.is_set():
            return
        async with self._join_lock:
            while not self.joined.is_set():
                if self._link_broken:
                    await self.link.next_leader(self.unreachable.last_reason or "rpc failed")
                    self._link_broken = False
                request = await self._join_request()
                try:
                    reply = await self.link.stub.Join(request, timeout=self.config.rpc_timeout_s)
                except grpc.aio.AioRpcError as exc:
                    if await self.followed(exc):
                        continue
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                        raise JoinRefusedError(f"join refused: {exc.details()}") from exc
                    if exc.code() in LINK_DOWN:
                        self._link_broken = True
                        reason = f"{exc.code().name}: {exc.details()}"
                        self.unreachable.failed(self.link.address, reason, self.link.leaders)
                        continue
                    raise
                self.unreachable.reached(self.link.address)
                self.term = reply.envelope.term
                self.heartbeat_s = max(0.05, reply.heartbeat_interval_ms / 1000.0)
                self.jitter = min(max(reply.heartbeat_jitter, 0.0), 0.5)
                self.link.learn_leaders(list(reply.leaders))
                self.link.succeeded()
                self.joined.set()
                self.changed.set()
                log.info(
                    "joined", leader=self.link.address, term=self.term, heartbeat_s=self.heartbeat_s
                )

    async def followed(self, exc: grpc.aio.AioRpcError) -> bool:
        """A non-root leader answered: go to the root it names (join there); when it knows no
        root (an election is under way), back off and try the next leader address."""
        redirect = not_leader(exc, self.link.address)
        if redirect is None:
            return False
        if redirect.hint:
            await self.link.follow(redirect.hint)
        else:
            await self.link.next_leader(f"{self.link.address} knows no root yet")
        return True

    async def call(self, fn: Callable[[cluster_pb2_grpc.ClusterStub], Awaitable[T]]) -> T:
        """Run ``fn`` against the leader, joining (again) first when needed."""
        while True:
            await self.ensure_joined()
            try:
                result = await fn(self.link.stub)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in LINK_DOWN:
                    self.lost(f"{exc.code().name}: {exc.details()}", link_down=True)
                    continue
                if rpc_reason(exc) in REJOIN_REASONS or await self.followed(exc):
                    self.lost(exc.details() or "rejoin", link_down=False)
                    continue
                raise
            self.link.succeeded()
            return result

    async def leave(self, reason: str) -> None:
        """Say goodbye, so the leader requeues the node's task at once (best effort)."""
        try:
            await self.link.stub.Leave(
                cluster_pb2.LeaveRequest(envelope=self.envelope(), reason=reason),
                timeout=2.0,
            )
            log.info("left the cluster", leader=self.link.address)
        except grpc.aio.AioRpcError as exc:
            log.warning("leave failed", code=exc.code().name, detail=exc.details())
