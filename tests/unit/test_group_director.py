"""The root's groups on a simulated clock: promotion to the offering sub-leaders, redirects,
merge back with hysteresis, and a silent sub-leader's group dropped."""

from __future__ import annotations

import pytest

from eddl.leader.groupdirector import MAX_OFFERS, GroupDirector
from eddl.leader.splitting import NodeLink, SplitConfig, SplitPolicy

WORKERS = [NodeLink(f"w{i:02d}", 1e6 + i, float(10 + i)) for i in range(12)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def busy_root(policy: SplitPolicy, clock: Clock, workers: int, busy: float, seconds: int) -> None:
    for _ in range(seconds):
        at = clock.advance(1.0)
        policy.observe_sync(at, workers, 0.05)
        policy.observe_link(at, busy)


def promoted(clock: Clock) -> tuple[SplitPolicy, GroupDirector]:
    policy = SplitPolicy(SplitConfig(window=5, busy_for=3, hold=10))
    director = GroupDirector(patience=1.5)
    director.offer("sub-a", "127.0.0.1:7001", clock.now)
    director.offer("sub-b", "127.0.0.1:7002", clock.now)
    busy_root(policy, clock, 12, 1.0, 5)
    decision = policy.decide(clock.now)
    assert decision.action == "promote"
    for sub in ("sub-a", "sub-b"):
        director.seen(sub, clock.now)
    change = director.apply(decision, WORKERS, clock.now)
    assert change.cause == "promote" and "busy" in change.reason
    return policy, director


def test_a_saturated_root_promotes_the_offering_sub_leaders_and_redirects_every_worker() -> None:
    clock = Clock()
    _, director = promoted(clock)
    assert sorted(g.leader for g in director.groups) == ["sub-a", "sub-b"]
    members = [w for g in director.groups for w in g.workers]
    assert sorted(members) == [w.node_id for w in WORKERS]
    # Spread by speed: the two groups' speeds differ by at most one worker's.
    speed = {w.node_id: w.speed for w in WORKERS}
    a, b = (sum(speed[w] for w in g.workers) for g in director.groups)
    assert abs(a - b) <= max(speed.values())
    address = {"sub-a": "127.0.0.1:7001", "sub-b": "127.0.0.1:7002"}
    for g in director.groups:
        for w in g.workers:
            assert director.redirect(w, clock.now) == address[g.leader]
    assert director.redirect("sub-a", clock.now) is None
    assert not director.demoted("sub-a") and not director.demoted("sub-b")


def test_no_offer_no_group_and_workers_stay_with_the_root() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=3, hold=10))
    director = GroupDirector(patience=1.5)
    busy_root(policy, clock, 12, 1.0, 5)
    change = director.apply(policy.decide(clock.now), WORKERS, clock.now)
    assert change.groups == () and director.redirect("w00", clock.now) is None


def test_groups_merge_back_only_after_the_hold_with_fewer_workers_and_a_quiet_link() -> None:
    clock = Clock()
    policy, director = promoted(clock)
    # Fewer workers and a quiet link, but within the hold: the groups stay.
    for _ in range(8):
        at = clock.advance(1.0)
        policy.observe_sync(at, 2, 0.05)
        policy.observe_link(at, 0.1)
        director.seen("sub-a", at)
        director.seen("sub-b", at)
        assert policy.decide(at).action == "stay"
    assert len(director.groups) == 2
    for _ in range(12):
        at = clock.advance(1.0)
        policy.observe_sync(at, 2, 0.05)
        policy.observe_link(at, 0.1)
        decision = policy.decide(at)
        if decision.action != "stay":
            break
    assert decision.action == "demote" and decision.groups == 0
    change = director.apply(decision, [], clock.now)
    assert change.cause == "demote" and change.groups == ()
    assert director.redirect("w00", clock.now) is None
    assert director.demoted("sub-a") and director.demoted("sub-b")  # members go home


