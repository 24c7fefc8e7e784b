"""The metric sinks keep label values bounded, and their families pass Prometheus' parser."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from eddl.leader.splitting import SplitPolicy
from eddl.leader.syncmeter import SyncMeter
from eddl.ops.leader_metrics import JobSnapshot, LeaderCollector, LeaderSnapshot, NodeSpeed
from eddl.ops.sink import MetricsSink
from eddl.ops.worker_metrics import TaskSink, WorkerCollector
from eddl.worker.daemon import TaskTiming


def _samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_refusals_are_counted_by_code_and_a_known_reason_only() -> None:
    sink = MetricsSink()
    sink.update_refused("FAILED_PRECONDITION", "stale-term", 0.01)
    sink.update_refused("FAILED_PRECONDITION", "", 0.01)
    sink.update_refused("FAILED_PRECONDITION", "a reason the peer made up", 0.01)
    sink.update_refused("NOT_A_CODE", "unknown-node", 0.01)
    sink.update_accepted("aggregated", 0.02)
    sink.update_accepted("something new", 0.02)
    snap = sink.snapshot()
    assert snap.updates_refused == {
        ("failed_precondition", "stale-term"): 1,
        ("failed_precondition", "none"): 1,
        ("failed_precondition", "other"): 1,
        ("other", "unknown-node"): 1,
    }
    assert snap.updates_accepted == {"aggregated": 1, "other": 1}
    assert snap.update_seconds.count == 6


def test_leader_families_show_outcomes_reasons_and_node_speeds() -> None:
    sink = MetricsSink()
    sink.update_accepted("round", 0.02)
    sink.update_refused("FAILED_PRECONDITION", "stale-term", 0.01)
    job = JobSnapshot.from_status(
        {"status": "running", "version": 3, "accuracy": 0.5, "samples_trained": 100,
         "tasks_in_flight": 1, "mode": "sync", "switches": [{}, {}], "epochs": 0.5,
         "policy": {"bandwidth": 0.25},
         "sanity": {"refused": {"evil": 4, "w1": 1}, "quarantined": {"evil": "4 in a row"}}}
    )  # fmt: skip
    speeds = (NodeSpeed("w1", "worker", 120.0), NodeSpeed("d.mcu0", "mcu", 3.5))
    snap = LeaderSnapshot(True, 1, {"worker": 2}, {"running": 1}, job, speeds)
    got = _samples(LeaderCollector(lambda: snap, sink))
    assert got[("eddl_leader_updates_accepted_total", (("outcome", "round"),))] == 1
    assert got[("eddl_leader_updates_accepted_total", (("outcome", "aggregated"),))] == 0
    key = (("code", "failed_precondition"), ("reason", "stale-term"))
    assert got[("eddl_leader_updates_refused_total", key)] == 1
    speed = "eddl_leader_node_samples_per_second"
    assert got[(speed, (("node", "w1"), ("role", "worker")))] == 120.0
    assert got[(speed, (("node", "d.mcu0"), ("role", "mcu")))] == 3.5
    assert got[("eddl_job_policy_switches_total", ())] == 2
    assert got[("eddl_job_policy_mode", (("mode", "sync"),))] == 1.0
    assert got[("eddl_job_link_busy_ratio", ())] == 0.25
    assert got[("eddl_job_updates_refused_sanity_total", (("node", "evil"),))] == 4
    assert got[("eddl_job_updates_refused_sanity_total", (("node", "w1"),))] == 1
    assert got[("eddl_job_nodes_quarantined", ())] == 1


def test_task_durations_go_into_a_histogram_per_device() -> None:
    tasks = TaskSink("gw.")
    tasks.observe(TaskTiming("gw.mcu0", 10, 0.3, 0.1))
    tasks.observe(TaskTiming("gw.mcu0", 10, 7.0, 5.0))
    tasks.observe(TaskTiming("gw.mcu1", 10, 400.0, 1.0))
    got = _samples(WorkerCollector(list, tasks))
    mcu0 = (("device", "mcu0"),)
    assert got[("eddl_worker_task_seconds_count", mcu0)] == 2
    assert got[("eddl_worker_task_seconds_sum", mcu0)] == 7.3
    assert got[("eddl_worker_task_seconds_bucket", (("device", "mcu0"), ("le", "0.5")))] == 1
    assert got[("eddl_worker_task_seconds_bucket", (("device", "mcu0"), ("le", "10.0")))] == 2
    assert got[("eddl_worker_task_seconds_bucket", (("device", "mcu1"), ("le", "300.0")))] == 0
    assert got[("eddl_worker_task_seconds_bucket", (("device", "mcu1"), ("le", "+Inf")))] == 1
    assert got[("eddl_worker_train_seconds_total", mcu0)] == 5.1
    plain = TaskSink()
    plain.observe(TaskTiming("w1", 5, 1.0, 0.5))
    assert set(plain.snapshot()) == {""}


def test_command_times_are_a_histogram_per_command_with_bounded_names() -> None:
    sink = MetricsSink()
    sink.command("submit_update", 0.002)
    sink.command("submit_update", 0.004)
    sink.command("_hand_out", 0.0005)
    for i in range(70):  # past the guard, new names fold into "other"
        sink.command(f"c{i}", 1e-5)
    snap = sink.snapshot()
    assert snap.command_seconds["submit_update"].count == 2
    assert snap.command_seconds["submit_update"].total == pytest.approx(0.006)
    assert len(snap.command_seconds) == 65 and snap.command_seconds["other"].count == 8
    got = _samples(LeaderCollector(lambda: LeaderSnapshot(serving=True), sink))
    key = ("eddl_leader_command_seconds_count", (("command", "_hand_out"),))
    assert got[key] == 1.0


def test_the_roots_sync_meter_is_exported_for_buc() -> None:
    policy = SplitPolicy()
    meter = SyncMeter(policy, lambda decision: None, clock=lambda: 0.0)
    collector = LeaderCollector(lambda: LeaderSnapshot(serving=True), MetricsSink(), None, None)
    assert ("eddl_leader_syncs_total", ()) not in _samples(collector)
    collector = LeaderCollector(
        lambda: LeaderSnapshot(serving=True), MetricsSink(), None, meter.totals
    )
    assert _samples(collector)[("eddl_leader_sync_workers", ())] == 0.0
    meter._synced("w1", 0.25, 1.0)
    meter._synced("sub-1", 0.5, 1.1, workers=3)
    got = _samples(collector)
    assert got[("eddl_leader_syncs_total", ())] == 2.0
    assert got[("eddl_leader_sync_seconds_total", ())] == pytest.approx(0.75)
    assert got[("eddl_leader_sync_workers", ())] == 4.0  # the sub-leader as its group
