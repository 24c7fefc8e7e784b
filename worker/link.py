"""The worker's connection to its leader: one channel, the leader list, backoff on failure.

``LeaderLink`` holds a channel to the current leader and the stubs on it. When a call fails with
``UNAVAILABLE`` (leader away or restarting) the daemon calls :meth:`LeaderLink.next_leader`,
which closes the channel, moves to the next address of the list and waits an exponentially
growing, jittered delay, bounded by ``backoff_max_s``. A successful call resets the delay.
"""

from __future__ import annotations

import asyncio
import random

import grpc

from eddl.log import get_logger
from eddl.proto.v1 import cluster_pb2_grpc
from eddl.security.node import NodeSecurity

__all__ = ["Backoff", "LeaderLink"]

log = get_logger("worker.link")


class Backoff:
    """Exponential backoff with full jitter: delay_n is uniform in [d/2, d], d = min(max, i·2^n)."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class LeaderLink:
    def __init__(
        self, leaders: list[str], backoff: Backoff, security: NodeSecurity | None = None
    ) -> None:
        if not leaders:
            raise ValueError("no leader addresses")
        self.leaders = list(leaders)
        self.backoff = backoff
        self.security = security or NodeSecurity("off")
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: cluster_pb2_grpc.ClusterStub | None = None
        self._generation = self.security.generation
        # Channels of a previous certificate, closed one renewal later (their calls are over).
        self._retired: list[grpc.aio.Channel] = []

    @property
    def address(self) -> str:
        return self.leaders[self._index]

    @property
    def stub(self) -> cluster_pb2_grpc.ClusterStub:
        if self._generation != self.security.generation:
            # A renewed certificate: new calls go over a new channel; in-flight ones finish.
            self._generation = self.security.generation
            if self._channel is not None:
                self._retired.append(self._channel)
            self._channel, self._stub = None, None
        if self._stub is None:
            self._channel = self.security.channel(self.address)
            self._stub = cluster_pb2_grpc.ClusterStub(self._channel)
        return self._stub

    def learn_leaders(self, leaders: list[str]) -> None:
        """Adopt the leader list a leader sent, keeping the current one first if it is listed."""
        valid = [a for a in leaders if a]
        if not valid:
            return
        current = self.address
        self.leaders = valid if current in valid else [current, *valid]
        self._index = self.leaders.index(current)

    async def next_leader(self, reason: str) -> None:
        await self.close()
        self._index = (self._index + 1) % len(self.leaders)
        delay = self.backoff.next_delay()
        log.info(
            "leader unreachable, backing off",
            reason=reason,
            next=self.address,
            delay_s=round(delay, 3),
        )
        await asyncio.sleep(delay)

    async def follow(self, address: str) -> None:
        """Switch to ``address`` (a non-root leader's hint), keeping the others as fallbacks.

        The old channel is retired, not closed: a call still in flight on it (a heartbeat
        beside the call that was redirected) ends with its answer, not with the
        ``CancelledError`` a closed channel gives its calls, which would end that loop."""
        if self._channel is not None:
            self._retired.append(self._channel)
        self._channel, self._stub = None, None
        await self.close_retired()
        self.leaders = [address, *(a for a in self.leaders if a != address)]
        self._index = 0
        log.info("following the root leader", leader=address)

    def succeeded(self) -> None:
        self.backoff.reset()

    async def close_retired(self) -> None:
        """Close the channels of certificates older than the previous one."""
        while len(self._retired) > 1:
            await self._retired.pop(0).close()

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        retired, self._retired = self._retired, []
        for old in retired:
            await old.close()
        if channel is not None:
            await channel.close()
