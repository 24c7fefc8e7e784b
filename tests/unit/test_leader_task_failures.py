"""Tasks reported as failed: re-queued at once; failures in a row end the job as ``failed``."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.jobspec import JobSpec, JobSpecError
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import (
    DuplicateUpdateError,
    InvalidArgumentError,
    JobNotActiveError,
    UnknownTaskError,
)
from eddl.leader.events import EventKind
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.runtime import JobRuntime
from eddl.leader.scheduler import Task
from eddl.leader.store import MemoryStore, SqliteStore
from tests.unit.test_leader_support import Clock, float_runtime, spec, train


def coordinator(clock: Clock, store: MemoryStore | SqliteStore | None = None) -> Coordinator:
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    return Coordinator(
        store or MemoryStore(), membership=membership, runtime_factory=float_runtime, now=clock
    )


def started(
    clock: Clock, store: MemoryStore | SqliteStore | None = None, **kw: object
) -> Coordinator:
    c = coordinator(clock, store)
    for i in range(2):
        c.join(f"w{i}", "tok", profile=NodeProfile(benchmark_sps=20.0))
    c.submit_job(spec(**kw))
    return c


def task(c: Coordinator, node: str) -> Task:
    got = c.next_task(node)
    assert isinstance(got, Task), got
    return got


def fail(c: Coordinator, t: Task, why: str = "ValueError: boom") -> str:
    assert t.node_id is not None
    ack = c.fail_task(t.node_id, t.task_id, why, job_id="job1", base_version=t.base_version)
    return ack.outcome


def test_a_failed_task_is_requeued_and_its_samples_handed_out_again() -> None:
    clock = Clock()
    c = started(clock, aggregation="async", async_params={"buffer_size": 1})
    t = task(c, "w0")
    assert fail(c, t) == "requeued"
    again = task(c, "w1")
    assert list(again.indexes)[: len(t.indexes)] == list(t.indexes)
    kinds = [e.kind for e in c.events("job1")]
    assert EventKind.TASK_FAILED in kinds and EventKind.TASK_REQUEUED in kinds
    assert c.job_status("job1")["failed_tasks"] == 1
    # Its own failure is over: the same task cannot be failed (or pushed) twice.
    with pytest.raises(DuplicateUpdateError):
        fail(c, t)


def test_a_report_for_someone_elses_task_or_another_version_changes_nothing() -> None:
    clock = Clock()
    c = started(clock)
    t = task(c, "w0")
    with pytest.raises(UnknownTaskError):
        c.fail_task("w1", t.task_id, "x", job_id="job1", base_version=t.base_version)
    with pytest.raises(InvalidArgumentError):
        c.fail_task("w0", t.task_id, "x", job_id="job1", base_version=t.base_version + 1)
    assert c.job_status("job1")["failed_tasks"] == 0
    assert c.job_status("job1")["tasks_in_flight"] == 1


def test_failures_in_a_row_end_the_job_as_failed_and_the_state_persists(tmp_path: Path) -> None:
    clock = Clock()
    c = started(clock, SqliteStore(tmp_path), max_task_failures=3)
    outcomes = []
    for i in range(3):
        clock.advance(0.1)
        outcomes.append(fail(c, task(c, f"w{i % 2}"), f"RuntimeError: broken {i}"))
    assert outcomes == ["requeued", "requeued", "job-failed"]
    status = c.job_status("job1")
    assert status["status"] == "failed"
    assert "3 tasks failed in a row" in status["result"]["reason"]
    assert "broken 2" in status["result"]["reason"]
    last = c.events("job1")[-1]
    assert last.kind is EventKind.JOB_FAILED and "broken 2" in last.message
    with pytest.raises(JobNotActiveError):
        c.fail_task("w0", "any", "x", job_id="job1", base_version=0)
    # A restarted leader does not resume a failed job.
    c2 = coordinator(clock, SqliteStore(tmp_path))
    assert c2.resume() == []
    assert c2.job_status("job1")["status"] == "failed"


def test_an_accepted_update_resets_the_count_of_failures_in_a_row() -> None:
    clock = Clock()
    c = started(clock, aggregation="async", async_params={"buffer_size": 1}, max_task_failures=2)
    fail(c, task(c, "w0"))
    good = task(c, "w1")
    params = train(c.model("job1").params, good.indexes)
    c.submit_update("w1", good.task_id, params, job_id="job1", base_version=good.base_version)
    assert fail(c, task(c, "w0")) == "requeued"  # one in a row again, not two
    assert c.job_status("job1")["status"] == "running"
    assert fail(c, task(c, "w1")) == "job-failed"


def test_in_sync_mode_a_failed_task_does_not_hold_the_round() -> None:
    clock = Clock()
    c = started(clock, aggregation="sync")
    bad, good = task(c, "w0"), task(c, "w1")
    fail(c, bad)
    params = train(c.model("job1").params, good.indexes)
    ack = c.submit_update("w1", good.task_id, params, job_id="job1", base_version=good.base_version)
    assert ack.outcome == "aggregated" and ack.version == 1


def test_a_job_that_cannot_resume_ends_with_a_final_event(tmp_path: Path) -> None:
    clock = Clock()
    started(clock, SqliteStore(tmp_path))

    def gone(s: JobSpec) -> JobRuntime:
        raise JobSpecError("job.dataset: gone")

    broken = Coordinator(
        SqliteStore(tmp_path), membership=Membership(now=clock), runtime_factory=gone, now=clock
    )
    assert broken.resume() == []
    last = broken.events("job1")[-1]
    assert last.kind is EventKind.JOB_FAILED and "gone" in last.message
