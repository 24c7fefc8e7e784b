"""The root's synchronisation meter: BUC and its link's busy share, measured at the gRPC edge.

A server interceptor, so it needs nothing from the servicers or the core: each node's
synchronisation is its ``PullModel`` (when it pulled) plus its ``PushUpdate``, timed around
their handlers, ``t_sync`` their sum; ``n`` is the number of workers that pushed an update
within the policy's window (a sub-leader's push counts as the members whose updates it folds,
``TaskStats.workers`` of its update, at most :data:`MAX_BEHIND`; honoured only from a node
:attr:`SyncMeter.leads` names, a sub-leader of this root: from any other node the declared
figure is ignored, logged, and the push counts as one worker). Bytes in
and out of those two calls and of ``GetTask`` (whose reply can carry the task's model inline,
in place of a pull), over the configured link capacity,
give the link's busy share once per ``period``. Both go to a
:class:`~eddl.leader.splitting.SplitPolicy`, asked for a decision at most once per ``period``;
a promotion or a demotion is handed to ``on_decision`` (the daemon logs it as a
``split_decision`` event with its figures; with ``--split auto`` the root also regroups,
:mod:`eddl.leader.groupedge`). Each node's last synchronisation gives its figures for the
plan (:meth:`SyncMeter.nodes`): bytes/s over it, and the training speed its update reported.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from eddl.leader.splitting import NodeLink, SplitDecision, SplitPolicy
from eddl.log import get_logger
from eddl.net.handlers import counting_deserializer, counting_serializer

__all__ = ["PULL_METHOD", "PUSH_METHOD", "SyncMeter", "SyncTotals"]

PUSH_METHOD = "/eddl.v1.Cluster/PushUpdate"
PULL_METHOD = "/eddl.v1.Cluster/PullModel"
TASK_METHOD = "/eddl.v1.Cluster/GetTask"
MAX_NODES = 65536  # pull times kept for at most this many nodes
MAX_BEHIND = 256  # the most workers one push may stand for (a sub-leader's group bound)

log = get_logger("leader.split")


def _nobody(node_id: str) -> bool:
    return False


@dataclass(frozen=True)
class SyncTotals:
    """The meter's running figures for a metrics scrape: timed synchronisations and their
    seconds since the start (BUC over a scrape interval is ``workers`` over the mean of the
    new ones), and the workers counted in the window now."""

    syncs: int
    seconds: float
    workers: int


class SyncMeter(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        policy: SplitPolicy,
        on_decision: Callable[[SplitDecision], None],
        *,
        capacity_bytes_per_s: float | None = None,
        period: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity_bytes_per_s is not None and not capacity_bytes_per_s > 0:
            raise ValueError("the link capacity must be > 0 bytes/s")
        if not period > 0:
            raise ValueError("period must be > 0")
        self.policy = policy
        self.on_decision = on_decision
        self.capacity = capacity_bytes_per_s
        self.period = period
        self.clock = clock
        # Whether a node's push may stand for several workers: a sub-leader of this root
        # (the daemon sets it from its group edge); by default no node may.
        self.leads: Callable[[str], bool] = _nobody
        self._pulled: dict[str, float] = {}  # node -> seconds of its last pull
        self._pushed: OrderedDict[str, float] = OrderedDict()  # node -> when it last pushed
        self._links: dict[str, NodeLink] = {}  # node -> its last synchronisation's figures
        # node -> the workers its last push stood for (a sub-leader: the members its group
        # round folded), so forming groups does not shrink the count (and call for a
        # demotion) by itself, and members that leave a group lower it.
        self._behind: dict[str, int] = {}
        self._bytes = 0
        self._syncs = 0  # timed synchronisations since the start, and their seconds
        self._sync_seconds = 0.0
        self._since = clock()
        self._decided = clock()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = str(details.method)
        if method == PUSH_METHOD and handler.stream_unary is not None:
            return handler._replace(
                stream_unary=self._push(handler.stream_unary),
                request_deserializer=counting_deserializer(
                    handler.request_deserializer, self._count
                ),
            )
        if method == TASK_METHOD and handler.unary_unary is not None:
            # A task's reply can carry its model inline (no PullModel): its bytes load the link.
            return handler._replace(
                response_serializer=counting_serializer(handler.response_serializer, self._count)
            )
        if method == PULL_METHOD and handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._pull(handler.unary_stream),
                response_serializer=counting_serializer(handler.response_serializer, self._count),
            )
        return handler

    @property
    def link_bytes(self) -> int:
        """Bytes the metered calls moved since the link's last busy-share figure."""
        return self._bytes

    def _count(self, nbytes: int) -> None:
        self._bytes += nbytes

    # -- the two calls of a synchronisation -------------------------------------------------
    def _pull(
        self, inner: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = self.clock()
            async for message in inner(request, context):
                yield message
            node = str(request.envelope.node_id)[:128]
            if node in self._pulled or len(self._pulled) < MAX_NODES:
                self._pulled[node] = self.clock() - started

        return behaviour

    def _push(
        self, inner: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]:
        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            started = self.clock()
            # The node its header names, the stream's bytes (the header's own, plus the tensor
            # bytes it declares: the reassembler refuses a stream that carries other than
            # that) and the speed it reports.
            seen: dict[str, Any] = {"node": "", "bytes": 0, "speed": 0.0, "workers": 1}

            async def noted() -> AsyncIterator[Any]:
                async for message in requests:
                    if not seen["node"] and message.WhichOneof("body") == "header":
                        header = message.header
                        seen["node"] = str(header.envelope.node_id)[:128]
                        seen["bytes"] = message.ByteSize() + header.total_bytes
                        stats = header.stats
                        seen["workers"] = self._declared(seen["node"], int(stats.workers))
                        if stats.seconds > 0 and math.isfinite(stats.seconds):
                            seen["speed"] = min(1e9, max(0.0, stats.samples / stats.seconds))
                    yield message

            reply = await inner(noted(), context)
            outcome = str(getattr(reply, "outcome", ""))
            node = str(seen["node"])
            if node and outcome not in ("requeued", "job-failed"):
                now = self.clock()
                seconds = now - started + self._pulled.pop(node, 0.0)
                self._synced(node, seconds, now, int(seen["workers"]))
                if seconds > 0 and (node in self._links or len(self._links) < MAX_NODES):
                    rate = int(seen["bytes"]) / seconds
                    self._links[node] = NodeLink(node, rate, float(seen["speed"]))
            return reply

        return behaviour

    def _declared(self, node: str, workers: int) -> int:
        """The workers a push stands for: what it declares, from a sub-leader of this root;
        one from any other node (its declaration is logged and changes nothing)."""
        if workers <= 1:
            return 1
        if not self.leads(node):
            log.warning(
                "declared workers ignored",
                node=node,
                workers=workers,
                reason="only a sub-leader of this root may push for several workers",
            )
            return 1
        return min(MAX_BEHIND, workers)

    # -- figures and decisions --------------------------------------------------------------
    def nodes(self) -> list[NodeLink]:
        """The nodes that synchronised within the window: bytes/s of their last
        synchronisation, and the training speed (samples/s) their last update reported."""
        return [self._links[n] for n in sorted(self._pushed) if n in self._links]

    def totals(self) -> SyncTotals:
        """The running figures (:class:`SyncTotals`) as of the last synchronisation."""
        workers = self._workers() if self._pushed else 0
        return SyncTotals(self._syncs, self._sync_seconds, workers)

    def _workers(self) -> int:
        """Workers that synchronised within the window, a sub-leader counted as its group."""
        return max(1, sum(self._behind.get(node, 1) for node in self._pushed))

    def _synced(self, node: str, seconds: float, now: float, workers: int = 1) -> None:
        self._pushed[node] = now
        self._behind[node] = workers
        self._pushed.move_to_end(node)  # oldest push first: the trim below is amortised O(1)
        horizon = now - self.policy.config.window
        while self._pushed:
            old, at = next(iter(self._pushed.items()))
            if at >= horizon:
                break
            del self._pushed[old]
            self._links.pop(old, None)
            self._behind.pop(old, None)
        if seconds > 0:
            self._syncs += 1
            self._sync_seconds += seconds
            self.policy.observe_sync(now, self._workers(), seconds)
        if now - self._since >= self.period:
            if self.capacity is not None:
                share = self._bytes / ((now - self._since) * self.capacity)
                self.policy.observe_link(now, min(1.0, share))
            self._bytes, self._since = 0, now
        if now - self._decided >= self.period:
            self._decided = now
            decision = self.policy.decide(now)
            if decision.action != "stay":
                self.on_decision(decision)
