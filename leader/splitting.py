"""Leader role splitting: when the root saturates, and which nodes lead which groups.

EDDL measures a cluster's synchronisation capacity as ``BUC = n / t_sync``: ``n`` workers and
``t_sync`` the mean time of one parameter synchronisation (an update pushed and the next model
pulled) over a sliding window. The root is *saturated* when adding workers no longer raises BUC
(BUC at the larger worker count is less than ``1 + min_gain`` times the BUC last measured at a
smaller one), or when its own link stays above ``busy_high`` for ``busy_for`` seconds. Then
:class:`SplitPolicy` decides to *promote*: the number of groups doubles (0 → 2 → 4, up to
``max_groups``, at least ``min_group`` workers per group). When the link is held full and the
tasks outstanding (handed, their update not yet arrived) are at least ``surge`` times the
synchronisations it completed within the window, the demand is far beyond the link and one
promotion takes as many doublings as the workers synchronising or holding a task fill. It
*demotes* (the groups halve, 2 → 0 is the flat cluster again) with hysteresis: only once
the workers have fallen to ``demote_fraction`` of their count at the last promotion and the
link has stayed below ``busy_low`` for ``hold`` seconds, and never within ``hold`` seconds of
the last decision.

:func:`plan_groups` then picks the sub-leaders (leader candidates first, then workers started
with ``--can-lead``; the highest measured bandwidth first; a candidate not picked stays a
standby) and spreads the other workers over the groups so that every group holds about the
same training speed.

Pure and clock-free: every figure comes in with its time; every decision is a typed
:class:`SplitDecision` holding the figures behind it, for the leader to publish as an event.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Group",
    "GroupPlan",
    "NodeLink",
    "SplitConfig",
    "SplitDecision",
    "SplitFigures",
    "SplitPolicy",
    "plan_groups",
]

Action = Literal["promote", "demote", "stay"]


@dataclass(frozen=True)
class SplitConfig:
    window: float = 20.0  # seconds of synchronisations that make one BUC figure
    min_gain: float = 0.05  # BUC must rise by this share when workers are added
    busy_high: float = 0.85  # the root's link is saturated at or above this share ...
    busy_for: float = 10.0  # ... held for this long
    busy_low: float = 0.5  # demotion needs the link below this share ...
    hold: float = 60.0  # ... for this long, and this long since the last decision
    demote_fraction: float = 0.5  # ... and workers down to this share of the promotion's count
    max_groups: int = 4
    min_group: int = 2  # workers per group, the sub-leader not counted
    # A link held full with at least this many tasks outstanding per synchronisation it
    # completed in the window: one promotion takes every doubling the workers fill.
    surge: float = 4.0

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.busy_for >= 0 and self.hold >= 0):
            raise ValueError("window must be > 0, busy_for and hold >= 0")
        if not (self.min_gain >= 0 and 0 < self.busy_low < self.busy_high <= 1):
            raise ValueError("need min_gain >= 0 and 0 < busy_low < busy_high <= 1")
        if not 0 < self.demote_fraction < 1:
            raise ValueError("demote_fraction must be in (0, 1)")
        if self.max_groups < 2 or self.min_group < 1:
            raise ValueError("max_groups must be >= 2 and min_group >= 1")
        if not (math.isfinite(self.surge) and self.surge >= 1):
            raise ValueError("surge must be finite and >= 1")


@dataclass(frozen=True)
class SplitFigures:
    """What a decision was made on."""

    workers: int
    buc: float | None  # syncs·workers per second now
    previous_workers: int | None  # the smaller worker count BUC is compared with
    previous_buc: float | None
    link_busy: float | None  # the root link's share in use, latest
    groups: int
    # Workers synchronising in the window, finished or still under way (>= ``workers``, which
    # counts finished synchronisations only): what a promotion is judged on.
    synchronising: int = 0
    # Nodes holding a task the root handed whose update has not arrived (tasks outstanding),
    # and the synchronisations that finished within the window: how far demand outruns the
    # link (a full link's busy share stops at 100%).
    outstanding: int = 0
    served: int = 0


@dataclass(frozen=True)
class SplitDecision:
    action: Action
    groups: int  # the number of groups after the decision (0: flat)
    reason: str
    figures: SplitFigures
    at: float


class SplitPolicy:
    """Decides promotion and demotion from BUC and the root's link, with hysteresis."""

    def __init__(self, config: SplitConfig | None = None) -> None:
        self.config = config or SplitConfig()
        self.groups = 0
        self._syncs: deque[tuple[float, int, float]] = deque()  # (at, workers, seconds)
        self._link: deque[tuple[float, float]] = deque()
        self._buc_at: dict[int, float] = {}  # the latest BUC measured at each worker count
        self._last_decision = -math.inf
        self._workers_at_promotion = 0
        self._seen = 0  # workers synchronising in the window, finished or not (the meter's)
        self._outstanding = 0  # tasks handed whose update has not arrived (the meter's)

    # -- figures ---------------------------------------------------------------------------
    def observe_sync(self, at: float, workers: int, seconds: float) -> None:
        """One synchronisation took ``seconds`` with ``workers`` workers in the cluster."""
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"sync seconds must be finite and > 0, got {seconds!r}")
        self._syncs.append((at, workers, seconds))
        self._trim(at)

    def observe_link(self, at: float, utilisation: float) -> None:
        """The root's link was ``utilisation`` (0..1) busy over the last sampling period."""
        if not (math.isfinite(utilisation) and 0.0 <= utilisation <= 1.0):
            raise ValueError(f"utilisation must be in [0, 1], got {utilisation!r}")
        self._link.append((at, utilisation))
        self._trim(at)

    def observe_workers(self, workers: int, outstanding: int = 0) -> None:
        """``workers`` were synchronising within the window, their synchronisation finished or
        still under way: the count a promotion is judged on when too few finish for a BUC
        figure (a link so full that no update completes). ``outstanding`` nodes hold a task
        the root handed them and their update for it has not arrived."""
        for name, value in (("workers", workers), ("outstanding", outstanding)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self._seen = workers
        self._outstanding = outstanding

    def buc(self, now: float) -> tuple[int, float] | None:
        """``(n, n / t_sync)`` over the window, when every sync in it saw the same ``n``."""
        self._trim(now)
        if not self._syncs:
            return None
        counts = {w for _, w, _ in self._syncs}
        if len(counts) != 1:
            return None  # the worker count changed inside the window: no figure yet
        n = counts.pop()
        t_sync = sum(s for _, _, s in self._syncs) / len(self._syncs)
        return n, n / t_sync

    # -- decisions -------------------------------------------------------------------------
    def decide(self, now: float) -> SplitDecision:
        c = self.config
        measured = self.buc(now)
        if measured is not None:
            self._buc_at[measured[0]] = measured[1]
        figures = self._figures(now, measured)
        if now - self._last_decision < c.hold:
            return SplitDecision(
                "stay", self.groups, "too soon after the last decision", figures, now
            )
        busy = self._link_held(now, c.busy_for, lambda u: u >= c.busy_high)
        flat_buc = (
            figures.buc is not None
            and figures.previous_buc is not None
            and figures.buc < figures.previous_buc * (1 + c.min_gain)
        )
        if (busy or flat_buc) and self._can_promote(figures.synchronising):
            groups = max(2, 2 * self.groups)
            if flat_buc:
                reason = (
                    f"BUC {figures.buc:.1f}/s at {figures.workers} workers did not rise "
                    f"{c.min_gain:.0%} above {figures.previous_buc:.1f}/s at "
                    f"{figures.previous_workers}"
                )
            else:
                reason = f"root link >= {c.busy_high:.0%} busy for {c.busy_for:g} s"
                if figures.outstanding >= c.surge * max(1, figures.served):
                    # Nodes holding a task are workers too: those the plan does not know yet
                    # join the smallest group when they next ask for a task.
                    workers = max(figures.synchronising, figures.outstanding)
                    while self._fills(2 * groups, workers):
                        groups *= 2
                    reason += (
                        f", {figures.outstanding} tasks outstanding for {figures.served} "
                        f"synchronisations completed in {c.window:g} s (>= {c.surge:g}x): "
                        f"{groups} groups at once"
                    )
            self._workers_at_promotion = figures.synchronising
            return self._decide("promote", groups, reason, figures, now)
        quiet = self._link_held(now, c.hold, lambda u: u < c.busy_low) or not self._link
        few = figures.synchronising <= c.demote_fraction * self._workers_at_promotion
        if self.groups and few and quiet:
            groups = self.groups // 2 if self.groups > 2 else 0
            reason = (
                f"{figures.synchronising} workers <= {c.demote_fraction:.0%} of "
                f"{self._workers_at_promotion} at promotion, root link < {c.busy_low:.0%} busy"
            )
            return self._decide("demote", groups, reason, figures, now)
        reason = "not saturated"
        if figures.buc is not None and figures.previous_buc:
            gain = figures.buc / figures.previous_buc - 1
            reason += (
                f": BUC {figures.buc:.1f}/s at {figures.workers} workers, {gain:+.0%} over "
                f"{figures.previous_buc:.1f}/s at {figures.previous_workers}"
            )
        return SplitDecision("stay", self.groups, reason, figures, now)

    # -- internals -------------------------------------------------------------------------
    def _can_promote(self, workers: int) -> bool:
        return self._fills(max(2, 2 * self.groups), workers)

    def _fills(self, groups: int, workers: int) -> bool:
        """``workers`` fill ``groups``: each needs a sub-leader and min_group workers besides."""
        return groups <= self.config.max_groups and workers >= groups * (1 + self.config.min_group)

    def _decide(
        self, action: Action, groups: int, reason: str, figures: SplitFigures, now: float
    ) -> SplitDecision:
        self.groups = groups
        self._last_decision = now
        self._syncs.clear()  # BUC of the old topology says nothing about the new one
        self._buc_at.clear()
        return SplitDecision(action, groups, reason, figures, now)

    def _figures(self, now: float, measured: tuple[int, float] | None) -> SplitFigures:
        workers = measured[0] if measured else (self._syncs[-1][1] if self._syncs else 0)
        smaller = [n for n in self._buc_at if n < workers]
        prev = max(smaller) if smaller else None
        return SplitFigures(
            workers=workers,
            buc=None if measured is None else measured[1],
            previous_workers=prev,
            previous_buc=None if prev is None else self._buc_at[prev],
            link_busy=self._link[-1][1] if self._link else None,
            groups=self.groups,
            synchronising=max(workers, self._seen),
            outstanding=self._outstanding,
            served=len(self._syncs),
        )

    def _link_held(self, now: float, seconds: float, test: Callable[[float], bool]) -> bool:
        """The link passed ``test`` over all of the last ``seconds`` (a figure from before
        them says how they began)."""
        before = [u for at, u in self._link if at <= now - seconds]
        if not before:
            return False
        return test(before[-1]) and all(test(u) for at, u in self._link if at > now - seconds)

    def _trim(self, now: float) -> None:
        horizon = now - self.config.window
        while self._syncs and self._syncs[0][0] < horizon:
            self._syncs.popleft()
        keep = now - max(self.config.hold, self.config.busy_for, self.config.window)
        while len(self._link) > 1 and self._link[1][0] <= keep:
            self._link.popleft()


@dataclass(frozen=True)
class NodeLink:
    """A node as the root measured it."""

    node_id: str
    bandwidth: float  # bytes/s of its link to the root (the lower of up and down)
    speed: float  # samples/s
    candidate: bool = False  # a leader candidate
    can_lead: bool = False  # a worker started with --can-lead


@dataclass(frozen=True)
class Group:
    leader: str
    workers: tuple[str, ...]


@dataclass(frozen=True)
class GroupPlan:
    groups: tuple[Group, ...]
    root_workers: tuple[str, ...]  # workers that stay with the root (no group)


def plan_groups(nodes: list[NodeLink], groups: int, *, min_group: int = 2) -> GroupPlan:
    """Pick ``groups`` sub-leaders and share the other nodes among them by speed.

    A leader candidate (a standby sub-leader, which does not train) that is not picked stays
    with the root as a standby: it is no group's member. Fewer groups are formed when fewer
    nodes may lead or too few workers are left for ``min_group`` each; with none, everyone
    stays with the root.
    """
    if groups < 0 or min_group < 1:
        raise ValueError("groups must be >= 0 and min_group >= 1")
    if len({n.node_id for n in nodes}) != len(nodes):
        raise ValueError("node ids must be unique")
    eligible = sorted(
        (n for n in nodes if n.candidate or n.can_lead),
        key=lambda n: (not n.candidate, -n.bandwidth, n.node_id),
    )

    def members_of(leaders: list[NodeLink]) -> list[NodeLink]:
        chosen = {n.node_id for n in leaders}
        return [n for n in nodes if n.node_id not in chosen and not n.candidate]

    count = min(groups, len(eligible))
    while count and len(members_of(eligible[:count])) < count * min_group:
        count -= 1
    if count == 0:
        return GroupPlan((), tuple(sorted(n.node_id for n in nodes)))
    leaders = eligible[:count]
    rest = sorted(members_of(leaders), key=lambda n: (-n.speed, n.node_id))
    members: list[list[str]] = [[] for _ in leaders]
    load = [0.0 for _ in leaders]
    for node in rest:  # fastest first, each to the group with the least speed so far
        i = min(range(count), key=lambda g: (load[g], len(members[g]), g))
        members[i].append(node.node_id)
        load[i] += node.speed
    return GroupPlan(
        tuple(Group(lead.node_id, tuple(m)) for lead, m in zip(leaders, members, strict=True)),
        (),
    )
