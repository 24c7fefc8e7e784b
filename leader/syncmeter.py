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
give the link's busy share once per ``period``. Bytes out are counted as each message is
serialised. An update's bytes in are counted as declared once the leader reads on past the
header of an update for the task its last ``GetTask`` handed that node (so authorization
passed), before they have crossed the link, and the node counts as synchronising from then;
when the stream ends the count is settled to the bytes that arrived. So on a link so full
that no update completes, the meter still sees the link busy and the workers trying. A node
a ``GetTask`` handed a task holds it until its update for that task has been read (a task
*outstanding*; forgotten after the policy's ``hold`` or ``window``, the longer, when no update
comes): the outstanding tasks against the synchronisations that finished in the window say
how far demand outruns the link. Both go to a
:class:`~eddl.leader.splitting.SplitPolicy`, asked for a decision at most once per ``period``,
as metered calls and heartbeats begin and end;
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
from eddl.profiler.interface import InterfaceCounter

__all__ = ["PULL_METHOD", "PUSH_METHOD", "SyncMeter", "SyncTotals"]

PUSH_METHOD = "/eddl.v1.Cluster/PushUpdate"
PULL_METHOD = "/eddl.v1.Cluster/PullModel"
TASK_METHOD = "/eddl.v1.Cluster/GetTask"
HEARTBEAT_METHOD = "/eddl.v1.Cluster/Heartbeat"
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
        interface: InterfaceCounter | None = None,
    ) -> None:
        if capacity_bytes_per_s is not None and not capacity_bytes_per_s > 0:
            raise ValueError("the link capacity must be > 0 bytes/s")
        if not period > 0:
            raise ValueError("period must be > 0")
        self.policy = policy
        self.on_decision = on_decision
        self.capacity = capacity_bytes_per_s
        if interface is not None and capacity_bytes_per_s is None:
            raise ValueError("an interface's counters need the link's capacity")
        # The link's own byte counters, when the interface carrying it is named: every byte
        # as it crosses, where the gRPC edge counts a message once it has arrived whole.
        self.interface = interface
        self._reading = interface.read() if interface is not None else None
        self.period = period
        self.clock = clock
        # Whether a node's push may stand for several workers: a sub-leader of this root
        # (the daemon sets it from its group edge); by default no node may.
        self.leads: Callable[[str], bool] = _nobody
        self._pulled: dict[str, float] = {}  # node -> seconds of its last pull
        self._handed: dict[str, str] = {}  # node -> the task its last GetTask was handed
        self._pushed: OrderedDict[str, float] = OrderedDict()  # node -> when it last pushed
        self._links: dict[str, NodeLink] = {}  # node -> its last synchronisation's figures
        # node -> the workers its last push stood for (a sub-leader: the members its group
        # round folded), so forming groups does not shrink the count (and call for a
        # demotion) by itself, and members that leave a group lower it.
        self._behind: dict[str, int] = {}
        # node -> when GetTask handed it the task it holds, until its update for that task has
        # been read (oldest first): the tasks outstanding.
        self._holding: OrderedDict[str, float] = OrderedDict()
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
                unary_unary=self._task(handler.unary_unary),
                response_serializer=counting_serializer(handler.response_serializer, self._count),
            )
        if method == HEARTBEAT_METHOD and handler.unary_unary is not None:
            # Every live node beats: the link's figure and the decisions go on while no
            # synchronisation begins or ends.
            return handler._replace(unary_unary=self._beat(handler.unary_unary))
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
            self._tick(started)
            async for message in inner(request, context):
                yield message
            node = str(request.envelope.node_id)[:128]
            if node in self._pulled or len(self._pulled) < MAX_NODES:
                self._pulled[node] = self.clock() - started

        return behaviour

    def _beat(
        self, inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._tick(self.clock())
            return await inner(request, context)

        return behaviour

    def _task(
        self, inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._tick(self.clock())
            reply = await inner(request, context)
            if reply.WhichOneof("outcome") == "task":
                node = str(request.envelope.node_id)[:128]
                if node in self._handed or len(self._handed) < MAX_NODES:
                    self._handed[node] = str(reply.task.task_id)[:128]
                if node in self._holding or len(self._holding) < MAX_NODES:
                    self._holding[node] = self.clock()
                    self._holding.move_to_end(node)
            return reply

        return behaviour

    def _push(
        self, inner: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[Any]]:
        async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            started = self.clock()
            # The node its header names, the stream's bytes (the header's own, plus the tensor
            # bytes it declares: the reassembler refuses a stream that carries other than
            # that) and the speed it reports.
            seen: dict[str, Any] = {
                "node": "",
                "bytes": 0,
                "speed": 0.0,
                "workers": 1,
                "handed": False,
            }

            async def noted() -> AsyncIterator[Any]:
                async for message in requests:
                    task = ""
                    if not seen["node"] and message.WhichOneof("body") == "header":
                        header = message.header
                        seen["node"] = str(header.envelope.node_id)[:128]
                        seen["bytes"] = message.ByteSize() + header.total_bytes
                        stats = header.stats
                        seen["workers"] = self._declared(seen["node"], int(stats.workers))
                        if stats.seconds > 0 and math.isfinite(stats.seconds):
                            seen["speed"] = min(1e9, max(0.0, stats.samples / stats.seconds))
                        task = "" if header.failure else str(header.task_id)
                    yield message
                    node = str(seen["node"])
                    if task and self._handed.get(node) == task:
                        # The leader reads on past the header of an update for the task it
                        # handed this node: authorization passed (a refused caller's stream
                        # is not read on), so the node counts as synchronising from now,
                        # before its update has crossed the link.
                        del self._handed[node]
                        seen["handed"] = True
                        self._began(node, int(seen["workers"]), float(seen["speed"]))

            try:
                reply = await inner(noted(), context)
            finally:
                if seen["handed"]:  # its update for the task it was handed has been read
                    self._holding.pop(str(seen["node"]), None)
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

    def _began(self, node: str, workers: int, speed: float) -> None:
        """``node``'s update is on its way: the node counts as synchronising (``workers`` of
        them, for a sub-leader) before its update arrives. One with no finished
        synchronisation enters the plan with its reported speed and no measured bandwidth."""
        now = self.clock()
        if node in self._pushed or len(self._pushed) < MAX_NODES:
            self._note(node, now, workers)
            if node not in self._links and len(self._links) < MAX_NODES:
                self._links[node] = NodeLink(node, 0.0, speed)
        self._tick(now)

    def _note(self, node: str, now: float, workers: int) -> None:
        """``node`` synchronised (or began to) at ``now``; nodes outside the window leave."""
        self._pushed[node] = now
        self._behind[node] = workers
        self._pushed.move_to_end(node)  # oldest push first: the trim is amortised O(1)
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.policy.config.window
        while self._pushed:
            old, at = next(iter(self._pushed.items()))
            if at >= horizon:
                break
            del self._pushed[old]
            self._links.pop(old, None)
            self._behind.pop(old, None)

    def _forget(self, now: float) -> None:
        """Tasks handed longer ago than the policy's hold or window (the longer) are no longer
        counted outstanding: their node left without an update, or is that slow."""
        config = self.policy.config
        horizon = now - max(config.hold, config.window)
        while self._holding:
            node, at = next(iter(self._holding.items()))
            if at >= horizon:
                break
            del self._holding[node]

    def _synced(self, node: str, seconds: float, now: float, workers: int = 1) -> None:
        self._note(node, now, workers)
        if seconds > 0:
            self._syncs += 1
            self._sync_seconds += seconds
            self.policy.observe_sync(now, self._workers(), seconds)
        self._tick(now)

    def _share(self, elapsed: float, capacity: float) -> float:
        """The link's busy share over the last ``elapsed`` seconds: from the interface's
        counters, its busier direction (each carries ``capacity``); without them (or while
        the interface is gone), the metered calls' bytes, both directions together."""
        if self.interface is not None:
            last, self._reading = self._reading, self.interface.read()
            if last is not None and self._reading is not None:
                received = self._reading.received - last.received
                sent = self._reading.sent - last.sent
                return max(0, received, sent) / (elapsed * capacity)
        return self._bytes / (elapsed * capacity)

    def _tick(self, now: float) -> None:
        """At most once per ``period``: the bytes counted since the last figure become the
        link's busy share, and the policy is asked for a decision. Called as metered calls
        begin and end, so a link too full for any synchronisation to finish is seen too."""
        if now - self._since >= self.period:
            if self.capacity is not None:
                share = self._share(now - self._since, self.capacity)
                self.policy.observe_link(now, min(1.0, share))
            self._bytes, self._since = 0, now
        if now - self._decided >= self.period:
            self._decided = now
            self._trim(now)
            self._forget(now)
            self.policy.observe_workers(
                self._workers() if self._pushed else 0, outstanding=len(self._holding)
            )
            decision = self.policy.decide(now)
            if decision.action != "stay":
                self.on_decision(decision)