def test_a_silent_sub_leader_loses_its_group_and_its_workers_stay_home() -> None:
    clock = Clock()
    _, director = promoted(clock)
    lost_group = next(g for g in director.groups if g.leader == "sub-a")
    kept_group = next(g for g in director.groups if g.leader == "sub-b")
    clock.advance(1.0)
    director.seen("sub-b", clock.now)
    assert director.lost(clock.now) is None  # 1 s of silence: within patience
    clock.advance(1.0)
    director.seen("sub-b", clock.now)
    change = director.lost(clock.now)
    assert change is not None and change.cause == "leader-lost" and "sub-a" in change.reason
    assert [g.leader for g in change.groups] == ["sub-b"]
    for w in lost_group.workers:
        assert director.redirect(w, clock.now) is None
    for w in kept_group.workers:
        assert director.redirect(w, clock.now) == "127.0.0.1:7002"
    assert "sub-a" not in director.offers
    assert director.lost(clock.now) is None


def test_a_redirect_stops_as_soon_as_the_sub_leader_is_silent_for_the_patience() -> None:
    clock = Clock()
    _, director = promoted(clock)
    worker = director.groups[0].workers[0]
    assert director.redirect(worker, clock.now) is not None
    assert director.redirect(worker, clock.now + 1.6) is None


def test_offers_are_bounded() -> None:
    director = GroupDirector(patience=1.0)
    for bad in [("", "a:1"), ("n", ""), ("n", "x" * 257), ("n" * 129, "a:1")]:
        with pytest.raises(ValueError):
            director.offer(*bad, 0.0)
    assert director.offers == {}
    for i in range(MAX_OFFERS):
        director.offer(f"s{i}", "127.0.0.1:1", 0.0)
    with pytest.raises(ValueError, match="at most"):
        director.offer("one-more", "127.0.0.1:1", 0.0)
    director.offer("s0", "127.0.0.1:2", 0.0)  # a known node may offer again
    assert director.offers["s0"].address == "127.0.0.1:2"
    with pytest.raises(ValueError):
        GroupDirector(patience=0.0)


def test_a_worker_that_comes_back_by_itself_is_not_sent_to_its_group_again() -> None:
    clock = Clock()
    _, director = promoted(clock)
    worker = director.groups[0].workers[0]
    director.returned(worker)
    assert director.redirect(worker, clock.now) is None
    other = director.groups[0].workers[1]
    assert director.redirect(other, clock.now) is not None


def test_a_promotion_with_no_further_offers_keeps_the_groups_as_they_are() -> None:
    clock = Clock()
    policy, director = promoted(clock)
    before = director.groups
    busy_root(policy, clock, 12, 1.0, 12)
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 4
    for sub in ("sub-a", "sub-b"):
        director.seen(sub, clock.now)
    reordered = list(reversed(WORKERS))
    change = director.apply(decision, reordered, clock.now)
    assert change.groups == before and "2 groups kept" in change.reason
    assert not change.changed


def test_can_lead_workers_lead_only_after_the_sub_leader_daemons_and_others_never() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=3, hold=10))
    director = GroupDirector(patience=1.5)
    # w00.lead and w01.lead are --can-lead workers' groups, sub-a a sub-leader daemon; the
    # can-lead ones have the higher measured bandwidth, yet the daemon leads first.
    director.offer("w00.lead", "127.0.0.1:7100", clock.now, worker=True)
    director.offer("w01.lead", "127.0.0.1:7101", clock.now, worker=True)
    director.offer("sub-a", "127.0.0.1:7001", clock.now)
    nodes = [*WORKERS, NodeLink("w00.lead", 9e9, 0.0), NodeLink("w01.lead", 8e9, 0.0)]
    busy_root(policy, clock, 12, 1.0, 5)
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 2
    for sub in ("w00.lead", "w01.lead", "sub-a"):
        director.seen(sub, clock.now)
    change = director.apply(decision, nodes, clock.now)
    assert [g.leader for g in change.groups] == ["sub-a", "w00.lead"]
    flags = {n.node_id: (n.candidate, n.can_lead) for n in change.nodes}
    assert flags["sub-a"] == (True, False) and flags["w00.lead"] == (False, True)
    # A worker that made no offer is never promoted, whatever its link.
    assert flags["w11"] == (False, False)
    assert not {g.leader for g in change.groups} & {w.node_id for w in WORKERS}


