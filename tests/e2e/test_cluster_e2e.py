"""End to end: the console scripts as real processes on loopback, killed and restarted."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import (
    Proc,
    eddl,
    start_leader,
    start_worker,
    status,
    stop_all,
    wait_done,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "sync"
task_seconds = 0.4
round_deadline = 3.0
max_epochs = 10000.0
{stop}
[job.model]
sizes = [64, 32, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.2
batch_size = 8
"""


def _job_file(tmp: Path, stop: str) -> Path:
    path = tmp / "job.toml"
    path.write_text(JOB.format(stop=stop))
    return path


def _submit(tmp: Path, address: str, stop: str) -> str:
    done = eddl("submit", str(_job_file(tmp, stop)), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def _events(address: str, job_id: str) -> list[str]:
    done = eddl("watch", "--job", job_id, "--leader", address, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def _stop_all(procs: list[Proc]) -> None:
    stop_all(procs)


def test_leader_and_three_workers_train_digits_past_90_percent(tmp_path: Path) -> None:
    leader, address = start_leader(tmp_path)
    procs = [leader]
    try:
        procs += [start_worker(tmp_path, address, f"w{i}") for i in range(2)]
        # One worker holds no data and fetches its samples by index from the leader.
        procs.append(start_worker(tmp_path, address, "w2", extra=["--no-local-data"]))
        wait_for(lambda: len(status(address)["nodes"]) == 3, 60, "3 workers joined", step=0.3)
        job_id = _submit(tmp_path, address, "target_accuracy = 0.9")
        final = wait_done(address)
        assert final["state"] == "completed", final
        assert final["accuracy"] >= 0.9
        for worker in procs[1:]:
            assert any(e.get("event") == "update pushed" for e in worker.lines()), worker.name
        lines = _events(address, job_id)
        assert any("job_completed" in line for line in lines)
        for worker in procs[1:]:
            assert worker.stop() == 0, worker.log.read_text()[-2000:]
            assert any(e.get("event") == "left the cluster" for e in worker.lines())
        assert leader.stop() == 0
    finally:
        _stop_all(procs)


def test_killed_worker_task_is_requeued_and_job_completes(tmp_path: Path) -> None:
    leader, address = start_leader(tmp_path, heartbeat=0.3)
    procs = [leader]
    try:
        procs += [start_worker(tmp_path, address, f"w{i}") for i in range(2)]
        # Slow enough that it is almost always holding a task when it is killed.
        victim = start_worker(tmp_path, address, "victim", throttle=20)
        procs.append(victim)
        wait_for(lambda: len(status(address)["nodes"]) == 3, 60, "3 workers joined", step=0.3)
        job_id = _submit(tmp_path, address, "rounds = 12")

        def victim_busy() -> bool:
            rows = {n["node_id"]: n for n in status(address)["nodes"]}
            return bool(rows.get("victim", {}).get("current_task"))

        wait_for(victim_busy, 60, "the victim to hold a task", step=0.2)
        victim.kill9()
        final = wait_done(address)
        assert final["state"] == "completed", final
        lines = _events(address, job_id)
        assert any("node_expired" in line and "victim" in line for line in lines), lines
        assert any("task_requeued" in line for line in lines), lines
    finally:
        _stop_all(procs)


def test_killed_leader_restarts_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    leader, address = start_leader(tmp_path, state_dir=state)
    procs = [leader]
    try:
        # Throttled so that the job lasts long enough to be interrupted.
        procs += [start_worker(tmp_path, address, f"w{i}", throttle=10) for i in range(3)]
        wait_for(lambda: len(status(address)["nodes"]) == 3, 60, "3 workers joined", step=0.3)
        # Rounds of task_seconds (a plain mean, not summed deltas, whose rounds of a few
        # batches would end the job before the kill).
        job_id = _submit(tmp_path, address, "rounds = 25\n[job.sync_params]\nsum_samples = 0")
        wait_for(lambda: status(address)["model_version"] >= 4, 90, "version 4", step=0.2)
        before = status(address)["model_version"]
        leader.kill9()
        port = address.rsplit(":", 1)[1]
        leader2, address2 = start_leader(
            tmp_path, state_dir=state, tag="leader2", extra=["--bind", f"127.0.0.1:{port}"]
        )
        procs.append(leader2)
        assert address2 == address
        resumed = status(address)
        assert resumed["job_id"] == job_id
        assert resumed["term"] == 2
        assert resumed["model_version"] >= before
        final = wait_done(address)
        assert final["state"] == "completed", final
        assert final["model_version"] >= 25
        lines = _events(address, job_id)
        resumed_at = [line for line in lines if "job_resumed" in line]
        assert resumed_at, [line for line in lines if " job_" in line] + lines[-3:]
        version = int(re.search(r" v(\d+) ", " " + resumed_at[0])[1])  # type: ignore[index]
        assert version >= before
    finally:
        _stop_all(procs)


def _stamp(entry: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def test_worker_started_mid_job_gets_a_task_within_two_heartbeats(tmp_path: Path) -> None:
    heartbeat = 1.0
    leader, address = start_leader(tmp_path, heartbeat=heartbeat)
    procs = [leader]
    try:
        procs += [start_worker(tmp_path, address, f"w{i}", throttle=5) for i in range(2)]
        wait_for(lambda: len(status(address)["nodes"]) == 2, 60, "2 workers joined", step=0.3)
        _submit(tmp_path, address, "rounds = 400")
        wait_for(lambda: status(address)["model_version"] >= 2, 60, "version 2", step=0.2)
        late = start_worker(tmp_path, address, "late")
        procs.append(late)

        def got_task() -> bool:
            return any(e.get("event") == "task" for e in late.lines())

        wait_for(got_task, 30, "the late worker's first task", step=0.1)
        entries = late.lines()
        joined = next(e for e in entries if e.get("event") == "joined")
        first = next(e for e in entries if e.get("event") == "task")
        assert _stamp(first) - _stamp(joined) <= 2 * heartbeat
    finally:
        _stop_all(procs)


def test_eddl_local_runs_a_cluster_and_reports_json(tmp_path: Path) -> None:
    done = eddl(
        "local",
        "--workers",
        "2",
        "--throttle",
        "1,2",
        "--json",
        "--state-dir",
        str(tmp_path),
        timeout=200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "completed"
    assert result["accuracy"] >= 0.9
    assert result["throttle"] == [1.0, 2.0]
    assert set(result["exit_codes"].values()) == {0}, result["exit_codes"]


def test_eddl_local_refuses_bad_throttle_lists() -> None:
    done = eddl("local", "--workers", "3", "--throttle", "1,2", timeout=30)
    assert done.returncode == 2
    assert "3 workers" in done.stderr
