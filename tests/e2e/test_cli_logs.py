"""`eddl logs` against a real leader process: a waiting job, a followed job, a finished job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.procs import Proc, eddl, start_leader, start_worker, status
from tests.e2e.test_ops_daemons import submit


@pytest.mark.slow
def test_logs_print_a_jobs_events_and_follow_it_to_the_end(tmp_path: Path) -> None:
    procs: list[Proc] = []
    try:
        leader, address = start_leader(tmp_path)
        procs.append(leader)
        job_id = submit(tmp_path, address)  # no node yet: the job waits for one
        early = eddl("logs", job_id, "--leader", address, timeout=60)
        assert early.returncode == 0, early.stderr
        assert "job_submitted" in early.stdout and "job_completed" not in early.stdout
        cut = eddl("logs", job_id, "--follow", "--timeout", "1", "--leader", address)
        assert cut.returncode == 1 and "stopped after 1 s" in cut.stderr
        procs.append(start_worker(tmp_path, address, "w0"))
        followed = eddl("logs", "--follow", "--timeout", "150", "--leader", address, timeout=170)
        assert followed.returncode == 0, followed.stderr
        lines = followed.stdout.splitlines()
        assert "job_completed" in lines[-1]
        assert status(address)["state"] == "completed"
        again = eddl("logs", job_id, "--leader", address)
        assert again.returncode == 0 and again.stdout == followed.stdout
        as_json = eddl("logs", job_id, "--json", "--leader", address)
        events = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(lines) + 1))
        assert {e["job_id"] for e in events} == {job_id}
        assert events[-1]["kind"] == "job_completed" and events[-1]["data"]["version"] == 40
        assert any(e["kind"] == "node_joined" and e["data"]["node_id"] == "w0" for e in events)
        unknown = eddl("logs", "no-such-job", "--leader", address)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
        bad = eddl("logs", job_id, "--timeout", "0", "--leader", address)
        assert bad.returncode == 2 and "--timeout" in bad.stderr
    finally:
        for proc in reversed(procs):
            proc.stop()
