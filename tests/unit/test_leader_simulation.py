"""The scheduling logic under a discrete-event simulation: heterogeneous workers on a virtual
clock drive the real Coordinator (no network, no sleeping). This pins the *behaviour* the
heterogeneity benchmark measures for real: dynamic distribution finishes an epoch close to the
ideal (work / summed throughput), far ahead of static equal shards; faster workers get
proportionally more samples.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from eddl.leader.coordinator import Coordinator
from eddl.leader.events import EventKind
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import Membership, NodeProfile
from eddl.leader.run import Wait
from eddl.leader.runtime import JobRuntime
from eddl.leader.scheduler import Task
from eddl.leader.store import MemoryStore
from tests.unit.test_leader_support import Clock

SAMPLES = 8000
BASE_SPS = 400.0  # an unthrottled worker, in virtual samples per second
OVERHEAD_S = 0.02  # per task: pulling the model, pushing the update


def runtime(spec: JobSpec) -> JobRuntime:
    return JobRuntime(initial_params={"W0": np.zeros((2, 2), np.float32)}, num_train=SAMPLES)


@dataclass
class Result:
    seconds: float
    samples: Counter[str]


def simulate(throttles: list[float], **job: object) -> Result:
    """Run one epoch; workers know only their unthrottled benchmark speed (like a real one)."""
    clock = Clock(0.0)
    c = Coordinator(
        MemoryStore(),
        membership=Membership(heartbeat_interval=1.0, now=clock),
        runtime_factory=runtime,
        now=clock,
    )
    names = [f"w{i}" for i in range(len(throttles))]
    for n in names:
        c.join(n, "", profile=NodeProfile(benchmark_sps=BASE_SPS))
    c.submit_job(
        {
            "job_id": "j",
            "rounds": 10**6,
            "max_epochs": 1.0,
            "task_seconds": 0.5,
            "round_deadline": 30.0,
            "max_task_samples": SAMPLES,
            **job,
        }
    )
    queue: list[tuple[float, int, str, str]] = []  # (time, order, worker, action)
    order = 0
    for n in names:
        heapq.heappush(queue, (0.0, order, n, "ask"))
        heapq.heappush(queue, (0.5, order + 1, n, "beat"))
        order += 2
    held: dict[str, Task] = {}
    samples: Counter[str] = Counter()
    for _ in range(200_000):  # bounded
        if c.job_status("j")["status"] != "running" or not queue:
            break
        at, _, n, action = heapq.heappop(queue)
        clock.t = at
        order += 1
        if action == "beat":
            c.heartbeat(n)
            heapq.heappush(queue, (at + 1.0, order, n, "beat"))
        elif action == "ask":
            got = c.next_task(n)
            if isinstance(got, Wait):
                heapq.heappush(queue, (at + min(got.retry_after, 0.005), order, n, "ask"))
                continue
            held[n] = got
            speed = BASE_SPS / throttles[names.index(n)]
            heapq.heappush(queue, (at + OVERHEAD_S + got.num_samples / speed, order, n, "push"))
        else:
            t = held.pop(n)
            c.submit_update(
                n,
                t.task_id,
                c.model("j", t.base_version).params,
                job_id="j",
                base_version=t.base_version,
            )
            samples[n] += t.num_samples
            heapq.heappush(queue, (at, order, n, "ask"))
    status = c.job_status("j")
    assert status["status"] == "completed", status
    end = next(e.at for e in c.events("j") if e.kind is EventKind.JOB_COMPLETED)
    return Result(end, samples)


THROTTLES = [1.0, 1.0, 2.0, 4.0]
IDEAL = SAMPLES / sum(BASE_SPS / t for t in THROTTLES)


@pytest.mark.parametrize("aggregation", ["sync", "async"])
def test_dynamic_distribution_is_near_ideal_and_far_ahead_of_static(aggregation: str) -> None:
    dynamic = simulate(THROTTLES, aggregation=aggregation, distribution="dynamic")
    static = simulate(
        THROTTLES, aggregation=aggregation, distribution="static", default_task_samples=200
    )
    assert dynamic.seconds <= 1.25 * IDEAL
    assert static.seconds >= 1.8 * dynamic.seconds
    # faster workers trained proportionally more of the epoch (within 25%)
    share = {n: dynamic.samples[n] / SAMPLES for n in dynamic.samples}
    expected = {f"w{i}": (1 / t) / sum(1 / x for x in THROTTLES) for i, t in enumerate(THROTTLES)}
    for n, want in expected.items():
        assert share[n] == pytest.approx(want, rel=0.25), (n, share, expected)
    # static shards are equal whatever the speeds
    assert set(static.samples.values()) == {SAMPLES // 4}
