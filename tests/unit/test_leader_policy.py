"""The auto sync/async policy: what each mode costs, thresholds, reasons, and no flapping."""

from __future__ import annotations

import itertools
import math

import pytest

from eddl.leader.policy import AutoPolicy, PolicyConfig, staleness_cost

CFG = PolicyConfig(
    window_s=10.0,
    min_tasks=4,
    idle_high=0.3,
    idle_low=0.1,
    spread_high=2.0,
    spread_low=1.4,
    churn_high=2,
    churn_low=0,
    bandwidth_high=0.85,
    bandwidth_low=0.5,
    staleness_high=4.0,
    min_dwell_s=10.0,
    memory_s=30.0,
)


def feed(policy: AutoPolicy, times: list[float], start: float, step: float = 0.5) -> float:
    t = start
    for seconds in times:
        policy.observe_task(seconds, t)
        t += step
    return t


def rounds(
    policy: AutoPolicy, busy: list[float], waits: list[float], start: float, count: int
) -> float:
    """``count`` rounds: worker i works ``busy[i]`` s, then waits ``waits[i]`` s for the next."""
    t = start
    for _ in range(count):
        t += max(b + w for b, w in zip(busy, waits, strict=True))
        for b, w in zip(busy, waits, strict=True):
            policy.observe_task(b, t)
            policy.observe_wait(w, t)
    return t


def test_starts_sync_and_stays_when_rounds_waste_little() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    t = rounds(p, [1.0, 1.0, 0.95, 1.05], [0.05, 0.05, 0.1, 0.0], start=0.0, count=3)
    assert p.decide(t) is None and p.mode == "sync"
    m = p.metrics(t)
    assert m.idle == pytest.approx(0.2 / 4.2) and m.tasks == 12


def test_measured_barrier_cost_switches_to_async_at_once_with_its_reason() -> None:
    """No dwell before the first switch: enough evidence is enough."""
    p = AutoPolicy(CFG, started_at=0.0)
    # Every round, three workers finish in 1 s and wait 1 s for the fourth: 37.5% idle.
    t = rounds(p, [1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 0.0], start=0.0, count=2)
    switch = p.decide(t)
    assert switch is not None and switch.mode == "async" and switch.previous == "sync"
    assert "workers idle 38% >= 30%" in switch.reason and "spread 2.00" in switch.reason
    assert switch.metrics.idle == pytest.approx(3.0 / 8.0)
    assert p.reason == switch.reason


def test_lost_tasks_count_as_idle() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    for i in range(4):
        p.observe_task(1.0, float(i))
        p.observe_wait(0.0, float(i))
    p.observe_task(3.0, 4.0, lost=True)  # a task taken back after 3 s: all of it wasted
    assert p.metrics(4.0).idle == pytest.approx(3.0 / 7.0)
    assert p.decide(4.0) is not None and p.mode == "async"


def test_async_returns_to_sync_when_the_predicted_barrier_is_low() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(4)
    t = rounds(p, [1.0, 1.02, 0.98, 1.0], [0.01] * 4, start=0.0, count=2)
    m = p.metrics(t)
    assert m.barrier is not None and m.barrier < 0.1
    back = p.decide(t)
    assert back is not None and back.mode == "sync" and "predicted sync idle" in back.reason


def test_async_stays_while_sync_would_idle_behind_a_straggler() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(4)
    t = rounds(p, [1.0, 1.0, 1.0, 1.3], [0.01] * 4, start=0.0, count=3)
    m = p.metrics(t)
    assert m.barrier is not None and 0.1 < m.barrier < 0.3  # in the band: no decision
    assert p.decide(t) is None and p.mode == "async"


def test_a_measured_costly_sync_is_not_returned_to_before_memory_s() -> None:
    """Sync measured wasteful; async task times then look even: the prediction cannot see what
    made rounds costly, so the measurement wins until it is ``memory_s`` old."""
    p = AutoPolicy(CFG, started_at=0.0)
    t = rounds(p, [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], start=0.0, count=2)
    assert p.decide(t) is not None and p.mode == "async"
    costly_at = t
    p.set_workers(4)
    while t < costly_at + CFG.memory_s - 1.0:
        t = rounds(p, [1.0] * 4, [0.01] * 4, start=t, count=1)
        assert p.decide(t) is None, t
    t = rounds(p, [1.0] * 4, [0.01] * 4, start=costly_at + CFG.memory_s, count=1)
    back = p.decide(t)
    assert back is not None and back.mode == "sync"


