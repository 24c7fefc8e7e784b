"""bench.timeline: a worker's time in a job split into compute, transfer, other, waiting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.timeline import mean_timeline, read_timelines, worker_timeline


def line(event: str, task: str, at: str, **fields: float) -> str:
    return json.dumps(
        {"event": event, "task": task, "timestamp": f"2026-12-07T01:00:{at}Z", **fields}
    )


LOG = [
    "not json",
    line("task", "job-a:1.x.1", "00.000000", samples=64),
    line(
        "update pushed",
        "job-a:1.x.1",
        "01.000000",
        busy_s=0.6,
        pull_s=0.1,
        fetch_s=0.0,
        push_s=0.1,
        samples=64,
    ),
    line("task", "job-b:1.y.1", "01.100000", samples=32),  # another job's task
    line("task", "job-a:1.x.2", "02.000000", samples=32),
    line(
        "update pushed",
        "job-a:1.x.2",
        "03.000000",
        busy_s=0.8,
        pull_s=0.05,
        fetch_s=0.05,
        push_s=0.0,
        samples=32,
    ),
]


def test_a_workers_span_splits_into_compute_transfer_other_and_waiting() -> None:
    t = worker_timeline("worker-0", LOG, "job-a")
    assert t is not None
    assert (t.tasks, t.samples, t.span_s) == (2, 96, pytest.approx(3.0))
    assert t.compute == pytest.approx(1.4 / 3)
    assert t.transfer == pytest.approx(0.3 / 3)
    assert t.other == pytest.approx(0.3 / 3)
    assert t.waiting == pytest.approx(1.0 / 3)  # 01.0 -> 02.0 between the two tasks
    assert t.compute + t.transfer + t.other + t.waiting == pytest.approx(1.0)


def test_a_job_without_finished_tasks_has_no_timeline_and_a_missing_log_is_skipped(
    tmp_path: Path,
) -> None:
    assert worker_timeline("worker-0", LOG, "job-c") is None
    assert worker_timeline("worker-0", LOG[:2], "job-a") is None  # taken, never pushed
    (tmp_path / "worker-0.log").write_text("\n".join(LOG))
    found = read_timelines(tmp_path, ["worker-0", "worker-1"], "job-a")
    assert [t.worker for t in found] == ["worker-0"]
    both = mean_timeline([found[0], found[0]])
    assert both.compute == pytest.approx(found[0].compute) and both.tasks == 2