def test_a_worker_offering_over_mtls_leads_only_once_its_sub_leader_joined() -> None:
    """A --can-lead worker's own offer (mTLS) is pending: planned like any can-lead offer,
    kept alive by the worker's calls, nobody redirected to it (the worker itself stays with
    the root) until its sub-leader joins with its certificate."""
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=3, hold=10))
    director = GroupDirector(patience=1.5)
    director.offer("w00.lead", "127.0.0.1:7100", clock.now, worker=True, owner="w00")
    assert director.promoted_owner("w00") is None  # offered, not promoted
    busy_root(policy, clock, 12, 1.0, 5)
    director.seen("w00", clock.now)  # the worker's own beat keeps its offer alive
    decision = policy.decide(clock.now)
    director.apply(decision, WORKERS, clock.now)
    assert [g.leader for g in director.groups] == ["w00.lead"]
    offer = director.promoted_owner("w00")
    assert offer is not None and offer.node_id == "w00.lead" and offer.pending
    assert director.promoted_owner("w01") is None  # another worker owns nothing
    assert director.promoted_owner("w00.lead") is None
    members = director.groups[0].workers
    assert all(director.redirect(w, clock.now) is None for w in members)
    # A second offer from the worker's join does not replace the sub-leader once it joined.
    director.offer("w00.lead", "127.0.0.1:7100", clock.now, worker=True)
    director.offer("w00.lead", "127.0.0.1:7100", clock.now, worker=True, owner="w00")
    assert not director.offers["w00.lead"].pending
    assert director.promoted_owner("w00") is None
    assert all(director.redirect(w, clock.now) == "127.0.0.1:7100" for w in members)


def test_a_worker_the_plan_does_not_know_joins_the_smallest_live_group() -> None:
    clock = Clock()
    _, director = promoted(clock)
    sizes = {g.leader: len(g.workers) for g in director.groups}
    smallest = min(sizes, key=lambda leader: (sizes[leader], leader))
    placed = director.place("late", clock.now)
    assert placed is not None and placed.leader == smallest and placed.workers[-1] == "late"
    assert director.redirect("late", clock.now) == director.offers[smallest].address
    assert director.place("late", clock.now) is None  # placed once
    # The next late worker goes to the other group when the first made them even.
    second = director.place("later", clock.now)
    assert second is not None
    counts = sorted(len(g.workers) for g in director.groups)
    assert counts[-1] - counts[0] <= 1
    # Sub-leaders, can-lead owners and planned workers are never placed.
    director.offer("w99.lead", "127.0.0.1:7199", clock.now, worker=True)
    for node in ("sub-a", "w99", WORKERS[0].node_id):
        assert director.place(node, clock.now) is None


def test_no_placement_without_groups_or_for_workers_back_by_themselves() -> None:
    clock = Clock()
    director = GroupDirector(patience=1.5)
    assert director.place("late", clock.now) is None  # no split: everyone at the root
    _, director = promoted(clock)
    worker = director.groups[0].workers[0]
    director.returned(worker)  # its sub-leader failed it
    assert director.place(worker, clock.now) is None
    assert director.returned("brand-new") is None and director.place("brand-new", clock.now)
    # Workers of a lost group stay home until the next plan; no live group: nobody is placed.
    clock.advance(2.0)
    change = director.lost(clock.now)
    assert change is not None and change.groups == ()
    assert director.place("another", clock.now) is None
