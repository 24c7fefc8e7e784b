"""``--split auto``: the root regroups its nodes by itself, at the gRPC edge.

A server interceptor beside the :class:`~eddl.leader.syncmeter.SyncMeter`, holding the
:class:`~eddl.leader.groupdirector.GroupDirector` (its state, owned by the event loop; the
leader's own state is untouched):

* ``Join`` with ``NodeInfo.lead_address``: once the leader admitted it, the node offers to lead
  a group at that address. Over mTLS only a certificate of role ``subleader`` may offer, and
  a worker's certificate only for a ``--can-lead`` worker's group (``lead_worker``): the offer
  is then its sub-leader's, ``<worker>.lead``, pending until that sub-leader joins with a
  certificate of role subleader; any other worker's offer is ignored (logged).
* ``Heartbeat`` of a worker whose pending group the root promoted: the reply carries a
  single-use token of role ``subleader`` admitting ``<worker>.lead`` only
  (``HeartbeatReply.lead_token``), made at the first such beat: the worker enrols its
  sub-leader with it at the bootstrap port, as a sub-leader daemon does. The root makes no
  such token for a group it did not promote, and no worker is redirected to a pending one.
* ``GetTask`` of a worker assigned to a live group is answered with the ``not-leader``
  redirect (``FAILED_PRECONDITION``, ``eddl-leader-hint`` = its sub-leader's address): between
  two tasks, so the task it holds is finished and counted at the root first. The worker joins
  its sub-leader, and the root expires it like any node that left. A sub-leader's
  ``GetTask`` while it leads no group is answered the same way, with the root's own address:
  its members go home.
* Each ``Heartbeat`` or ``GetTask`` of a sub-leader marks it alive; one silent for
  ``patience`` seconds loses its group (``leader-lost``), whose workers come back to the root
  by themselves (the next address their sub-leader gave them) and are not sent to it again:
  a worker assigned to a group that joins the root by itself stays with the root.

:meth:`GroupEdge.decided` applies the split policy's promotions and demotions. Every change is
handed to ``on_regroup`` with the figures behind it (the daemon logs a ``regroup`` event); a
promotion that forms no new group (no further node offers to lead) changes nothing.

:meth:`GroupEdge.leads` tells the meter whose push may stand for several workers
(``TaskStats.workers``): a sub-leader whose offer the root admitted, promoted by the root
(``--split auto``) or given its members by hand (``--split advise``, ``acts=False``: offers
are recorded, nobody is redirected); never a worker, nor a ``--can-lead`` worker's pending
offer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from eddl.leader.config import LeaderConfig
from eddl.leader.groupdirector import GroupDirector, Regroup, lead_id
from eddl.leader.splitting import SplitDecision
from eddl.leader.syncmeter import SyncMeter
from eddl.log import get_logger
from eddl.net import RunningServer
from eddl.net.redirect import not_leader_metadata
from eddl.security import pki

__all__ = ["GroupEdge", "log_regroup", "split_edge"]

log = get_logger("leader.groups")

JOIN = "/eddl.v1.Cluster/Join"
HEARTBEAT = "/eddl.v1.Cluster/Heartbeat"
GET_TASK = "/eddl.v1.Cluster/GetTask"


class GroupEdge(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        director: GroupDirector,
        meter: SyncMeter,
        on_regroup: Callable[[Regroup], None],
        *,
        home: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        acts: bool = True,
        lead_tokens: Callable[[str], str] | None = None,
    ) -> None:
        self.director = director
        self.acts = acts  # False: offers are only recorded (--split advise)
        # mTLS: a single-use token of role subleader admitting only the node id given
        # (blocking: the token store is a file), for --can-lead workers the root promoted.
        self.lead_tokens = lead_tokens
        self.meter = meter
        self.on_regroup = on_regroup
        self.home = home  # the root's own address, for members sent home
        self.clock = clock

    def decided(self, decision: SplitDecision) -> Regroup:
        """Apply a promotion or demotion of the split policy."""
        change = self.director.apply(decision, self.meter.nodes(), self.clock())
        # The policy counts the groups formed, not asked for (fewer nodes may offer to lead).
        self.meter.policy.groups = len(change.groups)
        if change.changed:
            self.on_regroup(change)
        return change

    def leads(self, node_id: str) -> bool:
        """Whether ``node_id``'s push may stand for the members its group round folded: it is
        a sub-leader whose offer to lead the root admitted (over mTLS, a certificate of role
        subleader). One the root promoted has such an offer; so has one started with its
        members by hand (``--split advise``), and one just demoted or regrouped that still
        folds its members' updates (counting it as one would itself call for a demotion)."""
        offer = self.director.offers.get(node_id)
        return offer is not None and not offer.pending

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = str(details.method)
        if handler is None or handler.unary_unary is None:
            return handler
        if method == JOIN:
            return handler._replace(unary_unary=self._join(handler.unary_unary))
        if method in (HEARTBEAT, GET_TASK) and self.acts:
            return handler._replace(unary_unary=self._redirect(method, handler.unary_unary))
        return handler

    def _join(self, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reply = await inner(request, context)
            self.director.returned(str(request.envelope.node_id))
            address = str(request.info.lead_address)
            if address:
                node = str(request.envelope.node_id)
                role = _role(context)
                worker = bool(request.info.lead_worker)
                owner = ""
                if role == "worker" and worker and self.lead_tokens is not None:
                    node, owner = lead_id(node), node  # its sub-leader, not enrolled yet
                elif role not in (None, "subleader"):
                    log.warning("lead offer ignored", node=node[:128], role=role)
                    return reply
                try:
                    self.director.offer(node, address, self.clock(), worker=worker, owner=owner)
                except ValueError as exc:
                    log.warning("lead offer refused", node=node[:128], error=str(exc))
                else:
                    log.info("lead offered", node=node, address=address)
            return reply

        return behaviour

    def _redirect(
        self, method: str, inner: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            now = self.clock()
            node = str(request.envelope.node_id)
            director = self.director
            director.seen(node, now)
            lost = director.lost(now)
            if lost is not None:
                self.on_regroup(lost)
            target = None
            if method == GET_TASK:
                placed = director.place(node, now)
                if placed is not None:
                    log.info(
                        "worker placed",
                        node=node,
                        sub_leader=placed.leader,
                        members=len(placed.workers),
                        groups={g.leader: len(g.workers) for g in director.groups},
                    )
                target = director.redirect(node, now)
                if target is None and director.demoted(node):
                    target = self.home() or None
            if target is not None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"this node's leader is {target}",
                    trailing_metadata=not_leader_metadata(target),
                )
            reply = await inner(request, context)
            if method == HEARTBEAT:
                await self._hand_lead_token(node, reply)
            return reply

        return behaviour

    async def _hand_lead_token(self, node: str, reply: Any) -> None:
        """A promoted --can-lead worker's beat: the token for its sub-leader's certificate."""
        offer = self.director.promoted_owner(node)
        if offer is None or self.lead_tokens is None:
            return
        if not offer.token:
            offer.token = await asyncio.to_thread(self.lead_tokens, offer.node_id)
            log.info("lead token made", node=node, sub_leader=offer.node_id)
        reply.lead_token = offer.token


def log_regroup(change: Regroup) -> None:
    """The ``regroup`` event: the groups formed, and the figures of every node behind them."""
    log.info(
        "regroup",
        cause=change.cause,
        reason=change.reason,
        groups={g.leader: list(g.workers) for g in change.groups},
        nodes={
            n.node_id: {
                "bytes_per_s": round(n.bandwidth, 1),
                "samples_per_s": round(n.speed, 1),
                "can_lead": n.candidate or n.can_lead,
                "lead_worker": n.can_lead,
            }
            for n in change.nodes
        },
    )


def split_edge(
    config: LeaderConfig,
    meter: SyncMeter,
    server: Callable[[], RunningServer | None],
    lead_tokens: Callable[[str], str] | None = None,
) -> GroupEdge:
    """The group edge of a root daemon, which also tells ``meter`` whose push may stand for
    several workers. ``--split auto`` regroups; ``advise`` only records the lead offers. A
    sub-leader is lost after the same silence that expires a node at the root."""
    director = GroupDirector(patience=config.patience * config.heartbeat_interval_s * 1.5)

    def home() -> str:
        running = server()
        return config.advertise or (running.address if running is not None else "")

    edge = GroupEdge(
        director,
        meter,
        log_regroup,
        home=home,
        acts=config.split == "auto",
        lead_tokens=lead_tokens,
    )
    meter.leads = edge.leads
    return edge


def _role(context: grpc.aio.ServicerContext) -> str | None:
    """The role of the caller's certificate; ``None`` without one (the loopback mode)."""
    pems = (context.auth_context() or {}).get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        return pki.cert_info(pki.load_cert(bytes(pems[0]))).role
    except (pki.PkiError, ValueError):
        return "unknown"
