"""The worker's heartbeats: one beat per interval the leader sets, with jitter.

A beat's reply may say that the leader no longer knows the node (join again), that it took the
node's task back (cancel it), a new interval, a promotion token for a ``--can-lead`` worker,
and the leader addresses the node should know.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import grpc

from eddl.log import get_logger
from eddl.proto.v1 import cluster_pb2
from eddl.worker.session import LINK_DOWN, REJOIN_REASONS, LeaderSession, rpc_reason

__all__ = ["Heartbeats"]

log = get_logger("worker")


class Heartbeats:
    """Beats for one node through its ``session``: ``beat_request`` builds each beat,
    ``cancel_task`` is called when the leader took the node's task back, ``lead_token`` with
    the token a reply carries when the root promoted the node's group."""

    def __init__(
        self,
        session: LeaderSession,
        beat_request: Callable[[], Awaitable[cluster_pb2.HeartbeatRequest]],
        *,
        rng: random.Random,
        cancel_task: Callable[[], None],
        lead_token: Callable[[str], None],
    ) -> None:
        self.session = session
        self._beat_request = beat_request
        self._rng = rng
        self._cancel_task = cancel_task
        self._lead_token = lead_token

    async def run(self) -> None:
        session = self.session
        while True:
            await session.ensure_joined()
            request = await self._beat_request()
            try:
                reply = await session.link.stub.Heartbeat(
                    request, timeout=session.config.rpc_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in LINK_DOWN:
                    session.lost(f"heartbeat {exc.code().name}", link_down=True)
                elif rpc_reason(exc) in REJOIN_REASONS or await session.followed(exc):
                    session.lost(exc.details() or "rejoin", link_down=False)
                else:
                    log.warning("heartbeat refused", code=exc.code().name, detail=exc.details())
            else:
                if not reply.known:
                    session.lost("leader does not know this node", link_down=False)
                    continue
                if reply.cancel_task:
                    self._cancel_task()
                if reply.heartbeat_interval_ms:
                    session.heartbeat_s = max(0.05, reply.heartbeat_interval_ms / 1000.0)
                if reply.lead_token:
                    self._lead_token(reply.lead_token)
                session.link.learn_leaders(list(reply.leaders))
            jitter = session.jitter
            delay = session.heartbeat_s * (1 + self._rng.uniform(-jitter, jitter))
            await asyncio.sleep(delay)
