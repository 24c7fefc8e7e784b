"""The root's groups: which sub-leaders lead, and which workers each one leads.

A sub-leader daemon that joins the root offers to lead (its ``NodeInfo.lead_address``, the
address its members dial); until promoted it stands by with no members. When the
:class:`~eddl.leader.splitting.SplitPolicy` decides to promote or demote,
:meth:`GroupDirector.apply` plans the groups with :func:`~eddl.leader.splitting.plan_groups`
(offering nodes only: sub-leader daemons first, then ``--can-lead`` workers' groups, the
highest measured bandwidth first; workers spread by speed)
and keeps the plan: a worker assigned to a group is redirected there on its next call
(:meth:`redirect`), a sub-leader that leads no group any more is sent its members home
(:meth:`demoted`). A worker the plan does not know (it joined, or first synchronised, after
the groups were formed) joins the live group with the fewest members (:meth:`place`): a root
that split because its link was saturated does not take late workers back onto it. A
sub-leader silent for longer than ``patience`` seconds leads nothing: its workers are no
longer redirected to it (they come back to the root by themselves, the next address their
sub-leader gave them, and stay there until the next plan) and the plan drops it.

Pure and clock-free: every call takes the time; every change is a typed :class:`Regroup`
holding the figures behind it, for the daemon to publish as an event.
"""

from __future__ import annotations

from dataclasses import dataclass

from eddl.leader.splitting import Group, NodeLink, SplitDecision, plan_groups

__all__ = ["MAX_OFFERS", "GroupDirector", "Offer", "Regroup", "lead_id"]

MAX_OFFERS = 256
MAX_ADDRESS = 256


def lead_id(worker: str) -> str:
    """The node id of a ``--can-lead`` worker's sub-leader."""
    return f"{worker}.lead"


@dataclass
class Offer:
    node_id: str
    address: str
    last_seen: float
    worker: bool = False  # a --can-lead worker's group (planned after the sub-leader daemons)
    # Over mTLS a --can-lead worker offers its group itself, before its sub-leader exists (it
    # has no certificate of role subleader until promoted): ``owner`` is that worker, and
    # the offer is pending until the sub-leader ``node_id`` joins with its certificate.
    owner: str = ""
    token: str = ""  # the token the root made for ``owner`` once it promoted the group

    @property
    def pending(self) -> bool:
        return bool(self.owner)


@dataclass(frozen=True)
class Regroup:
    """A change of groups, and why."""

    cause: str  # "promote", "demote" or "leader-lost"
    groups: tuple[Group, ...]
    reason: str
    nodes: tuple[NodeLink, ...]  # the measured nodes the plan was made from
    at: float
    changed: bool = True  # False: the groups stay as they were


