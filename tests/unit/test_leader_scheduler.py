"""Dynamic distribution: sizes from profiles, full coverage of every epoch, re-queues."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError
from eddl.leader.scheduler import Scheduler, Task
from tests.unit.test_leader_support import Clock


def make(clock: Clock, n: int = 1000, **kw: object) -> Scheduler:
    # probe_fraction 1: these tests set sizes through the priors (the probe has its own test)
    opts: dict[str, object] = {
        "task_seconds": 1.0,
        "min_samples": 1,
        "max_samples": 1000,
        "default_samples": 10,
        "now": clock,
        "probe_fraction": 1.0,
    }
    opts.update(kw)
    return Scheduler(n, **opts)  # type: ignore[arg-type]


def test_task_sizes_follow_the_benchmark_priors() -> None:
    s = make(Clock())
    for node, sps in (("fast", 400.0), ("mid", 200.0), ("slow", 50.0)):
        s.set_prior(node, sps)
    sizes = {n: s.assign(n).num_samples for n in ("fast", "mid", "slow", "new")}  # type: ignore[union-attr]
    assert sizes == {"fast": 400, "mid": 200, "slow": 50, "new": 10}


def test_first_task_is_a_short_probe_until_a_real_speed_is_measured() -> None:
    clock = Clock()
    s = make(clock, probe_fraction=0.25)
    s.set_prior("a", 400.0)  # the benchmark says 400/s; the device really does 100/s
    probe = s.assign("a")
    assert probe is not None and probe.num_samples == 100
    assert not s.measured("a")
    clock.advance(1.0)
    s.complete(probe.task_id)
    assert s.measured("a") and s.size_for("a") == 100  # the measurement replaced the prior
    with pytest.raises(ValueError):
        make(clock, probe_fraction=0.0)


def test_measured_task_times_override_the_prior() -> None:
    clock = Clock()
    s = make(clock)
    s.set_prior("a", 100.0)
    for _ in range(6):  # the device really runs 4x slower than its benchmark said
        task = s.assign("a")
        assert task is not None
        clock.advance(task.num_samples / 25.0)
        s.complete(task.task_id)
    assert s.size_for("a") == pytest.approx(25, abs=2)


def test_a_fixed_cost_per_task_leaves_less_time_for_samples() -> None:
    clock = Clock()
    s = make(clock)
    s.set_prior("serial", 100.0)
    task = s.assign("serial")
    assert task is not None and task.num_samples == 100
    clock.advance(1.6)
    # 100 samples took 1.0 s of training plus 0.6 s moving the model in and the update out.
    s.complete(task.task_id, seconds=1.0, overhead=0.6)
    assert s.overhead("serial") == pytest.approx(0.6)
    assert s.size_for("serial") == 40  # 0.4 s of the 1 s target left for samples
    # Transfers longer than the target: a quarter of the target still goes to training.
    task = s.assign("serial")
    assert task is not None
    s.complete(task.task_id, seconds=task.num_samples / 100.0, overhead=5.0)
    assert s.size_for("serial") == 25
    smoothed = 0.7 * 0.6 + 0.3 * 5.0
    assert s.overhead("serial") == pytest.approx(smoothed)
    # Garbage never moves the estimate (the servicer refuses it before it gets here).
    task = s.assign("serial")
    assert task is not None
    s.complete(task.task_id, seconds=0.25, overhead=float("nan"))
    assert s.overhead("serial") == pytest.approx(smoothed)
    with pytest.raises(ValueError):
        make(clock, min_compute_fraction=0.0)


def test_sizes_are_clamped_and_rounded_to_the_granularity() -> None:
    s = make(Clock(), min_samples=8, max_samples=64, default_samples=16, granularity=8)
    s.set_prior("huge", 1e6)
    s.set_prior("tiny", 0.5)
    s.set_prior("odd", 30.0)
    assert s.size_for("huge") == 64 and s.size_for("tiny") == 8 and s.size_for("odd") == 24
    assert s.size_for("odd", seconds=0.5) == 8


def test_a_task_holds_the_indexes_of_its_range_of_the_epoch_order() -> None:
    s = make(Clock(), n=50, seed=3)
    task = s.assign("a")
    assert task is not None
    np.testing.assert_array_equal(task.indexes, s.order(0)[0:10])
    assert sorted(s.order(0).tolist()) == list(range(50))
    assert not np.array_equal(s.order(0), s.order(1))
    np.testing.assert_array_equal(make(Clock(), n=50, seed=3).order(1), s.order(1))


def test_expired_workers_task_goes_back_first_and_is_not_lost() -> None:
    s = make(Clock(), n=100)
    s.set_prior("a", 30.0)
    s.set_prior("b", 20.0)
    ta, tb = s.assign("a"), s.assign("b")
    assert ta is not None and tb is not None
    taken = s.take_back_node("a", "expired")
    assert [t.task_id for t in taken] == [ta.task_id]
    again = s.assign("b")
    assert again is not None  # b wants 20: the front of a's 30 positions
    assert (again.range.start, again.range.stop) == (0, 20)
    rest = s.assign("b")
    assert rest is not None and (rest.range.start, rest.range.stop) == (20, 30)
    with pytest.raises(DuplicateUpdateError, match="taken back"):
        s.complete(ta.task_id)


def test_complete_twice_or_unknown_is_refused() -> None:
    s = make(Clock())
    task = s.assign("a")
    assert task is not None
    s.complete(task.task_id)
    with pytest.raises(DuplicateUpdateError, match="done"):
        s.complete(task.task_id)
    with pytest.raises(UnknownTaskError):
        s.complete("t-never")


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=40),
    drops=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_every_epoch_trains_every_index_exactly_once(sizes: list[int], drops: list[bool]) -> None:
    """Whatever the task sizes and take-backs, the finished work of each completed epoch is a
    permutation of the training set: nothing lost, nothing twice."""
    clock = Clock()
    n = 97
    s = make(clock, n=n, limit_epochs=2)
    done: Counter[tuple[int, int]] = Counter()
    for i in range(10_000):
        node = f"w{i % 3}"
        s.set_prior(node, float(sizes[i % len(sizes)]))
        task = s.assign(node)
        if task is None:
            break
        clock.advance(1.0)
        if drops[i % len(drops)] and i % 4 == 0:
            s.take_back(task.task_id, "test")
            continue
        s.complete(task.task_id)
        for idx in task.indexes:
            done[(task.range.epoch, int(idx))] += 1
    assert s.exhausted and s.completed_epochs == 2 and s.epochs == pytest.approx(2.0)
    assert set(done.values()) == {1}
    assert sorted(done) == [(e, i) for e in range(2) for i in range(n)]


def test_checkpoint_turns_in_flight_work_into_todo() -> None:
    clock = Clock()
    s = make(clock, n=60)
    s.set_prior("a", 25.0)
    first = s.assign("a")
    second = s.assign("a")
    assert first is not None and second is not None
    s.complete(first.task_id)
    state = s.checkpoint()
    fresh = make(clock, n=60)
    fresh.restore(state)
    assert fresh.samples_done == 25 and fresh.in_flight() == []
    fresh.set_prior("b", 100.0)
    redo = fresh.assign("b")
    assert redo is not None and redo.range == second.range  # the lost task comes first
    nxt = fresh.assign("b")
    assert nxt is not None and (nxt.range.start, nxt.range.stop) == (50, 60)


def test_epoch_limit_stops_handing_out() -> None:
    s = make(Clock(), n=30, limit_epochs=1.5)
    s.set_prior("a", 20.0)
    got: list[Task] = []
    while (t := s.assign("a")) is not None and len(got) < 100:
        got.append(t)
    assert sum(t.num_samples for t in got) == 45
    exhausted_early = s.exhausted
    assert not exhausted_early  # handed out, but not done yet
    for t in got:
        s.complete(t.task_id)
    assert s.exhausted and s.completed_epochs == 1


def test_static_shards_are_equal_and_a_finished_worker_waits() -> None:
    s = make(Clock(), n=90, distribution="static", default_samples=15)
    s.set_static_workers(["a", "b", "c"])
    s.set_prior("a", 1000.0)  # ignored: static shards do not look at speed
    tasks = {n: s.assign(n) for n in ("a", "b", "c")}
    assert {t.num_samples for t in tasks.values() if t} == {15}
    assert [(t.range.start, t.range.stop) for t in tasks.values() if t] == [
        (0, 15),
        (30, 45),
        (60, 75),
    ]
    a2 = s.assign("a")
    assert a2 is not None and (a2.range.start, a2.range.stop) == (15, 30)
    assert s.assign("a") is None  # a's shard is used up; b and c still hold theirs
    for t in (*tasks.values(), a2):
        assert t is not None
        s.complete(t.task_id)
    # the shards of b and c move to the shared queue when they leave
    s.take_back_node("b", "left")
    nxt = s.assign("a")
    assert nxt is not None and nxt.range.start == 45


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(0)
    with pytest.raises(ValueError):
        Scheduler(10, min_samples=5, default_samples=4)
    with pytest.raises(ValueError):
        Scheduler(10, distribution="random")  # type: ignore[arg-type]


def _run_to_the_end(s: Scheduler, clock: Clock, speeds: dict[str, float]) -> dict[str, float]:
    """Event loop: each worker asks again as soon as its task is done; returns when each
    worker finished its last task (virtual seconds)."""
    free = dict.fromkeys(speeds, 0.0)
    last: dict[str, float] = {}
    held: dict[str, Task] = {}
    for _ in range(10_000):  # bounded
        if s.exhausted:
            break
        node = min(free, key=lambda n: (free[n], n))
        clock.t = free[node]
        if node in held:
            s.complete(held.pop(node).task_id)
            last[node] = clock.t
        task = s.assign(node)
        if task is None:
            free[node] = float("inf")
            continue
        held[node] = task
        free[node] = clock.t + task.num_samples / speeds[node]
    return last


def test_tasks_shrink_at_the_end_so_the_last_ones_finish_together() -> None:
    speeds = {"a": 100.0, "b": 100.0, "c": 25.0}
    ideal = 1000 / sum(speeds.values())
    clock = Clock(0.0)
    s = make(clock, n=1000, limit_epochs=1.0, task_seconds=1.0)
    s.set_static_workers(list(speeds))
    for node, sps in speeds.items():
        s.set_prior(node, sps)
    last = _run_to_the_end(s, clock, speeds)
    assert s.completed_epochs == 1
    assert max(last.values()) - min(last.values()) < 0.25  # they finish together
    assert max(last.values()) < ideal + 0.25
    # Without an epoch limit there is no end to balance: tasks keep their full size.
    t = make(Clock(0.0), n=1000, task_seconds=1.0)
    t.set_static_workers(list(speeds))
    t.set_prior("a", 100.0)
    t.set_prior("b", 100.0)
    sizes = [t.assign("a").num_samples for _ in range(10)]  # type: ignore[union-attr]
    assert sizes == [100] * 10


def test_a_worker_busy_with_a_long_task_is_counted_when_shrinking_the_tail() -> None:
    clock = Clock(0.0)
    s = make(clock, n=300, limit_epochs=1.0, task_seconds=1.0)
    s.set_static_workers(["a", "b"])
    s.set_prior("a", 100.0)
    s.set_prior("b", 100.0)
    first = s.assign("b")  # b is busy for 1 s with 100 samples
    assert first is not None and first.num_samples == 100
    # 200 left: a alone would take 2 s; with b free at 1 s, both end at 1.5 s: a takes 150.
    # That is above a's 1 s task (100), so a still gets its usual size...
    assert s.assign("a").num_samples == 100  # type: ignore[union-attr]
    clock.t = 1.0
    s.complete(first.task_id)
    # ...then 100 left, a busy until 1.0 + 0 (its task ends at 1.0): b gets half of it.
    assert s.assign("b").num_samples == 50  # type: ignore[union-attr]
