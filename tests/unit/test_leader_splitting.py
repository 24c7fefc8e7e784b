"""Leader role splitting: promotion and demotion with hysteresis, on a simulated clock."""

from __future__ import annotations

import pytest

from eddl.leader.splitting import NodeLink, SplitConfig, SplitPolicy, plan_groups


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def run_syncs(
    policy: SplitPolicy, clock: Clock, workers: int, t_sync: float, seconds: float
) -> None:
    """Syncs every second for ``seconds`` with ``workers`` workers each taking ``t_sync``."""
    for _ in range(int(seconds)):
        policy.observe_sync(clock.advance(1.0), workers, t_sync)


def test_buc_is_n_over_the_mean_sync_time_of_the_window() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=10))
    run_syncs(policy, clock, 8, 0.02, 5)
    run_syncs(policy, clock, 8, 0.06, 5)
    assert policy.buc(clock.now) == (8, pytest.approx(8 / 0.04))
    policy.observe_sync(clock.advance(1.0), 9, 0.04)
    assert policy.buc(clock.now) is None  # the worker count changed inside the window
    clock.advance(11)
    assert policy.buc(clock.now) is None  # nothing measured in the window


def test_buc_that_keeps_rising_with_workers_is_no_saturation() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=10, hold=0))
    for n in (4, 8, 16):
        run_syncs(policy, clock, n, 0.01, 12)  # t_sync constant: BUC doubles each time
        decision = policy.decide(clock.now)
        assert decision.action == "stay" and decision.groups == 0
    assert decision.figures.buc == pytest.approx(1600) and decision.figures.previous_workers == 8


def test_flat_buc_when_workers_are_added_promotes_to_two_groups_with_the_figures() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=10, hold=30))
    run_syncs(policy, clock, 8, 8 / 300, 12)  # BUC 300/s
    assert policy.decide(clock.now).action == "stay"
    run_syncs(policy, clock, 16, 16 / 305, 12)  # BUC 305/s: less than 5% more
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 2 and policy.groups == 2
    f = decision.figures
    assert (f.workers, f.previous_workers, f.groups) == (16, 8, 0)
    assert f.buc == pytest.approx(305) and f.previous_buc == pytest.approx(300)
    assert "did not rise 5%" in decision.reason
    # Right after a decision nothing moves, whatever the figures say (hysteresis).
    run_syncs(policy, clock, 24, 24 / 305, 12)
    assert policy.decide(clock.now).reason == "too soon after the last decision"


def test_a_root_link_held_busy_promotes_but_a_short_burst_does_not() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(busy_for=10, hold=0))
    for u in (0.9, 0.95, 0.3, 0.9, 0.9):  # a dip inside the last 10 s
        policy.observe_link(clock.advance(3.0), u)
    assert policy.decide(clock.now).action == "stay"
    for _ in range(4):
        policy.observe_link(clock.advance(3.0), 0.9)
    run_syncs(policy, clock, 6, 0.02, 1)
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.figures.link_busy == 0.9
    assert "root link >= 85% busy" in decision.reason


def test_no_promotion_without_workers_for_every_group() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(busy_for=0, hold=0, min_group=2))
    policy.observe_link(clock.advance(1.0), 1.0)
    run_syncs(policy, clock, 5, 0.02, 1)  # two groups need 2 × (1 + 2) = 6 nodes
    assert policy.decide(clock.now).action == "stay"
    run_syncs(policy, clock, 6, 0.02, 1)
    assert policy.decide(clock.now).action == "promote"
    policy.observe_link(clock.advance(1.0), 1.0)
    run_syncs(policy, clock, 11, 0.02, 1)  # four groups need 12
    assert policy.decide(clock.now).action == "stay"
    run_syncs(policy, clock, 12, 0.02, 1)
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 4
    run_syncs(policy, clock, 40, 0.02, 1)
    assert policy.decide(clock.now).groups == 4  # max_groups


def test_a_busy_link_promotes_on_workers_still_synchronising_when_none_finished() -> None:
    # A link so full that no update arrives: no sync figure, but the meter counts the nodes
    # whose updates are under way.
    clock = Clock()
    policy = SplitPolicy(SplitConfig(busy_for=0, hold=0, min_group=2))
    policy.observe_link(clock.advance(1.0), 1.0)
    assert policy.decide(clock.now).action == "stay"  # nobody known: nothing to split
    policy.observe_workers(5)  # two groups need 2 × (1 + 2) = 6 nodes
    assert policy.decide(clock.now).action == "stay"
    policy.observe_workers(64)
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 2
    assert decision.figures.workers == 0 and decision.figures.synchronising == 64
    assert decision.figures.buc is None


