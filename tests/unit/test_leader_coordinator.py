"""The coordinator end to end, without gRPC: real numpy training, a hand-driven clock."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eddl.leader.coordinator import DEPARTED_RETENTION_S, Coordinator
from eddl.leader.errors import (
    DuplicateUpdateError,
    InvalidArgumentError,
    JobNotActiveError,
    JobSpecError,
    JoinRefusedError,
    LeaderError,
    NodeExpiredError,
    StaleTermError,
    UnknownJobError,
    UnknownNodeError,
    UnknownTaskError,
    UpdateRejectedError,
)
from eddl.leader.events import Event, EventKind
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.run import Wait
from eddl.leader.runtime import JobRuntime
from eddl.leader.scheduler import Task
from eddl.leader.store import MemoryStore, SqliteStore
from tests.unit.test_leader_support import (
    Clock,
    RuntimeFn,
    float_runtime,
    layered_runtime,
    spec,
    train,
)


def coordinator(
    clock: Clock,
    store: MemoryStore | SqliteStore | None = None,
    runtime: RuntimeFn = float_runtime,
    term: int = 1,
) -> Coordinator:
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    return Coordinator(
        store or MemoryStore(),
        membership=membership,
        runtime_factory=runtime,
        now=clock,
        term=term,
    )


def join(c: Coordinator, *speeds: float) -> list[str]:
    names = []
    for i, sps in enumerate(speeds):
        c.join(f"w{i}", "tok", profile=NodeProfile(benchmark_sps=sps))
        names.append(f"w{i}")
    return names


def task(c: Coordinator, node: str) -> Task:
    got = c.next_task(node)
    assert isinstance(got, Task), got
    return got


def push(c: Coordinator, t: Task, job: str = "job1") -> str:
    params = train(
        c.model(job).params
        if t.base_version == c.model(job).version
        else c.model(job, t.base_version).params,
        t.indexes,
    )
    return c.submit_update(
        t.node_id,
        t.task_id,
        params,
        job_id=job,
        base_version=t.base_version,
        num_samples=t.num_samples,
    ).outcome


def sync_round(c: Coordinator, clock: Clock, nodes: list[str], job: str = "job1") -> None:
    tasks = [task(c, n) for n in nodes]
    clock.advance(0.5)
    for t in tasks:
        push(c, t, job)


def kinds(c: Coordinator, job: str = "job1") -> list[EventKind]:
    return [e.kind for e in c.events(job)]


def test_sync_job_trains_to_its_rounds_and_stores_every_version() -> None:
    clock = Clock()
    store = MemoryStore()
    c = coordinator(clock, store)
    nodes = join(c, 40, 40, 20)
    status = c.submit_job(spec(rounds=12))
    assert status["status"] == "running" and status["version"] == 0
    for _ in range(12):
        sync_round(c, clock, nodes)
    initial = c.model("job1", 0)  # pruned from the store, rebuilt from the seed
    assert initial.version == 0 and not initial.params["W0"].any()
    assert store.versions("job1") == [10, 11, 12]
    assert c.model("job1", 11).version == 11
    with pytest.raises(JobNotActiveError, match="no stored version 2"):
        c.model("job1", 2)  # neither kept in memory (the last 9) nor in the store
    st = c.job_status("job1")
    assert st["status"] == "completed" and st["version"] == 12
    assert st["accuracy"] > 0.9  # it really learned
    assert store.job("job1").status == "completed"  # type: ignore[union-attr]
    assert store.versions("job1")[-1] == 12
    versions = [e.data["version"] for e in c.events("job1") if e.kind is EventKind.MODEL_UPDATED]
    assert versions == list(range(1, 13))
    assert isinstance(c.next_task("w0"), Wait)


def test_task_sizes_follow_worker_speed() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 80, 40, 20)
    c.submit_job(spec())
    probes = [task(c, n) for n in ("w0", "w1", "w2")]
    # first a probe of a quarter of the target time at the benchmark speed ...
    assert [t.num_samples for t in probes] == [20, 10, 5]
    clock.advance(0.25)
    for t in probes:
        push(c, t)
    # ... then full tasks at the measured speed
    assert [task(c, n).num_samples for n in ("w0", "w1", "w2")] == [80, 40, 20]


def test_each_worker_gets_one_task_per_sync_round_and_retries_get_the_same() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40)
    c.submit_job(spec())
    t0 = task(c, "w0")
    assert task(c, "w0").task_id == t0.task_id  # a retried GetTask, not a second task
    push(c, t0)
    wait = c.next_task("w0")
    assert isinstance(wait, Wait) and "round 0" in wait.reason and not wait.done
    push(c, task(c, "w1"))
    assert task(c, "w0").base_version == 1


@pytest.mark.parametrize("aggregation", ["sync", "async"])
def test_a_task_asked_for_ahead_of_its_push_waits_for_the_update_then_comes_after_it(
    aggregation: str,
) -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40)
    c.submit_job(spec(aggregation=aggregation))
    t0 = task(c, "w0")
    ahead = c.next_task("w0", after_task=t0.task_id)
    assert isinstance(ahead, Wait) and t0.task_id in ahead.reason and not ahead.done
    assert task(c, "w0").task_id == t0.task_id  # a plain retry still gets the task held
    push(c, t0)
    t1 = task(c, "w0") if aggregation == "sync" else c.next_task("w0", after_task=t0.task_id)
    assert isinstance(t1, Task) and t1.task_id != t0.task_id
    # It starts from the model as the update left it (sync: the round's new version).
    assert t1.base_version == c.job_status("job1")["version"] == (1 if aggregation == "sync" else 0)


def test_a_task_asked_for_ahead_of_a_refused_push_is_the_next_one() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40)
    c.submit_job(spec(aggregation="async"))
    t0 = task(c, "w0")
    assert isinstance(c.next_task("w0", after_task=t0.task_id), Wait)
    c.fail_task("w0", t0.task_id, "boom", job_id="job1", base_version=t0.base_version)
    t1 = c.next_task("w0", after_task=t0.task_id)
    assert isinstance(t1, Task) and t1.task_id != t0.task_id
    assert set(t1.indexes) >= set(t0.indexes)  # the failed task's data came back first


def test_async_job_versions_without_rounds() -> None:
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 40, 40, 40)
    c.submit_job(
        spec(aggregation="async", async_rule="fedbuff", async_params={"buffer_size": 2}, rounds=6)
    )
    outcomes = []
    for _ in range(20):
        for n in nodes:
            if c.job_status("job1")["status"] != "running":
                break
            t = task(c, n)
            clock.advance(0.3)
            outcomes.append(push(c, t))
    assert outcomes[:2] == ["buffered", "aggregated"]
    st = c.job_status("job1")
    assert st["status"] == "completed" and st["version"] == 6 and st["mode"] == "async"
    assert st["aggregation"]["rule"]["name"] == "fedbuff"


def test_expired_worker_task_goes_back_at_once_and_its_late_update_is_refused() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40, 40)
    c.submit_job(spec())
    t0, t1, t2 = task(c, "w0"), task(c, "w1"), task(c, "w2")
    for _ in range(3):  # w0 and w1 keep beating, w2 falls silent
        clock.advance(1.0)
        c.heartbeat("w0")
        c.heartbeat("w1")
    assert [n["alive"] for n in c.list_nodes()] == [True, True, False]
    assert EventKind.NODE_EXPIRED in kinds(c) and EventKind.TASK_REQUEUED in kinds(c)
    push(c, t0)
    assert push(c, t1) == "aggregated"  # the round did not wait for the dead worker
    before = c.model("job1")
    late = train(before.params, t2.indexes)
    with pytest.raises(NodeExpiredError, match="join again"):
        c.submit_update("w2", t2.task_id, late, job_id="job1", base_version=0)
    assert c.model("job1").version == before.version
    # the dead worker's range is the next one handed out, to a live worker
    again = task(c, "w0")
    assert again.range.epoch == t2.range.epoch and again.range.start == t2.range.start
    # and after rejoining, the old task is still void
    c.join("w2", "tok")
    with pytest.raises(DuplicateUpdateError, match="taken back"):
        c.submit_update("w2", t2.task_id, late, job_id="job1", base_version=0)


def test_leave_requeues_and_a_newcomer_gets_work_at_once() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40)
    c.submit_job(spec())
    t1 = task(c, "w1")
    assert c.leave("w1") == 1
    assert EventKind.NODE_LEFT in kinds(c)
    with pytest.raises(UnknownNodeError):
        c.next_task("w1")
    c.join("late", "tok", profile=NodeProfile(benchmark_sps=40))
    got = task(c, "late")  # mid-job, mid-round: work without waiting for anything
    assert got.range.start == t1.range.start


def test_update_after_round_deadline_is_folded_into_the_next_round_as_stale() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40)
    c.submit_job(spec(round_deadline=3.0))
    t0, t1 = task(c, "w0"), task(c, "w1")
    push(c, t0)
    for _ in range(4):  # both stay alive; w1 is merely slow
        clock.advance(0.9)
        c.heartbeat("w0")
        c.heartbeat("w1")
    c.tick()  # deadline: round 0 closes with w0's update alone
    assert c.model("job1").version == 1
    closed = [e for e in c.events("job1") if e.kind is EventKind.ROUND_CLOSED][-1]
    assert closed.data["reason"] == "round deadline" and closed.data["late"] == 1
    assert push(c, t1) == "stale-folded"
    t0b = task(c, "w0")
    assert t0b.base_version == 1
    assert push(c, t0b) == "round"  # round 1 waits (a while) for w1 to ask
    assert push(c, task(c, "w1")) == "aggregated"
    updated = [e for e in c.events("job1") if e.kind is EventKind.MODEL_UPDATED][-1]
    assert updated.data["updates"] == 3  # w0's and w1's fresh updates + w1's stale one


def test_a_task_out_far_too_long_is_taken_back() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40)
    c.submit_job(spec(round_deadline=2.0))
    t0 = task(c, "w0")
    clock.advance(1.0)
    c.heartbeat("w0")
    hb = c.heartbeat("w0")
    assert not hb.cancel_task
    for _ in range(5):
        clock.advance(1.0)
        hb = c.heartbeat("w0")
    with pytest.raises(DuplicateUpdateError, match="taken back"):
        push(c, t0)
    assert c.model("job1").version == 0


def test_duplicate_and_misdirected_updates_are_refused() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40)
    c.submit_job(spec())
    t0, t1 = task(c, "w0"), task(c, "w1")
    p = train(c.model("job1").params, t0.indexes)
    with pytest.raises(UnknownTaskError, match="not handed to node 'w1'"):
        c.submit_update("w1", t0.task_id, p, job_id="job1", base_version=0)
    c.submit_update("w0", t0.task_id, p, job_id="job1", base_version=0)
    # The same (node, task) again - a re-sent update - is acknowledged, not counted twice.
    again = c.submit_update("w0", t0.task_id, p, job_id="job1", base_version=0)
    assert again.outcome == "duplicate" and again.version == 0
    with pytest.raises(UnknownTaskError):
        c.submit_update("w0", "job1:nope", p, job_id="job1", base_version=0)
    with pytest.raises(UnknownJobError):
        c.submit_update("w1", t1.task_id, p, job_id="other", base_version=0)
    with pytest.raises(StaleTermError):
        c.submit_update("w1", t1.task_id, p, job_id="job1", base_version=0, term=7)
    assert c.job_status("job1")["round"] == {"version": 0, "tasks": 2, "back": 1}


def test_a_resent_update_that_ended_the_job_is_acknowledged_not_refused() -> None:
    # The push that ends a job can lose its reply; the worker sends it again. The leader says
    # it is counted (once), as for a re-sent update of a running job.
    clock = Clock()
    c = coordinator(clock)
    join(c, 40)
    c.submit_job(spec(distribution="static", default_task_samples=40, max_epochs=1.0, rounds=100))
    last = None
    for _ in range(100):
        if c.job_status("job1")["status"] != "running":
            break
        last = task(c, "w0")
        push(c, last)
    st = c.job_status("job1")
    assert st["status"] == "completed" and last is not None
    before = (st["samples_trained"], c.model("job1").version)
    p = train(c.model("job1").params, last.indexes)
    again = c.submit_update("w0", last.task_id, p, job_id="job1", base_version=last.base_version)
    assert again.outcome == "duplicate" and again.version == before[1]
    after = c.job_status("job1")
    assert (after["samples_trained"], c.model("job1").version) == before
    # Another node's update, or a task the job did not count, is still refused.
    c.join("w9", "tok", profile=NodeProfile(benchmark_sps=40))
    with pytest.raises(JobNotActiveError):
        c.submit_update("w9", last.task_id, p, job_id="job1", base_version=last.base_version)


@pytest.mark.parametrize(
    ("mutate", "kw", "match"),
    [
        (lambda p: {**p, "W0": p["W0"].astype(np.float64)}, {}, "dtype"),
        (lambda p: {**p, "b0": np.zeros(7, np.float32)}, {}, "shape"),
        (lambda p: {"W0": p["W0"]}, {}, "missing"),
        (lambda p: {**p, "extra": p["b0"]}, {}, "unknown"),
        (lambda p: p, {"num_samples": 3}, "holds"),
        (lambda p: p, {"base_version": 1}, "starts from version 0"),
        (lambda p: p, {"seconds": float("inf")}, "finite"),
    ],
)
def test_bad_updates_are_refused_and_change_nothing(mutate, kw, match) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40)
    c.submit_job(spec())
    t0 = task(c, "w0")
    good = train(c.model("job1").params, t0.indexes)
    before = c.job_status("job1")
    args = {"job_id": "job1", "base_version": 0, **kw}
    with pytest.raises(UpdateRejectedError, match=match):
        c.submit_update("w0", t0.task_id, mutate(good), **args)
    assert c.job_status("job1") == before
    # the task is still the worker's: a corrected update goes through
    assert c.submit_update("w0", t0.task_id, good, job_id="job1", base_version=0).outcome == "round"


def test_bad_jobs_and_tokens_are_refused_before_anything_is_stored() -> None:
    clock = Clock()
    store = MemoryStore()
    c = coordinator(clock, store)
    with pytest.raises(JoinRefusedError):
        c.join("w0", "wrong")
    with pytest.raises(InvalidArgumentError):
        c.join("", "tok")
    with pytest.raises(JobSpecError, match="unknown key"):
        c.submit_job({"rounds": 3, "epochz": 1})
    with pytest.raises(JobSpecError, match="takes no parameter"):
        c.submit_job(spec(async_rule="fedasync", async_params={"buffer_size": 2}))

    def broken(s: JobSpec):  # type: ignore[no-untyped-def]
        raise JobSpecError("job.dataset: no dataset 'nope'")

    c2 = coordinator(clock, store, runtime=broken)
    with pytest.raises(JobSpecError, match="nope"):
        c2.submit_job(spec(dataset="nope"))
    assert store.jobs() == [] and c.membership.nodes() == []
    c.submit_job(spec())
    with pytest.raises(JobSpecError, match="already taken"):
        c.submit_job(spec())


def test_jobs_queue_and_cancel() -> None:
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 40)
    c.submit_job(spec(job_id="a", rounds=2))
    assert c.submit_job(spec(job_id="b", rounds=1))["status"] == "queued"
    queued = c.next_task("w0", job_id="b")
    assert isinstance(queued, Wait) and not queued.done and "queued" in queued.reason
    c.submit_job(spec(job_id="c", rounds=1))
    c.cancel_job("c")
    sync_round(c, clock, nodes, "a")
    c.cancel_job("a")
    assert c.job_status("a")["status"] == "cancelled"
    assert c.job_status()["job_id"] == "b"  # the next job started at once
    sync_round(c, clock, nodes, "b")
    assert [j["status"] for j in c.jobs()] == ["cancelled", "completed", "cancelled"]
    over = c.next_task("w0", job_id="a")
    assert isinstance(over, Wait) and over.done and "cancelled" in over.reason
    with pytest.raises(JobNotActiveError):
        c.cancel_job("a")
    with pytest.raises(UnknownJobError):
        c.cancel_job("zzz")
    with pytest.raises(UnknownJobError):
        c.job_status("zzz")


def test_auto_switches_to_async_under_a_straggler_and_says_why() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 40, 40, 40)
    policy = {"window_s": 30.0, "min_tasks": 4, "min_dwell_s": 5.0}
    c.submit_job(spec(aggregation="auto", rounds=40, policy=policy, round_deadline=20.0))
    seen: list[Event] = []
    c.subscribe("job1", seen.append)
    for _ in range(4):  # w3 turns into a 4x straggler; its estimate has not caught up yet
        tasks = [task(c, n) for n in ("w0", "w1", "w2", "w3")]
        clock.advance(1.0)
        for t in tasks[:3]:
            push(c, t)
        for _ in range(3):  # everyone stays alive while w3 finishes
            clock.advance(1.0)
            for n in ("w0", "w1", "w2", "w3"):
                c.heartbeat(n)
        push(c, tasks[3])
        c.tick()
        if c.job_status("job1")["mode"] == "async":
            break
    st = c.job_status("job1")
    assert st["mode"] == "async" and "spread" in st["mode_reason"]
    switch = [e for e in seen if e.kind is EventKind.POLICY_SWITCHED]
    assert len(switch) == 1 and switch[0].data["previous"] == "sync"


def test_single_layer_jobs_assign_layers_and_accept_only_that_layer() -> None:
    clock = Clock()
    c = coordinator(clock, runtime=layered_runtime)
    join(c, 40, 40)
    c.submit_job(spec(algorithm="tifed-single"))
    t0, t1 = task(c, "w0"), task(c, "w1")
    assert (t0.layer, t1.layer) == (0, 1)
    model = c.model("job1").params
    with pytest.raises(UpdateRejectedError, match="trains layer 0"):
        c.submit_update("w0", t0.task_id, model, job_id="job1", base_version=0)
    c.submit_update(
        "w0",
        t0.task_id,
        {"W0": model["W0"] + 4, "b0": model["b0"] + 4},
        job_id="job1",
        base_version=0,
    )
    c.submit_update(
        "w1",
        t1.task_id,
        {"W1": model["W1"] - 2, "b1": model["b1"] - 2},
        job_id="job1",
        base_version=0,
    )
    new = c.model("job1").params
    assert int(new["W0"][0, 0]) == 4 and int(new["W1"][0, 0]) == -2


def test_samples_by_index_are_served_and_bad_indexes_refused() -> None:
    clock = Clock()
    c = coordinator(clock)
    c.submit_job(spec())
    x, y = c.samples("job1", np.array([0, 5, 7]))
    assert x.shape == (3, 6) and y.tolist() == [0, 2, 1]
    for bad in (np.array([-1]), np.array([240]), np.array([[1]]), np.array([0.5])):
        with pytest.raises(InvalidArgumentError):
            c.samples("job1", bad)


def test_killed_leader_resumes_from_its_last_version(tmp_path: Path) -> None:
    """Kill (drop without closing) a leader mid-job; a new one resumes where it stopped."""
    clock = Clock()
    c = coordinator(clock, SqliteStore(tmp_path))
    nodes = join(c, 40, 40)
    c.submit_job(spec(rounds=8))
    for _ in range(3):
        sync_round(c, clock, nodes)
    in_flight = task(c, "w0")  # lost with the leader
    done_before = c.job_status("job1")["epochs"]
    last_seq = c.events("job1")[-1].seq
    del c  # no close, no goodbye: the SQLite file is all that survives

    c2 = coordinator(clock, SqliteStore(tmp_path), term=1)
    assert c2.term == 2  # raised past the term the killed leader held
    assert c2.resume() == ["job1"]
    st = c2.job_status("job1")
    assert st["version"] == 3 and st["epochs"] == done_before and st["status"] == "running"
    resumed = c2.events("job1")
    assert resumed[-1].kind is EventKind.JOB_RESUMED and resumed[-1].seq == last_seq + 1
    nodes = join(c2, 40, 40)
    first = task(c2, "w0")
    # the lost task's data is redone first (in pieces sized for the new leader's estimates)
    assert (first.range.epoch, first.range.start) == (in_flight.range.epoch, in_flight.range.start)
    with pytest.raises(StaleTermError):
        c2.next_task("w1", term=1)
    push(c2, first)
    push(c2, task(c2, "w1"))
    for _ in range(4):
        sync_round(c2, clock, nodes)
    assert c2.job_status("job1")["status"] == "completed"
    versions = [e.data["version"] for e in c2.events("job1") if e.kind is EventKind.MODEL_UPDATED]
    assert versions == list(range(1, 9))  # none lost, none repeated


def test_static_distribution_gives_equal_shards() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 100, 10)
    c.submit_job(spec(distribution="static", default_task_samples=40, max_epochs=1.0, rounds=100))
    sizes = [task(c, n).num_samples for n in ("w0", "w1")]
    assert sizes == [40, 40]
    c.cancel_job("job1")
    # One epoch with a fast and a slow worker: the fast one runs out of its shard and waits;
    # rounds close as soon as the slow one is back (nobody waits for a worker with no data).
    c.submit_job(
        spec(
            job_id="job2",
            distribution="static",
            default_task_samples=40,
            max_epochs=1.0,
            rounds=100,
        )
    )
    rounds = 0
    for _ in range(10):
        if c.job_status("job2")["status"] != "running":
            break
        got = [c.next_task(n) for n in ("w0", "w1")]
        for t in got:
            if isinstance(t, Task):
                push(c, t, "job2")
        rounds += 1
    st = c.job_status("job2")
    assert st["status"] == "completed" and st["epochs"] == 1.0 and rounds == 3
    # A worker that joins mid-epoch has no shard: it waits, and no round waits for it.
    c.submit_job(
        spec(
            job_id="job3",
            distribution="static",
            default_task_samples=40,
            max_epochs=1.0,
            rounds=100,
        )
    )
    t0, t1 = task(c, "w0"), task(c, "w1")
    c.join("w2", "tok")
    assert isinstance(c.next_task("w2"), Wait)
    push(c, t0, "job3")
    assert push(c, t1, "job3") == "aggregated"


def test_a_job_that_cannot_be_rebuilt_fails_without_blocking_the_queue(tmp_path: Path) -> None:
    clock = Clock()
    c = coordinator(clock, SqliteStore(tmp_path))
    c.submit_job(spec(job_id="a"))
    c.submit_job(spec(job_id="b"))
    del c

    def picky(s: JobSpec) -> JobRuntime:
        if s.job_id == "a":
            raise JobSpecError("job.dataset: the data is gone")
        return float_runtime(s)

    c2 = coordinator(clock, SqliteStore(tmp_path), runtime=picky)
    assert c2.resume() == []
    assert c2.job_status("a")["status"] == "failed"
    assert "data is gone" in c2.job_status("a")["result"]["reason"]
    assert c2.job_status("b")["status"] == "running"  # queued b started in a's place


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["ask", "push", "beat", "silence", "leave", "rejoin", "wait"]),
        st.integers(0, 2),
    ),
    max_size=60,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, mode=st.sampled_from(["sync", "async", "auto"]))
def test_no_sample_is_lost_or_trained_twice_whatever_happens(
    actions: list[tuple[str, int]], mode: str
) -> None:
    """Random joins, leaves, silences (expiry), late pushes and deadlines, then a calm drain:
    the job ends with every index of every epoch in exactly one accepted update, and model
    versions 1..N each made once."""
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 30, 20, 10)
    c.submit_job(
        spec(
            aggregation=mode,
            rounds=10_000,
            max_epochs=2.0,
            round_deadline=3.0,
            async_params={"buffer_size": 2} if mode != "sync" else {},
        )
    )
    held: dict[str, Task] = {}
    trained: Counter[tuple[int, int]] = Counter()

    def try_push(n: str) -> None:
        t = held.pop(n, None)
        if t is None:
            return
        try:
            push(c, t)
        except (LeaderError, JobNotActiveError):
            return  # refused: the data was (or will be) handed out again
        trained.update((t.range.epoch, int(i)) for i in t.indexes)

    def ask(n: str) -> None:
        try:
            got = c.next_task(n)
        except LeaderError:
            return
        if isinstance(got, Task):
            held[n] = got

    for action, i in actions:
        n = nodes[i]
        if action == "ask":
            ask(n)
        elif action == "push":
            try_push(n)
        elif action == "beat":
            with contextlib.suppress(LeaderError):
                c.heartbeat(n)
        elif action == "silence":  # everyone else beats; n does not
            for _ in range(3):
                clock.advance(1.0)
                for m in nodes:
                    if m != n:
                        with contextlib.suppress(LeaderError):
                            c.heartbeat(m)
        elif action == "leave":
            with contextlib.suppress(LeaderError):
                c.leave(n)
        elif action == "rejoin":
            c.join(n, "tok", profile=NodeProfile(benchmark_sps=10.0 * (3 - i)))
        else:
            clock.advance(0.5)
            c.tick()
    for n in nodes:  # calm: everybody (re)joins and works until the job is over
        c.join(n, "tok", profile=NodeProfile(benchmark_sps=10.0 * (3 - nodes.index(n))))
    for _ in range(2000):
        if c.job_status("job1")["status"] != "running":
            break
        for n in nodes:
            ask(n)
        clock.advance(0.5)
        for n in nodes:
            try_push(n)
            c.heartbeat(n)
    status = c.job_status("job1")
    assert status["status"] == "completed" and "epochs" in status["result"]["reason"]
    assert set(trained.values()) == {1}
    assert sorted(trained) == [(e, i) for e in range(2) for i in range(240)]
    versions = [e.data["version"] for e in c.events("job1") if e.kind is EventKind.MODEL_UPDATED]
    assert versions == list(range(1, status["version"] + 1))


def test_a_saturated_leader_link_switches_auto_to_async() -> None:
    clock = Clock()
    membership = Membership(heartbeat_interval=1.0, now=clock)
    c = Coordinator(
        MemoryStore(),
        membership=membership,
        runtime_factory=float_runtime,
        now=clock,
        link_capacity_bps=8_000_000.0,
    )  # 1 MB/s
    join(c, 40)
    c.submit_job(spec(aggregation="auto", policy={"min_dwell_s": 1.0}))
    for _ in range(3):
        clock.advance(1.0)
        c.record_transfer("job1", 950_000)  # 95% of the link, every second
        c.heartbeat("w0")
    st = c.job_status("job1")
    assert st["mode"] == "async" and "leader link" in st["mode_reason"]
    c.record_transfer("nope", 10)  # another job's bytes are ignored, not an error


def test_status_nodes_and_cancelled_task_are_reported() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40, 20)
    c.submit_job(spec(aggregation="auto"))
    t0 = task(c, "w0")
    rows = {r["node_id"]: r for r in c.list_nodes()}
    assert rows["w0"]["task"] == t0.task_id and rows["w1"]["task"] is None
    assert rows["w0"]["samples_per_second"] == pytest.approx(40.0)
    st = c.job_status()
    assert st["mode"] == "sync" and st["mode_reason"].startswith("start synchronous")
    assert st["policy"]["tasks"] == 0 and st["workers"] == 2
    assert st["aggregation"]["rule"]["name"] == "fedavg"
    assert not c.heartbeat("w0").cancel_task
    c.cancel_job("job1")
    reply = c.heartbeat("w0")
    assert reply.cancel_task and reply.job_id is None
    with pytest.raises(JobNotActiveError):
        c.submit_update("w0", t0.task_id, c.model("job1").params, job_id="job1", base_version=0)


def test_a_finished_jobs_stale_task_does_not_cancel_the_next_jobs_task() -> None:
    clock = Clock()
    c = coordinator(clock)
    join(c, 40)
    c.submit_job(spec(job_id="a", rounds=5))
    c.submit_job(spec(job_id="b", rounds=5))
    stale = task(c, "w0")  # held when job a ends
    c.cancel_job("a")
    assert c.heartbeat("w0").cancel_task  # the worker must drop job a's task
    fresh = task(c, "w0")
    assert fresh.task_id != stale.task_id and c.job_status()["job_id"] == "b"
    # Job a still lists the old task; it must not void the task of the running job b.
    for _ in range(3):
        clock.advance(0.2)
        reply = c.heartbeat("w0")
        assert not reply.cancel_task and reply.job_id == "b"


def test_the_tick_forgets_nodes_long_gone_in_memory_and_in_the_store() -> None:
    clock = Clock()
    store = MemoryStore()
    c = coordinator(clock, store)
    join(c, 10.0, 10.0)
    c.leave("w0")
    c.tick()
    assert {m.node_id: m.status for m in store.members()} == {"w0": "left", "w1": "alive"}
    clock.advance(DEPARTED_RETENTION_S + 1)
    c.heartbeat("w1")
    c.tick()
    assert [n.node_id for n in c.membership.nodes()] == ["w1"]
    assert [m.node_id for m in store.members()] == ["w1"]


class _TickingClock(Clock):
    """A clock that moves a millisecond at every read."""

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def test_calls_made_together_are_one_command_at_one_instant() -> None:
    clock = _TickingClock()
    c = coordinator(clock)
    nodes = join(c, 40, 40, 20, 20)
    c.submit_job(spec(rounds=12, aggregation="async"))
    c.take_commit()
    alone = [task(c, n) for n in nodes[:2]]
    assert alone[0].issued_at != alone[1].issued_at  # each call is its own instant
    with c.together():
        first, second = task(c, nodes[2]), task(c, nodes[3])
        again = c.next_task(nodes[0])
    # One instant for every call made together (the sizer reads the speeds once for all of
    # them).
    assert first.issued_at == second.issued_at
    assert again == alone[0]  # a node holding a task gets the same task again
    assert clock.t > first.issued_at  # the clock still moves outside a command