def test_high_staleness_returns_to_sync_only_if_sync_is_no_worse() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(4)
    t = rounds(p, [1.0, 1.0, 1.0, 1.3], [0.01] * 4, start=0.0, count=3)
    for _ in range(6):
        p.observe_staleness(6, t)
    back = p.decide(t)
    assert back is not None and back.mode == "sync" and "staleness 6.0 >= 4" in back.reason
    q = AutoPolicy(CFG, start="async", started_at=0.0)
    q.set_workers(4)
    t = rounds(q, [1.0, 1.0, 1.0, 3.0], [0.01] * 4, start=0.0, count=3)  # a real straggler
    for _ in range(6):
        q.observe_staleness(6, t)
    assert q.decide(t) is None and q.mode == "async"


def test_staleness_cost_is_fedbuffs_discount() -> None:
    assert staleness_cost(0) == 0.0
    assert staleness_cost(1) == pytest.approx(1 - 1 / math.sqrt(2))
    assert staleness_cost(3) == pytest.approx(0.5)


def test_expected_staleness_raises_the_bar_for_leaving_sync() -> None:
    """With 7 workers and FedAsync (one update per version) async would run 6 versions stale,
    costing half of each update: 37% idle is worth less than that, 55% is not."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=1)
    p.set_workers(7)
    t = rounds(p, [1.0] * 6 + [1.6], [0.6] * 6 + [0.0], start=0.0, count=2)
    m = p.metrics(t)
    assert m.staleness_cost == pytest.approx(1 - 1 / math.sqrt(7))
    assert m.idle is not None and m.staleness_cost is not None
    assert CFG.idle_high < m.idle < m.staleness_cost
    assert p.decide(t) is None and p.mode == "sync"
    # The same cluster under FedBuff with K = 6 would run one version stale: 29% < idle.
    q = AutoPolicy(CFG, started_at=0.0, async_buffer=6)
    q.set_workers(7)
    rounds(q, [1.0] * 6 + [1.6], [0.6] * 6 + [0.0], start=0.0, count=2)
    switch = q.decide(t)
    assert switch is not None and switch.mode == "async"
    assert "what staleness would cost async" not in switch.reason  # idle_high is the bar
    # Rounds bad enough beat the staleness cost, and the reason names it.
    r = AutoPolicy(CFG, started_at=0.0, async_buffer=1)
    r.set_workers(7)
    t = rounds(r, [1.0] * 6 + [4.0], [3.0] * 6 + [0.0], start=0.0, count=2)
    switch = r.decide(t)
    assert switch is not None and "what staleness would cost async: 7 workers" in switch.reason


def test_async_returns_when_staleness_costs_more_than_the_predicted_barrier() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(4)
    # Not calm (spread 1.5), rounds would idle ~26%, but three versions stale cost 50%.
    t = rounds(p, [1.0, 1.0, 1.0, 1.5], [0.01] * 4, start=0.0, count=3)
    for _ in range(6):
        p.observe_staleness(3, t)
    back = p.decide(t)
    assert back is not None and back.mode == "sync"
    assert "costs 50% of each update >= predicted sync idle 26% + 20%" in back.reason
    # One version stale (29%) is not worth returning to the same rounds: inside the band.
    q = AutoPolicy(CFG, start="async", started_at=0.0)
    q.set_workers(4)
    t = rounds(q, [1.0, 1.0, 1.0, 1.5], [0.01] * 4, start=0.0, count=3)
    for _ in range(6):
        q.observe_staleness(1, t)
    m = q.metrics(t)
    assert m.barrier is not None and m.staleness_cost is not None
    assert m.staleness_cost < m.barrier + (CFG.idle_high - CFG.idle_low)
    assert q.decide(t) is None and q.mode == "async"


def test_async_buffer_must_be_a_positive_integer() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="async_buffer"):
            AutoPolicy(CFG, async_buffer=bad)  # type: ignore[arg-type]


def test_spread_alone_does_not_leave_sync() -> None:
    """In sync, rounds give late askers shorter tasks and first tasks are short probes: task
    times differ by design. Only what that costs (idle) counts."""
    p = AutoPolicy(CFG, started_at=0.0)
    t = 0.0
    for _ in range(4):
        t += 1.0
        for busy in (1.0, 0.25, 0.3, 0.3):
            p.observe_task(busy, t)
            p.observe_wait(0.02, t)
    m = p.metrics(t)
    assert m.spread is not None and m.spread >= CFG.spread_high and m.idle is not None
    assert m.idle < CFG.idle_high and p.decide(t) is None and p.mode == "sync"


def test_no_flapping_on_a_sequence_between_the_thresholds() -> None:
    """Idle and spread oscillating inside their bands never change the mode, in either mode."""
    for start in ("sync", "async"):
        p = AutoPolicy(CFG, start=start, started_at=0.0)
        p.set_workers(2)
        t = 0.0
        for i in range(400):
            slow = 1.25 if i % 2 else 1.35  # a sync round of (1.0, slow) idles 10-13%
            p.observe_task(1.0, t)
            p.observe_task(slow, t)
            p.observe_wait(slow - 1.0 + 0.1, t)
            p.observe_wait(0.1, t)
            t += 0.5
            assert p.decide(t) is None, (start, i, p.metrics(t))
        assert p.switches == []


def test_dwell_time_bounds_switches_on_a_wildly_alternating_sequence() -> None:
    """Stragglers come and go every second: at most one switch per dwell period."""
    cfg = PolicyConfig(**{**CFG.to_dict(), "memory_s": 0.0})
    p = AutoPolicy(cfg, started_at=0.0)
    p.set_workers(2)
    t = 0.0
    for i in range(400):  # 200 s of synthetic task times
        slow = 5.0 if (i // 2) % 2 else 1.0
        p.observe_task(1.0, t)
        p.observe_task(slow, t)
        p.observe_wait(slow - 1.0, t)
        p.observe_wait(0.0, t)
        p.decide(t)
        t += 0.5
    times = [s.at for s in p.switches]
    assert 1 <= len(times) <= 1 + 200 / cfg.min_dwell_s
    assert all(b - a >= cfg.min_dwell_s for a, b in itertools.pairwise(times))


def test_memory_caps_switches_at_one_cycle_per_memory_period() -> None:
    """Sync measured costly, then async looks calm: with the memory, the policy goes back at
    most once per ``memory_s`` instead of once per dwell."""
    p = AutoPolicy(CFG, started_at=0.0)
    p.set_workers(4)
    t = 0.0
    for _ in range(200):
        if p.mode == "sync":  # rounds stall on the barrier whatever the task times
            t = rounds(p, [1.0] * 4, [1.0] * 4, start=t, count=1)
        else:
            t = rounds(p, [1.0] * 4, [0.01] * 4, start=t, count=1)
        p.decide(t)
    to_sync = [s.at for s in p.switches if s.mode == "sync"]
    assert to_sync and all(b - a >= CFG.memory_s for a, b in itertools.pairwise(to_sync))
    assert len(to_sync) <= t / CFG.memory_s


def test_expiries_leave_sync_by_the_stall_they_cause_not_by_their_count() -> None:
    """An expiry's cost in sync is the round it stalls: measured as idle, weighed like any
    barrier cost. Two expiries whose stalls cost little keep sync; stalls that cost more than
    the bar switch, and the reason names the expiries."""
    p = AutoPolicy(CFG, started_at=0.0)
    t = rounds(p, [1.0] * 4, [0.1] * 4, start=0.0, count=4)
    p.observe_churn(t, expiry=True)
    p.observe_churn(t + 0.5, expiry=True)
    m = p.metrics(t + 1.0)
    assert m.expiries == 2 and m.idle is not None and m.idle < CFG.idle_high
    assert p.decide(t + 1.0) is None and p.mode == "sync"
    # Long heartbeat patience: every round now waits 1.5 s for a worker declared dead late.
    t = rounds(p, [1.0] * 4, [1.5] * 4, start=t + 1.0, count=4)
    p.observe_churn(t, expiry=True)
    switch = p.decide(t)
    assert switch is not None and switch.mode == "async"
    assert "sync barrier" in switch.reason and "expired without leaving" in switch.reason


def test_bandwidth_triggers_async() -> None:
    q = AutoPolicy(CFG, started_at=0.0)
    q.observe_bandwidth(0.95, 30.0)
    switch = q.decide(30.0)
    assert switch is not None and "link 95% busy" in switch.reason


def test_joins_and_clean_leaves_alone_do_not_leave_sync() -> None:
    """A newcomer costs a round nothing (it gets a task sized to the time left); a clean leave
    costs sync what it costs async (the task, re-queued at once): neither favours async."""
    p = AutoPolicy(CFG, started_at=0.0)
    for at in (20.0, 20.5, 21.0, 21.5, 21.6):
        p.observe_churn(at)
    p.observe_churn(21.7, expiry=True)
    m = p.metrics(22.0)
    assert m.churn == 6 and m.expiries == 1
    assert p.decide(22.0) is None and p.mode == "sync"


def test_a_join_keeps_async_from_returning_until_the_window_is_calm() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(2)
    feed(p, [1.0] * 6, start=15.0)
    p.observe_churn(18.0)
    assert p.decide(20.0) is None
    feed(p, [1.0] * 6, start=28.5)
    assert p.decide(31.5) is not None


def test_warmup_tasks_and_the_waits_after_them_are_no_evidence() -> None:
    """Probe tasks are a quarter of a round by design: the idle they leave is not the barrier's."""
    p = AutoPolicy(CFG, started_at=0.0)
    # Round 0: four probes of 0.25 s, then each worker idles 0.75 s for the round to close.
    for i in range(4):
        p.observe_task(0.25, 1.0 + 0.01 * i, warmup=True)
    for i in range(4):
        p.observe_wait(0.75, 1.1 + 0.01 * i, warmup=True)
    assert p.metrics(1.2).tasks == 0 and p.metrics(1.2).idle is None
    # Then an even round: 5% idle, no switch, and the probes left no trace in the figures.
    t = rounds(p, [1.0, 1.0, 1.0, 1.0], [0.05, 0.05, 0.05, 0.05], start=1.2, count=1)
    m = p.metrics(t)
    assert m.tasks == 4 and m.idle == pytest.approx(0.05 / 1.05)
    assert p.decide(t) is None and p.mode == "sync"
    # Fed as evidence, the same probes would have flipped the mode.
    q = AutoPolicy(CFG, started_at=0.0)
    for i in range(4):
        q.observe_task(0.25, 1.0 + 0.01 * i)
        q.observe_wait(0.75, 1.1 + 0.01 * i)
    rounds(q, [1.0, 1.0, 1.0, 1.0], [0.05, 0.05, 0.05, 0.05], start=1.2, count=1)
    assert q.metrics(t).idle == pytest.approx(3.2 / 8.2)
    assert q.decide(t) is not None and q.mode == "async"


