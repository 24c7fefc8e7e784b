"""Two ``eddl-leader`` processes on one state directory: the second exits at once, changing
nothing, and the first keeps serving."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from eddl.leader.statedir import EXIT_STATE_DIR_IN_USE
from eddl.leader.store import SqliteStore
from tests.e2e.procs import TOKEN, eddl, script, spawn, start_leader, status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
rounds = 5
[job.model]
hidden = [8]
"""


def _stored(state: Path) -> tuple[object, ...]:
    """What the store holds (read-only, beside the running leader): events, versions, term."""
    db = sqlite3.connect(f"file:{state / 'leader.sqlite3'}?mode=ro", uri=True)
    try:
        return tuple(
            db.execute(sql).fetchall()
            for sql in (
                "SELECT job_id, seq, kind FROM events ORDER BY job_id, seq",
                "SELECT job_id, version FROM versions ORDER BY job_id, version",
                "SELECT job_id, status FROM jobs ORDER BY ordinal",
                "SELECT key, value FROM leader ORDER BY key",
            )
        )
    finally:
        db.close()


def test_second_leader_on_a_state_dir_in_use_exits_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, address = start_leader(tmp_path, state_dir=state)
    second = None
    try:
        job = tmp_path / "job.toml"
        job.write_text(JOB)
        done = eddl("submit", str(job), "--leader", address, "--json")
        assert done.returncode == 0, done.stderr
        before = status(address)
        stored = _stored(state)
        assert stored[0] and stored[1], "the job started: events and version 0 are stored"

        started = time.monotonic()
        second = spawn(
            "leader2",
            [
                script("eddl-leader"),
                "--bind",
                "127.0.0.1:0",
                "--state-dir",
                str(state),
                "--join-token",
                TOKEN,
                "--port-file",
                str(tmp_path / "leader2.port"),
            ],
            tmp_path / "leader2.log",
        )
        # Bounded wait: the second leader must exit by itself, not be stopped by us.
        try:
            code = second.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"second leader still running:\n{second.log.read_text()[-2000:]}")
        elapsed = time.monotonic() - started
        out = second.log.read_text()
        assert code == EXIT_STATE_DIR_IN_USE, out
        assert "in use by another eddl-leader" in out and f"pid {first.pid}" in out
        assert not (tmp_path / "leader2.port").exists()
        print(f"second leader exited with {code} after {elapsed:.2f}s")

        # The first leader still serves, at the same term, with the same events and versions.
        assert first.alive()
        after = status(address)
        for key in ("term", "job_id", "state", "version"):
            assert after.get(key) == before.get(key), key
        assert _stored(state) == stored
    finally:
        if second is not None:
            second.stop()
        first.stop()
    store = SqliteStore(state)
    record = store.leadership()
    store.close()
    assert record is not None and record.term == 1