class GroupDirector:
    def __init__(self, *, patience: float, min_group: int = 2) -> None:
        if not patience > 0:
            raise ValueError("patience must be > 0 seconds")
        self.patience = patience
        self.min_group = min_group
        self.offers: dict[str, Offer] = {}
        self.groups: tuple[Group, ...] = ()
        self._leader_of: dict[str, str] = {}  # worker -> its sub-leader's node id
        # Workers back at the root by themselves (their sub-leader failed them, or was lost):
        # not placed in a group again until the next plan.
        self._stay: set[str] = set()

    # -- what the root sees --------------------------------------------------------------
    def offer(
        self, node_id: str, address: str, now: float, *, worker: bool = False, owner: str = ""
    ) -> None:
        """``node_id`` joined and can lead a group at ``address`` (bounded, else ignored);
        ``worker``: it is the group of a worker started with ``--can-lead``; ``owner``: that
        worker made the offer for its sub-leader ``node_id``, which has not joined yet (a
        sub-leader that joined is not turned back into a pending offer)."""
        if not node_id or not address or len(address) > MAX_ADDRESS or len(node_id) > 128:
            raise ValueError("a lead offer needs a node id and an address of 1..256 characters")
        if node_id not in self.offers and len(self.offers) >= MAX_OFFERS:
            raise ValueError(f"at most {MAX_OFFERS} nodes may offer to lead")
        known = self.offers.get(node_id)
        if owner and known is not None and not known.pending:
            known.last_seen = now
            return
        self.offers[node_id] = Offer(node_id, address, now, worker, owner)

    def seen(self, node_id: str, now: float) -> None:
        """``node_id`` called: it, or the pending offer it made for its sub-leader, lives."""
        for offer in (self.offers.get(node_id), self.offers.get(lead_id(node_id))):
            if offer is not None and (offer.node_id == node_id or offer.owner == node_id):
                offer.last_seen = now

    def promoted_owner(self, node_id: str) -> Offer | None:
        """The pending offer ``node_id`` made, when the root promoted it: its sub-leader
        needs a certificate of role subleader (the root hands the owner a token for it)."""
        offer = self.offers.get(lead_id(node_id))
        if offer is None or offer.owner != node_id or not self.leads(offer.node_id):
            return None
        return offer

    def alive(self, node_id: str, now: float) -> bool:
        offer = self.offers.get(node_id)
        return offer is not None and now - offer.last_seen <= self.patience

    # -- decisions ------------------------------------------------------------------------
    def apply(self, decision: SplitDecision, nodes: list[NodeLink], now: float) -> Regroup:
        """Form ``decision.groups`` groups from ``nodes`` (0: everyone back to the root)."""
        offering = {n for n in self.offers if self.alive(n, now)}
        daemons = {n for n in offering if not self.offers[n].worker}
        linked = [
            NodeLink(
                n.node_id,
                n.bandwidth,
                n.speed,
                candidate=n.node_id in daemons,
                can_lead=n.node_id in offering - daemons,
            )
            for n in nodes
        ]
        known = {n.node_id for n in linked}
        # A standby sub-leader has not synchronised yet: it enters with no measured figures.
        linked += [
            NodeLink(n, 0.0, 0.0, candidate=n in daemons, can_lead=n not in daemons)
            for n in sorted(offering - known)
        ]
        groups: tuple[Group, ...] = ()
        if decision.groups > 0:
            groups = plan_groups(linked, decision.groups, min_group=self.min_group).groups
        reason = decision.reason
        if groups and {g.leader for g in groups} == {g.leader for g in self.groups}:
            # No other node offers to lead: the groups stay as they are (no reshuffle).
            groups = self.groups
            reason += f"; no further sub-leader offers, {len(groups)} groups kept"
        changed = groups != self.groups
        self._stay.clear()
        self._set(groups)
        return Regroup(decision.action, self.groups, reason, tuple(linked), now, changed)

    def lost(self, now: float) -> Regroup | None:
        """Drop the groups whose sub-leader fell silent; ``None`` when all are alive."""
        kept = tuple(g for g in self.groups if self.alive(g.leader, now))
        if len(kept) == len(self.groups):
            return None
        gone = sorted({g.leader for g in self.groups} - {g.leader for g in kept})
        self._stay.update(w for g in self.groups if g not in kept for w in g.workers)
        self._set(kept)
        for node in gone:
            del self.offers[node]
        return Regroup("leader-lost", kept, f"sub-leader {', '.join(gone)} fell silent", (), now)

    def returned(self, node_id: str) -> None:
        """``node_id`` joined the root again by itself: its sub-leader failed it, so it is
        not sent back there (it stays with the root until the next regroup)."""
        if self._leader_of.pop(node_id, None) is not None:
            self._stay.add(node_id)

    def place(self, node_id: str, now: float) -> Group | None:
        """Put a worker the plan does not know in the live group with the fewest members; that
        group, or ``None`` when it stays with the root: no group lives, it is in a group or
        came back from one by itself, or it is (or owns) a sub-leader."""
        if (
            not self.groups
            or node_id in self._leader_of
            or node_id in self._stay
            or node_id in self.offers
            or lead_id(node_id) in self.offers
        ):
            return None
        open_groups = [
            g
            for g in self.groups
            if self.alive(g.leader, now) and not self.offers[g.leader].pending
        ]
        if not open_groups:
            return None
        target = min(open_groups, key=lambda g: (len(g.workers), g.leader))
        placed = Group(target.leader, (*target.workers, node_id))
        self.groups = tuple(placed if g is target else g for g in self.groups)
        self._leader_of[node_id] = target.leader
        return placed

    # -- what the root answers ------------------------------------------------------------
    def redirect(self, node_id: str, now: float) -> str | None:
        """The address ``node_id`` must go to: its group's sub-leader, while that one lives."""
        if self.promoted_owner(node_id) is not None:
            return None  # it stays with the root until it holds its own group's token
        leader = self._leader_of.get(node_id)
        if leader is None or not self.alive(leader, now) or self.offers[leader].pending:
            return None  # a pending sub-leader serves nobody yet: the worker stays for now
        return self.offers[leader].address

    def leads(self, node_id: str) -> bool:
        """``node_id`` leads one of the groups now (the root promoted it)."""
        return any(g.leader == node_id for g in self.groups)

    def demoted(self, node_id: str) -> bool:
        """``node_id`` offered to lead but leads no group now: its members go home."""
        return node_id in self.offers and not self.leads(node_id)

    def _set(self, groups: tuple[Group, ...]) -> None:
        self.groups = groups
        self._leader_of = {w: g.leader for g in groups for w in g.workers}
