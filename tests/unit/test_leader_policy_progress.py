"""The auto policy's progress ratio: versions per second of each mode, counted at their worth.

Replays, on a synthetic clock, the figures the leader measured in the cluster: eight equal
workers whose sync rounds idle little but sum eight updates into each version, where async
(FedBuff, K = 3) made 3.5x as many versions per second and reached the target sooner.
"""

from __future__ import annotations

import math

import pytest

from eddl.leader.policy import AutoPolicy, PolicyConfig
from tests.unit.test_leader_policy import rounds

CFG = PolicyConfig(
    window_s=10.0,
    min_tasks=4,
    idle_high=0.3,
    idle_low=0.1,
    spread_high=2.0,
    spread_low=1.4,
    min_dwell_s=10.0,
    memory_s=30.0,
)


def sync_rounds(
    policy: AutoPolicy, busy: list[float], waits: list[float], start: float, count: int
) -> float:
    """``count`` sync rounds of one task per worker, each closed into one version."""
    t = start
    for _ in range(count):
        t = rounds(policy, busy, waits, t, 1)
        policy.observe_version(len(busy), t)
    return t


def async_tasks(
    policy: AutoPolicy, busy: list[float], staleness: int, start: float, count: int, k: int = 3
) -> float:
    """``count`` passes of one task per worker in async, a version per ``k`` updates."""
    t, updates = start, 0
    for _ in range(count):
        t += max(busy)
        for b in busy:
            policy.observe_task(b, t)
            policy.observe_wait(0.005, t)
            policy.observe_staleness(staleness, t)
            updates += 1
            if updates % k == 0:
                policy.observe_version(k, t)
    return t


def test_eight_equal_workers_leave_sync_on_progress_and_say_why() -> None:
    """Rounds idle 13%, far below what staleness would cost (45%): the idle rule keeps sync.
    Async makes 8/3 versions per round's time, each worth 1/sqrt(1 + 7/3) of a fresh one."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=3)
    p.set_workers(8)
    t = sync_rounds(p, [0.2] * 8, [0.03] * 8, start=0.0, count=3)
    m = p.metrics(t)
    assert m.idle == pytest.approx(0.03 / 0.23)
    assert m.staleness_cost is not None and m.idle < m.staleness_cost
    assert m.updates_per_version == 8.0
    worth = 1 / math.sqrt(1 + 7 / 3)
    assert m.progress_ratio == pytest.approx(8 * worth / (3 * (1 - 0.03 / 0.23)))
    switch = p.decide(t)
    assert switch is not None and switch.mode == "async"
    assert "progress: async predicted 1.68x as fast as sync" in switch.reason
    assert "8.0 updates per version, workers idle 13%" in switch.reason
    assert "8 workers, 3 updates per version, expected staleness 2.3, worth 55%" in switch.reason
    assert "sync barrier" not in switch.reason
    assert switch.metrics.progress_ratio == m.progress_ratio


def test_eight_equal_workers_stay_async_however_calm_their_task_times() -> None:
    """Even task times alone would return to sync; the predicted progress keeps async, also
    after ``memory_s``."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=3)
    p.set_workers(8)
    t = sync_rounds(p, [0.2] * 8, [0.03] * 8, start=0.0, count=3)
    assert p.decide(t) is not None and p.mode == "async"
    for _ in range(600):  # 120 s, four times memory_s
        t = async_tasks(p, [0.2] * 8, staleness=2, start=t, count=1)
        assert p.decide(t) is None, p.metrics(t)
    m = p.metrics(t)
    assert m.barrier is not None and m.barrier <= CFG.idle_low and m.spread == 1.0
    assert m.progress_ratio is not None and m.progress_ratio > CFG.rate_high


def test_four_equal_workers_with_idle_rounds_stay_sync() -> None:
    """Four workers, K = 3: async would make 4/3 versions per round, each worth 71%; rounds
    that idle 17% leave async predicted only 1.13x: inside the band, no switch."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=3)
    p.set_workers(4)
    t = sync_rounds(p, [1.0] * 4, [0.2] * 4, start=0.0, count=4)
    m = p.metrics(t)
    assert m.progress_ratio == pytest.approx(4 / math.sqrt(2) / (3 * (1 - 0.2 / 1.2)))
    assert CFG.rate_low < m.progress_ratio < CFG.rate_high
    assert p.decide(t) is None and p.mode == "sync"
    # The same cluster in async: predicted below rate_low, so calm task times may return.
    q = AutoPolicy(CFG, start="async", started_at=0.0, async_buffer=3)
    q.set_workers(4)
    t = async_tasks(q, [1.0, 1.02, 0.98, 1.0], staleness=1, start=0.0, count=3)
    m = q.metrics(t)
    assert m.progress_ratio is not None and m.progress_ratio < CFG.rate_low
    back = q.decide(t)
    assert back is not None and back.mode == "sync" and "predicted sync idle" in back.reason


def test_async_predicted_between_the_thresholds_keeps_either_mode() -> None:
    """Eight workers under K = 5: async predicted 1.13-1.15x, inside the band. Sync's rounds
    idle 10% (no idle trigger); async's task times are calm, which alone would return."""
    for start in ("sync", "async"):
        p = AutoPolicy(CFG, start=start, started_at=0.0, async_buffer=5)
        p.set_workers(8)
        t = 0.0
        for _ in range(100):
            if start == "sync":
                t = sync_rounds(p, [0.2] * 8, [0.022] * 8, start=t, count=1)
            else:
                t = async_tasks(p, [0.2] * 8, staleness=1, start=t, count=1, k=5)
            m = p.metrics(t)
            assert m.progress_ratio is not None and m.progress_ratio < CFG.rate_high, (start, m)
            if start == "async" or m.updates_per_version is not None:  # measured
                assert m.progress_ratio > CFG.rate_low, (start, m)
            assert p.decide(t) is None, (start, m)
        assert p.metrics(t).progress_ratio is not None


