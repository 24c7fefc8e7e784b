"""bench.rounds: sync rounds read from the workers' logs and split into their parts."""

from __future__ import annotations

import json

import pytest

from bench.rounds import rounds_of, summary
from bench.timeline import task_spans


def line(event: str, task: str, at: float, **fields: float) -> str:
    return json.dumps(
        {"event": event, "task": task, "timestamp": f"2026-12-07T01:00:{at:09.6f}Z", **fields}
    )


def task(
    name: str, version: int, taken: float, acked: float, busy: float, push: float
) -> list[str]:
    return [
        line("task", name, taken, version=version),
        line("update pushed", name, acked, busy_s=busy, push_s=push, version=version + 1),
    ]


# Two workers, two rounds of job-a (versions 4 and 5), then a lone task of version 6.
A = [
    "not json",
    *task("job-a:1.x.1", 4, 10.000, 10.130, busy=0.100, push=0.010),
    *task("job-a:1.x.3", 5, 10.150, 10.270, busy=0.090, push=0.012),
    *task("job-a:1.x.5", 6, 10.300, 10.400, busy=0.080, push=0.010),
]
B = [
    *task("job-a:1.x.2", 4, 10.005, 10.140, busy=0.110, push=0.015),  # acknowledged last
    line("task", "job-a:1.x.4", 10.146, version=5),  # taken, never acknowledged: no span
    *task("job-a:1.x.6", 5, 10.160, 10.290, busy=0.095, push=0.020),
]


def test_a_round_is_split_into_training_closing_push_spread_and_the_rest() -> None:
    spans = task_spans("w0", A) + task_spans("w1", B)
    assert len(spans) == 5
    first, second = rounds_of(spans)
    assert (first.job_id, first.version, first.members) == ("job-a", 4, 2)
    assert first.wall_s == pytest.approx(0.140, abs=1e-5)  # 10.000 -> 10.140
    assert first.training_s == pytest.approx(0.110, abs=1e-5)  # the longest member
    assert first.closing_push_s == pytest.approx(0.015, abs=1e-5)  # w1's, acknowledged last
    assert first.start_spread_s == pytest.approx(0.005, abs=1e-5)
    assert first.rest_s == pytest.approx(0.010, abs=1e-5)
    assert first.gap_s == pytest.approx(0.010, abs=1e-5)  # 10.140 -> 10.150
    assert second.version == 5 and second.members == 2
    assert second.closing_push_s == pytest.approx(0.020, abs=1e-5)
    assert second.gap_s is None  # version 6 went to one worker: no round follows


def test_a_version_handed_to_one_worker_is_no_round() -> None:
    assert rounds_of(task_spans("w0", A)) == []
    assert [r.version for r in rounds_of(task_spans("w0", A), min_members=1)] == [4, 5, 6]


def test_the_summary_gives_each_part_against_the_median_round() -> None:
    rounds = rounds_of(task_spans("w0", A) + task_spans("w1", B))
    table = summary(rounds)
    assert "| training (longest member) |" in table
    assert "2 rounds; median members 2." in table
