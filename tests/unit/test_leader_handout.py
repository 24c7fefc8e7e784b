"""The core's hand-out helpers: the task-seed rule, the model cache, the node reports."""

from __future__ import annotations

import numpy as np

from eddl.leader.handout import JobWire, ModelCache, NodeReports, task_seed
from eddl.leader.membership import NodeProfile
from tests.unit.test_leader_support import spec


def test_task_seeds_differ_per_task_and_repeat_for_the_same_task() -> None:
    seeds = {task_seed(7, f"job:1.abc.{i}") for i in range(200)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert task_seed(7, "job:1.abc.1") == task_seed(7, "job:1.abc.1") != task_seed(8, "job:1.abc.1")


def test_the_job_wire_carries_the_stored_model_and_hyper_as_json() -> None:
    wire = JobWire.of(spec().to_dict())
    assert wire.spec.job_id == "job1"
    assert wire.model_json.startswith("{") and wire.hyper_json.startswith("{")


def test_the_model_cache_keeps_two_versions_and_stays_within_its_bytes() -> None:
    cache = ModelCache(max_bytes=1000)
    big = {"w": np.zeros(200, np.float32)}  # 800 bytes
    for v in range(4):
        cache.keep("j", v, big)
    assert cache.get("j", 0) is None and cache.get("j", 1) is None
    assert cache.get("j", 2) is big and cache.get("j", 3) is big
    assert cache.touch(("j", 2)) and not cache.touch(("j", 0))
    cache.keep("j", 4, big)  # version 2 was used last: version 3 goes first
    assert ("j", 3) not in cache and ("j", 2) in cache and ("j", 4) in cache


def test_a_heartbeat_profile_keeps_what_the_join_said() -> None:
    reports = NodeReports()
    reports.joined("n1", NodeProfile(benchmark_sps=50.0, static={"cpu": 4}), {"info": {"a": 1}})
    beat = reports.merged("n1", {"load": 0.5}, 8e6)
    assert beat == NodeProfile(
        benchmark_sps=50.0, static={"cpu": 4}, dynamic={"load": 0.5}, bandwidth_bps=8e6
    )
    reports.beat("n1", beat, {"cpuPercent": 3.0}, {"links": []})
    # no new link estimate: the last one stays
    assert reports.merged("n1", None, None).bandwidth_bps == 8e6
    assert reports.of("n1") == {
        "info": {"a": 1},
        "load": {"cpuPercent": 3.0},
        "network": {"links": []},
    }
    reports.left("n1")
    assert reports.merged("n1", None, None) == NodeProfile() and reports.nodes() == ["n1"]
    reports.forget("n1")
    assert reports.of("n1") == {} and reports.nodes() == []


def test_reports_follow_the_membership_when_it_forgets_nodes() -> None:
    reports = NodeReports()
    for node in ("a", "b", "c"):
        reports.joined(node, NodeProfile(), {"info": {}})
    reports.retain({"b", "zzz"})
    assert reports.nodes() == ["b"]