def full_link_for(policy: SplitPolicy, clock: Clock, syncs: int, workers: int) -> None:
    """The link held full for 2 s while ``syncs`` synchronisations of ``workers`` finish."""
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_link(clock.advance(1.0), 1.0)
    for _ in range(syncs):
        policy.observe_sync(clock.advance(0.01), workers, 0.5)


def test_a_full_link_with_far_more_tasks_outstanding_than_it_serves_takes_every_doubling() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=1, hold=30, min_group=2, surge=4))
    full_link_for(policy, clock, 2, 13)
    policy.observe_workers(13, outstanding=60)  # 60 tasks outstanding, 2 synchronisations served
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 4 and policy.groups == 4
    f = decision.figures
    assert (f.outstanding, f.served, f.synchronising, f.groups) == (60, 2, 13, 0)
    assert "60 tasks outstanding for 2 synchronisations" in decision.reason
    assert "4 groups at once" in decision.reason
    # The hold still applies after a promotion of several doublings.
    policy.observe_workers(64, outstanding=60)
    assert policy.decide(clock.advance(1.0)).reason == "too soon after the last decision"


def test_a_full_link_that_serves_its_outstanding_tasks_doubles_once() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=1, hold=0, min_group=2, surge=4))
    full_link_for(policy, clock, 10, 13)
    policy.observe_workers(13, outstanding=39)  # 39 < 4 × 10 served
    decision = policy.decide(clock.now)
    assert decision.action == "promote" and decision.groups == 2
    assert "at once" not in decision.reason
    assert (decision.figures.outstanding, decision.figures.served) == (39, 10)


def test_a_surge_takes_only_the_doublings_the_workers_fill() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=1, hold=0, min_group=2, max_groups=8))
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_workers(11, outstanding=11)  # nothing served; four groups need 12
    assert policy.decide(clock.now).groups == 2
    policy = SplitPolicy(SplitConfig(window=5, busy_for=1, hold=0, min_group=2))
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_link(clock.advance(1.0), 1.0)
    # Eight synchronising, 60 holding a task (its model on the way): they fill groups too.
    policy.observe_workers(8, outstanding=60)
    decision = policy.decide(clock.now)
    f = decision.figures
    assert decision.groups == 4 and (f.synchronising, f.outstanding) == (8, 60)
    policy = SplitPolicy(SplitConfig(window=5, busy_for=1, hold=0, min_group=2, max_groups=8))
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_link(clock.advance(1.0), 1.0)
    policy.observe_workers(30, outstanding=50)  # eight groups need 24: up to max_groups 8
    decision = policy.decide(clock.now)
    assert decision.groups == 8 and "8 groups at once" in decision.reason
    # Flat BUC is not a measure of demand against the link: it doubles once.
    policy = SplitPolicy(SplitConfig(window=10, hold=0, busy_for=1))
    run_syncs(policy, clock, 8, 8 / 300, 12)
    policy.decide(clock.now)
    run_syncs(policy, clock, 16, 16 / 305, 12)
    policy.observe_workers(16, outstanding=100)
    assert policy.decide(clock.now).groups == 2


def test_demotion_waits_for_fewer_workers_and_a_quiet_link_then_halves_the_groups() -> None:
    clock = Clock()
    cfg = SplitConfig(window=5, busy_for=5, hold=60, busy_low=0.5, demote_fraction=0.5)
    policy = SplitPolicy(cfg)
    policy.observe_link(clock.advance(1.0), 0.9)
    policy.observe_link(clock.advance(6.0), 0.9)
    run_syncs(policy, clock, 16, 0.05, 1)
    assert policy.decide(clock.now).action == "promote"
    # Load falls at once, but the hold keeps the groups for 60 s.
    policy.observe_link(clock.advance(1.0), 0.1)
    run_syncs(policy, clock, 6, 0.05, 5)
    assert policy.decide(clock.now).action == "stay"
    # 61 s on: 6 workers <= half of 16, link quiet for the whole hold: back to flat.
    for _ in range(12):
        policy.observe_link(clock.advance(5.0), 0.2)
    run_syncs(policy, clock, 6, 0.05, 5)
    decision = policy.decide(clock.now)
    assert decision.action == "demote" and decision.groups == 0
    assert "6 workers <= 50% of 16" in decision.reason


