"""The auto sync/async policy: thresholds, reasons, and no flapping (hysteresis)."""

from __future__ import annotations

import itertools

import pytest

from eddl.leader.policy import AutoPolicy, PolicyConfig

CFG = PolicyConfig(
    window_s=10.0,
    min_tasks=4,
    spread_high=2.0,
    spread_low=1.4,
    churn_high=2,
    churn_low=0,
    bandwidth_high=0.85,
    bandwidth_low=0.5,
    min_dwell_s=10.0,
)


def feed(policy: AutoPolicy, times: list[float], start: float, step: float = 0.5) -> float:
    t = start
    for seconds in times:
        policy.observe_task(seconds, t)
        t += step
    return t


def test_starts_sync_and_stays_with_even_tasks() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    t = feed(p, [1.0, 1.1, 0.9, 1.0, 1.05, 0.95], start=20.0)
    assert p.decide(t) is None and p.mode == "sync"
    assert p.metrics(t).spread == pytest.approx(1.1 / 1.0)


def test_straggler_spread_switches_to_async_with_a_reason_then_back() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    t = feed(p, [1.0, 1.0, 1.0, 4.0, 1.0, 4.0], start=20.0)
    switch = p.decide(t)
    assert switch is not None and switch.mode == "async" and switch.previous == "sync"
    assert "spread 4.00 >= 2.0" in switch.reason and switch.metrics.tasks == 6
    # Spread falls (the straggler recovered): back to sync once the dwell time is over.
    t = feed(p, [1.0, 1.1, 1.0, 1.2, 1.0], start=t + 11.0)
    back = p.decide(t)
    assert back is not None and back.mode == "sync" and "spread 1.20 <= 1.4" in back.reason
    assert [s.mode for s in p.switches] == ["async", "sync"]


def test_no_flapping_on_a_sequence_between_the_thresholds() -> None:
    """Spread oscillating between the low and high thresholds never changes the mode."""
    p = AutoPolicy(CFG, started_at=0.0)
    t = 20.0
    for i in range(200):
        p.observe_task(1.0, t)
        p.observe_task(1.5 if i % 2 else 1.9, t)  # spread 1.5-1.9: inside the band
        t += 0.5
        assert p.decide(t) is None
    assert p.switches == []


def test_dwell_time_bounds_switches_on_a_wildly_alternating_sequence() -> None:
    """Stragglers come and go every second: at most one switch per dwell period."""
    p = AutoPolicy(CFG, started_at=0.0)
    t = 0.0
    for i in range(400):  # 200 s of synthetic task times
        slow = 5.0 if (i // 2) % 2 else 1.0
        p.observe_task(1.0, t)
        p.observe_task(slow, t)
        p.decide(t)
        t += 0.5
    times = [s.at for s in p.switches]
    assert len(times) <= 200 / CFG.min_dwell_s
    assert all(b - a >= CFG.min_dwell_s for a, b in itertools.pairwise(times))


def test_churn_and_bandwidth_trigger_async() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    p.observe_churn(20.0)
    p.observe_churn(21.0)
    switch = p.decide(22.0)
    assert switch is not None and "churn 2 >= 2" in switch.reason
    q = AutoPolicy(CFG, started_at=0.0)
    q.observe_bandwidth(0.95, 30.0)
    switch = q.decide(30.0)
    assert switch is not None and "link 95% busy" in switch.reason


def test_churn_keeps_async_until_the_window_is_calm() -> None:
    p = AutoPolicy(CFG, start="async", started_at=0.0)
    feed(p, [1.0] * 6, start=15.0)
    p.observe_churn(18.0)
    assert p.decide(20.0) is None  # one leave in the window: not calm yet
    feed(p, [1.0] * 6, start=28.5)
    assert p.decide(31.5) is not None  # churn aged out of the 10 s window


def test_few_tasks_give_no_spread() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    feed(p, [1.0, 9.0, 1.0], start=20.0)
    assert p.metrics(22.0).spread is None and p.decide(22.0) is None


def test_old_observations_leave_the_window() -> None:
    p = AutoPolicy(CFG, started_at=0.0)
    feed(p, [1.0, 1.0, 1.0, 9.0, 9.0, 1.0], start=20.0)
    assert p.metrics(40.0).tasks == 0 and p.decide(40.0) is None


def test_bad_observations_and_config_are_refused() -> None:
    p = AutoPolicy(CFG)
    with pytest.raises(ValueError):
        p.observe_task(-1.0, 0.0)
    with pytest.raises(ValueError):
        p.observe_task(float("nan"), 0.0)
    with pytest.raises(ValueError):
        p.observe_bandwidth(1.5, 0.0)
    for bad in (
        {"spread_low": 2.0, "spread_high": 2.0},
        {"churn_low": 3, "churn_high": 2},
        {"window_s": 0.0},
        {"min_tasks": 1},
        {"bandwidth_high": 1.5},
    ):
        with pytest.raises(ValueError):
            PolicyConfig(**bad)
    with pytest.raises(ValueError, match="expected a number"):
        PolicyConfig.from_mapping({"window_s": "10"})