def test_a_lost_warmup_task_still_counts_as_idle() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    for i in range(4):
        p.observe_task(1.0, float(i))
        p.observe_wait(0.0, float(i))
    p.observe_task(3.0, 4.0, lost=True, warmup=True)
    assert p.metrics(4.0).idle == pytest.approx(3.0 / 7.0)


def test_churn_keeps_async_until_the_window_is_calm() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    p.set_workers(2)
    feed(p, [1.0] * 6, start=15.0)
    p.observe_churn(18.0)
    assert p.decide(20.0) is None  # one leave in the window: not calm yet
    feed(p, [1.0] * 6, start=28.5)
    assert p.decide(31.5) is not None  # churn aged out of the 10 s window


def test_few_observations_give_no_signal() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    feed(p, [1.0, 9.0, 1.0], start=20.0)
    p.observe_wait(5.0, 21.0)
    m = p.metrics(22.0)
    assert m.spread is None and m.idle is None and p.decide(22.0) is None


def test_old_observations_leave_the_window() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    rounds(p, [1.0, 9.0], [8.0, 0.0], start=20.0, count=3)
    m = p.metrics(60.0)
    assert m.tasks == 0 and m.idle is None and p.decide(60.0) is None


def test_bad_observations_and_config_are_refused() -> None:
    p = AutoPolicy(CFG)
    with pytest.raises(ValueError):
        p.observe_task(-1.0, 0.0)
    with pytest.raises(ValueError):
        p.observe_task(float("nan"), 0.0)
    with pytest.raises(ValueError):
        p.observe_wait(-0.5, 0.0)
    with pytest.raises(ValueError):
        p.observe_staleness(-1, 0.0)
    with pytest.raises(ValueError):
        p.observe_bandwidth(1.5, 0.0)
    for bad in (
        {"spread_low": 2.0, "spread_high": 2.0},
        {"idle_low": 0.4, "idle_high": 0.3},
        {"idle_high": 1.5},
        {"churn_low": 3, "churn_high": 2},
        {"window_s": 0.0},
        {"memory_s": -1.0},
        {"staleness_high": 0.0},
        {"min_tasks": 1},
        {"bandwidth_high": 1.5},
    ):
        with pytest.raises(ValueError):
            PolicyConfig(**bad)
    with pytest.raises(ValueError, match="expected a number"):
        PolicyConfig.from_mapping({"window_s": "10"})