def test_no_demotion_while_the_link_is_still_busy_or_workers_stay() -> None:
    clock = Clock()
    policy = SplitPolicy(SplitConfig(window=5, busy_for=0, hold=10))
    policy.observe_link(clock.advance(1.0), 0.9)
    run_syncs(policy, clock, 16, 0.05, 1)
    assert policy.decide(clock.now).action == "promote"
    for _ in range(10):
        policy.observe_link(clock.advance(3.0), 0.6)  # between busy_low and busy_high
    run_syncs(policy, clock, 4, 0.05, 3)
    assert policy.decide(clock.now).action == "stay"
    for _ in range(10):
        policy.observe_link(clock.advance(3.0), 0.1)
    run_syncs(policy, clock, 12, 0.05, 3)  # 12 workers > 8: load did not fall enough
    assert policy.decide(clock.now).action == "stay"
    run_syncs(policy, clock, 8, 0.05, 6)
    assert policy.decide(clock.now).action == "demote"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: p.observe_sync(1.0, 0, 0.1), "workers"),
        (lambda p: p.observe_sync(1.0, 4, float("nan")), "sync seconds"),
        (lambda p: p.observe_sync(1.0, 4, 0.0), "sync seconds"),
        (lambda p: p.observe_link(1.0, 1.5), "utilisation"),
        (lambda p: p.observe_link(1.0, float("inf")), "utilisation"),
        (lambda p: p.observe_workers(-1), "workers"),
        (lambda p: p.observe_workers(True), "workers"),
        (lambda p: p.observe_workers(4, outstanding=-1), "outstanding"),
        (lambda p: p.observe_workers(4, outstanding=2.5), "outstanding"),
    ],
)
def test_figures_out_of_bounds_are_refused_and_change_nothing(call, match: str) -> None:
    policy = SplitPolicy()
    with pytest.raises(ValueError, match=match):
        call(policy)
    assert policy.buc(2.0) is None and policy.decide(2.0).figures.link_busy is None


def test_a_surge_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="surge"):
        SplitConfig(surge=0.5)
    with pytest.raises(ValueError, match="surge"):
        SplitConfig(surge=float("nan"))


def nodes() -> list[NodeLink]:
    return [
        NodeLink("w1", bandwidth=5e6, speed=100),
        NodeLink("fast-link", bandwidth=9e7, speed=50, can_lead=True),
        NodeLink("cand", bandwidth=1e7, speed=50, candidate=True),
        NodeLink("mid-link", bandwidth=4e7, speed=50, can_lead=True),
        NodeLink("w2", bandwidth=9e9, speed=400),  # best link, but may not lead
        NodeLink("w3", bandwidth=5e6, speed=300),
        NodeLink("w4", bandwidth=5e6, speed=100),
        NodeLink("w5", bandwidth=5e6, speed=100),
    ]


def test_sub_leaders_are_candidates_first_then_the_best_links_that_can_lead() -> None:
    plan = plan_groups(nodes(), 2)
    assert [g.leader for g in plan.groups] == ["cand", "fast-link"]
    assert plan.root_workers == ()
    members = sorted(w for g in plan.groups for w in g.workers)
    assert members == ["mid-link", "w1", "w2", "w3", "w4", "w5"]  # each node once


def test_workers_are_shared_so_that_groups_hold_about_the_same_speed() -> None:
    plan = plan_groups(nodes(), 2)
    speed = {n.node_id: n.speed for n in nodes()}
    loads = [sum(speed[w] for w in g.workers) for g in plan.groups]
    assert loads == [550, 500]  # 400+100+50 and 300+100+100


def test_fewer_groups_when_too_few_may_lead_or_too_few_workers_are_left() -> None:
    # Three may lead, but three groups would leave 5 workers for 3 × 2 places.
    assert len(plan_groups(nodes(), 4).groups) == 2
    small = nodes()[:4]  # three may lead, one plain worker
    plan = plan_groups(small, 2, min_group=1)
    assert len(plan.groups) == 2 and sorted(w for g in plan.groups for w in g.workers) == [
        "mid-link",
        "w1",
    ]
    flat = plan_groups([NodeLink("a", 1e6, 10), NodeLink("b", 1e6, 10)], 2)
    assert flat.groups == () and flat.root_workers == ("a", "b")
    with pytest.raises(ValueError, match="unique"):
        plan_groups([NodeLink("a", 1e6, 10), NodeLink("a", 1e6, 10)], 2)


def test_candidates_not_picked_stand_by_and_are_no_groups_member() -> None:
    standbys = [NodeLink(f"sub{i}", 0.0, 0.0, candidate=True) for i in range(4)]
    workers = [NodeLink(f"w{i}", 5e6, 100 + i) for i in range(6)]
    plan = plan_groups(standbys + workers, 2)
    assert [g.leader for g in plan.groups] == ["sub0", "sub1"]
    members = sorted(w for g in plan.groups for w in g.workers)
    assert members == [f"w{i}" for i in range(6)]  # sub2, sub3: no group's member
    # Four groups need 4 × 2 workers: six are too few, and standbys do not fill the gap.
    assert len(plan_groups(standbys + workers, 4).groups) == 3
    assert len(plan_groups(standbys + workers[:3], 2).groups) == 1