def test_async_returns_when_sync_is_predicted_clearly_better() -> None:
    """Two workers under K = 4: async makes half a version per task time. Task times are not
    calm (spread 1.8) and staleness is free, so only the progress ratio returns to sync."""
    p = AutoPolicy(CFG, start="async", started_at=0.0, async_buffer=4)
    p.set_workers(2)
    t = async_tasks(p, [1.0, 1.0, 1.0, 1.8], staleness=0, start=0.0, count=3, k=4)
    m = p.metrics(t)
    assert m.spread == 1.8 and m.staleness_cost == 0.0
    assert m.barrier is not None and m.barrier < CFG.idle_high
    assert m.progress_ratio is not None and m.progress_ratio * CFG.rate_high <= 1.0
    back = p.decide(t)
    assert back is not None and back.mode == "sync"
    assert (
        "progress: sync predicted 1.71x as fast as async" in back.reason
        and "staleness 0.0" in back.reason
    )


def test_before_any_round_the_clusters_shape_predicts_the_start() -> None:
    """Before sync is measured the ratio assumes rounds of one update per worker and no idle,
    the best sync can do: eight workers under K = 3 leave sync at the first decision, four do
    not. After a switch the shape is no evidence any more: only measurements count."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=3)
    p.set_workers(8)
    m = p.metrics(0.0)
    assert m.idle is None and m.updates_per_version is None
    assert m.progress_ratio == pytest.approx(8 / math.sqrt(1 + 7 / 3) / 3)
    switch = p.decide(0.0)
    assert switch is not None and switch.mode == "async"
    assert "async predicted 1.46x as fast as sync" in switch.reason
    assert "sync not measured yet: rounds of one update per worker at best" in switch.reason
    q = AutoPolicy(CFG, started_at=0.0, async_buffer=3)
    q.set_workers(4)
    assert q.metrics(0.0).progress_ratio == pytest.approx(4 / math.sqrt(2) / 3)
    assert q.decide(0.0) is None and q.mode == "sync"
    # Back in sync after a switch: no ratio until rounds are measured again.
    r = AutoPolicy(CFG, start="async", started_at=0.0, async_buffer=4)
    r.set_workers(2)
    t = async_tasks(r, [1.0, 1.0, 1.0, 1.8], staleness=0, start=0.0, count=3, k=4)
    assert r.decide(t) is not None and r.mode == "sync"
    r.set_workers(8)
    assert r.metrics(t).progress_ratio is None and r.decide(t + CFG.min_dwell_s) is None


def test_no_progress_ratio_for_single_update_rules() -> None:
    """K = 1 (FedAsync, the EDDL mix): a version applies part of one update; not modelled."""
    p = AutoPolicy(CFG, started_at=0.0, async_buffer=1)
    p.set_workers(8)
    assert p.metrics(0.0).progress_ratio is None and p.decide(0.0) is None
    t = sync_rounds(p, [0.2] * 8, [0.03] * 8, start=0.0, count=3)
    assert p.metrics(t).progress_ratio is None and p.decide(t) is None
    q = AutoPolicy(CFG, start="async", started_at=0.0, async_buffer=1)
    q.set_workers(8)
    t = async_tasks(q, [0.2] * 8, staleness=7, start=0.0, count=3, k=1)
    assert q.metrics(t).progress_ratio is None


def test_bad_versions_and_rate_thresholds_are_refused() -> None:
    p = AutoPolicy(CFG, async_buffer=3)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="updates"):
            p.observe_version(bad, 0.0)  # type: ignore[arg-type]
    assert p.metrics(0.0).updates_per_version is None
    for rates in ({"rate_low": 1.3, "rate_high": 1.3}, {"rate_low": 0.9}):
        with pytest.raises(ValueError, match="rate_low"):
            PolicyConfig(**rates)
    with pytest.raises(ValueError, match="expected a number"):
        PolicyConfig.from_mapping({"rate_high": "1.5"})
