"""What a job reports about itself: the mode that ran, every switch, who trained what."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.leader.coordinator import Coordinator
from eddl.leader.events import EventKind
from eddl.leader.history import ModeSwitch, NodeWork, WorkTally
from eddl.leader.membership import Membership, NodeProfile
from eddl.leader.scheduler import Task
from eddl.leader.store import MemoryStore, SqliteStore
from tests.unit.test_leader_support import TRAIN, Clock, float_runtime, spec, train


def _coordinator(clock: Clock, store: MemoryStore | SqliteStore) -> Coordinator:
    return Coordinator(
        store,
        membership=Membership(heartbeat_interval=1.0, now=clock),
        runtime_factory=float_runtime,
        now=clock,
        link_capacity_bps=8_000_000.0,  # 1 MB/s: a test can saturate it
    )


def _push(c: Coordinator, t: Task) -> None:
    model = c.model("job1", t.base_version)
    c.submit_update(
        t.node_id,
        t.task_id,
        train(model.params, t.indexes),
        job_id="job1",
        base_version=t.base_version,
        num_samples=t.num_samples,
    )


def _switch_to_async_then_run_out_of_epochs(c: Coordinator, clock: Clock) -> None:
    for i in range(2):
        c.join(f"w{i}", "", profile=NodeProfile(benchmark_sps=40.0))
    # min_tasks far above what one epoch makes: the policy cannot return to sync.
    policy = {"min_dwell_s": 1.0, "min_tasks": 64}
    c.submit_job(spec(aggregation="auto", rounds=10_000, max_epochs=1.0, policy=policy))
    for _ in range(3):  # the leader's link 95% busy: auto moves to async
        clock.advance(1.0)
        c.record_transfer("job1", 950_000)
        c.heartbeat("w0")
        c.heartbeat("w1")
    assert c.job_status("job1")["mode"] == "async"
    for _ in range(200):  # bounded: one epoch of 240 samples takes a few dozen tasks at most
        if c.job_status("job1")["status"] != "running":
            break
        got = [c.next_task(n) for n in ("w0", "w1")]
        clock.advance(0.5)
        for t in got:
            if isinstance(t, Task):
                _push(c, t)
        c.tick()


def _check_report(status: dict[str, object]) -> None:
    assert status["status"] == "completed"
    result = status["result"]
    assert isinstance(result, dict) and "max_epochs" in result["reason"]
    # The mode that ran at the end, with the reason it was entered: not the flush of the end.
    assert status["mode"] == "async"
    assert isinstance(status["mode_reason"], str) and "leader link" in status["mode_reason"]
    switches = status["switches"]
    assert isinstance(switches, list) and len(switches) == 1
    (only,) = (ModeSwitch.from_dict(s) for s in switches)
    assert (only.previous, only.mode, only.version) == ("sync", "async", 0)
    assert only.reason == status["mode_reason"]
    assert status["samples_trained"] == TRAIN  # one epoch, every sample once
    work = {n: NodeWork(**w) for n, w in status["work"].items()}  # type: ignore[attr-defined]
    assert set(work) == {"w0", "w1"} and all(w.tasks > 0 for w in work.values())
    assert sum(w.samples for w in work.values()) == TRAIN


def test_a_job_that_switched_to_async_ends_in_async_and_lists_the_switch() -> None:
    clock = Clock()
    c = _coordinator(clock, MemoryStore())
    _switch_to_async_then_run_out_of_epochs(c, clock)
    status = c.job_status("job1")
    _check_report(status)
    switched = [e for e in c.events("job1") if e.kind is EventKind.POLICY_SWITCHED]
    assert len(switched) == 1  # the end of the job is no switch
    rows = {r["node_id"]: r for r in c.list_nodes()}  # the finished job's counts stay
    assert {n: (r["tasks_done"], r["samples_trained"]) for n, r in rows.items()} == {
        n: (w["tasks"], w["samples"]) for n, w in status["work"].items()
    }


def test_the_report_survives_a_restarted_leader(tmp_path: Path) -> None:
    clock = Clock()
    c = _coordinator(clock, SqliteStore(tmp_path))
    _switch_to_async_then_run_out_of_epochs(c, clock)
    before = c.job_status("job1")
    del c
    again = _coordinator(clock, SqliteStore(tmp_path))
    assert again.resume() == []
    after = again.job_status("job1")  # from the store alone
    _check_report(after)
    assert after["switches"] == before["switches"] and after["work"] == before["work"]


def test_a_resumed_job_keeps_its_switches_and_counts(tmp_path: Path) -> None:
    clock = Clock()
    c = _coordinator(clock, SqliteStore(tmp_path))
    for i in range(2):
        c.join(f"w{i}", "", profile=NodeProfile(benchmark_sps=40.0))
    policy = {"min_dwell_s": 1.0, "min_tasks": 64}
    c.submit_job(
        spec(aggregation="auto", rounds=10_000, max_epochs=50.0, policy=policy, checkpoint_every=1)
    )
    for _ in range(3):
        clock.advance(1.0)
        c.record_transfer("job1", 950_000)
        c.heartbeat("w0")
    for _ in range(6):  # FedBuff's K = 3: two versions, each checkpointed
        t = c.next_task("w0")
        assert isinstance(t, Task)
        _push(c, t)
    before = c.job_status("job1")
    assert before["version"] == 2 and len(before["switches"]) == 1
    del c
    again = _coordinator(clock, SqliteStore(tmp_path))
    assert again.resume() == ["job1"]
    after = again.job_status("job1")
    assert after["switches"] == before["switches"] and after["mode"] == "async"
    assert after["work"] == before["work"] and after["samples_trained"] == before["samples_trained"]


def test_work_tally_counts_and_round_trips() -> None:
    tally = WorkTally()
    tally.record("b", 5)
    tally.record("a", 3)
    tally.record("b", 7)
    assert tally.of("b") == NodeWork(2, 12) and tally.of("nobody") == NodeWork()
    assert (tally.tasks, tally.samples) == (3, 15)
    assert list(tally.by_node()) == ["a", "b"]
    assert WorkTally.from_dict(tally.to_dict()).to_dict() == tally.to_dict()
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError):
            tally.record("a", bad)  # type: ignore[arg-type]
    assert tally.of("a") == NodeWork(1, 3)  # a refused count changes nothing
    with pytest.raises(ValueError):
        WorkTally.from_dict({"a": {"tasks": 2, "samples": 1}})


def test_mode_switch_round_trips_and_refuses_a_non_switch() -> None:
    s = ModeSwitch(12.5, 3, "sync", "async", "why")
    assert ModeSwitch.from_dict(s.to_dict()) == s
    for previous, mode in (("sync", "sync"), ("sync", "both")):
        with pytest.raises(ValueError):
            ModeSwitch.from_dict({**s.to_dict(), "previous": previous, "mode": mode})
