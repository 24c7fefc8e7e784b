"""The checkpoint store: one contract suite run against every implementation, plus SQLite's
durability (reopen, and SIGKILL in the middle of writing versions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eddl.leader.checkpoint import (
    JobStatusChange,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
)
from eddl.leader.errors import StoreError
from eddl.leader.events import Event, EventKind
from eddl.leader.store import CheckpointStore, MemoryStore, SqliteStore


def params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W0": rng.normal(size=(5, 3)).astype(np.float32),
        "b0": rng.integers(-100, 100, size=3).astype(np.int32),
        "W1": rng.integers(-128, 127, size=(3, 2)).astype(np.int8),
        "b1": np.zeros(2, np.float64),
    }


def event(job: str, seq: int, kind: EventKind = EventKind.MODEL_UPDATED) -> Event:
    return Event(job, seq, 10.0 + seq, kind, f"event {seq}", {"version": seq, "n": [1, 2]})


class StoreContract(ABC):
    """What every CheckpointStore must do. Subclasses say how to make one."""

    __test__ = False

    @abstractmethod
    def store_factory(self, tmp_path: Path) -> CheckpointStore: ...

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[CheckpointStore]:
        s = self.store_factory(tmp_path)
        yield s
        s.close()

    def test_jobs_are_added_listed_and_updated(self, store: CheckpointStore) -> None:
        store.add_job("a", {"rounds": 3, "model": {"hidden": [4]}}, "queued", 1.0)
        store.add_job("b", {"rounds": 1}, "queued", 2.0)
        store.set_job_status("a", "completed", 5.0, {"accuracy": 0.9})
        a = store.job("a")
        assert a is not None and a.status == "completed" and a.result == {"accuracy": 0.9}
        assert a.spec == {"rounds": 3, "model": {"hidden": [4]}} and a.updated_at == 5.0
        assert [j.job_id for j in store.jobs()] == ["a", "b"]
        assert store.job("zzz") is None

    def test_bad_job_writes_are_refused(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "queued", 1.0)
        with pytest.raises(StoreError, match="already"):
            store.add_job("a", {}, "queued", 1.0)
        with pytest.raises(StoreError, match="unknown job status"):
            store.add_job("b", {}, "sleeping", 1.0)
        with pytest.raises(StoreError, match="not stored"):
            store.set_job_status("zzz", "running", 1.0)
        with pytest.raises(StoreError, match="JSON"):
            store.add_job("c", {"x": object()}, "queued", 1.0)
        assert [j.job_id for j in store.jobs()] == ["a"]

    def test_versions_round_trip_with_names_dtypes_and_shapes(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "running", 1.0)
        p = params(1)
        store.save_version("a", 0, p, {"mode": "sync", "scheduler": {"todo": [[0, 1, 2]]}}, 3.0)
        rec = store.load_version("a", 0)
        assert rec is not None and rec.version == 0 and rec.saved_at == 3.0
        assert list(rec.params) == list(p)
        for name, arr in p.items():
            assert rec.params[name].dtype == arr.dtype and rec.params[name].shape == arr.shape
            np.testing.assert_array_equal(rec.params[name], arr)
        assert rec.meta == {"mode": "sync", "scheduler": {"todo": [[0, 1, 2]]}}
        # what the caller holds is not the store's: changing it changes nothing stored
        rec.params["W0"][:] = 99
        p["b0"][:] = 7
        again = store.load_version("a", 0)
        assert again is not None
        np.testing.assert_array_equal(again.params["W0"], params(1)["W0"])
        np.testing.assert_array_equal(again.params["b0"], params(1)["b0"])

    def test_versions_only_grow(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "running", 1.0)
        with pytest.raises(StoreError, match="not stored"):
            store.save_version("zzz", 0, params(0), {}, 1.0)
        for v in (0, 1, 2, 5):
            store.save_version("a", v, params(v), {"v": v}, float(v))
        for bad in (5, 3, -1):
            with pytest.raises(StoreError):
                store.save_version("a", bad, params(0), {}, 9.0)
        assert store.versions("a") == [0, 1, 2, 5]
        latest = store.latest_version("a")
        assert latest is not None and latest.version == 5 and latest.meta == {"v": 5}
        assert store.load_version("a", 4) is None and store.latest_version("b") is None

    def test_prune_keeps_the_newest(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "running", 1.0)
        for v in range(6):
            store.save_version("a", v, params(v), {}, float(v))
        assert store.prune("a", keep=2) == 4
        assert store.versions("a") == [4, 5]
        assert store.prune("a", keep=2) == 0
        with pytest.raises(StoreError):
            store.prune("a", keep=0)
        store.save_version("a", 6, params(6), {}, 6.0)  # still only grows
        with pytest.raises(StoreError):
            store.save_version("a", 3, params(3), {}, 7.0)

    def test_events_are_kept_in_order_and_never_twice(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "running", 1.0)
        store.append_events([event("a", 1, EventKind.JOB_STARTED), event("a", 2)])
        store.append_events([event("a", 3, EventKind.POLICY_SWITCHED)])
        store.append_events([event("b", 1)])
        with pytest.raises(StoreError):
            store.append_events([event("a", 4), event("a", 2)])
        got = store.events("a")
        assert [e.seq for e in got] == [1, 2, 3]
        assert got[2] == event("a", 3, EventKind.POLICY_SWITCHED)
        assert [e.seq for e in store.events("a", since=2)] == [3]
        assert store.last_event_seq("a") == 3 and store.last_event_seq("nobody") == 0

    def test_leader_values_are_kept(self, store: CheckpointStore) -> None:
        assert store.get_value("term") is None
        store.set_value("term", 3)
        store.set_value("term", 4)
        store.set_value("peers", ["a:1", "b:2"])
        assert store.get_value("term") == 4 and store.get_value("peers") == ["a:1", "b:2"]
        with pytest.raises(StoreError):
            store.set_value("bad", float("nan"))
        assert store.get_value("bad") is None

    def test_a_batch_commits_a_version_its_events_and_status_together(
        self, store: CheckpointStore
    ) -> None:
        store.add_job("a", {}, "running", 1.0)
        store.save_version("a", 0, params(0), {}, 1.0)
        store.commit(
            WriteBatch(
                statuses=[JobStatusChange("a", "completed", 4.0, {"accuracy": 0.5})],
                versions=[VersionRecord("a", 1, params(1), {"v": 1}, 3.0)],
                prunes=[("a", 1)],
                events=[event("a", 1), event("a", 2, EventKind.JOB_COMPLETED)],
            )
        )
        job = store.job("a")
        assert job is not None and job.status == "completed" and job.result == {"accuracy": 0.5}
        assert store.versions("a") == [1] and [e.seq for e in store.events("a")] == [1, 2]

    def test_a_refused_batch_writes_nothing(self, store: CheckpointStore) -> None:
        store.add_job("a", {}, "running", 1.0)
        store.append_events([event("a", 1)])
        store.save_version("a", 0, params(0), {}, 1.0)
        bad_event = WriteBatch(
            statuses=[JobStatusChange("a", "completed", 4.0)],
            versions=[VersionRecord("a", 1, params(1), {}, 3.0)],
            events=[event("a", 2), event("a", 1)],  # seq 1 is already stored
        )
        bad_version = WriteBatch(
            versions=[VersionRecord("a", 0, params(1), {}, 3.0)], events=[event("a", 2)]
        )
        for batch in (bad_event, bad_version):
            with pytest.raises(StoreError):
                store.commit(batch)
        job = store.job("a")
        assert job is not None and job.status == "running"
        assert store.versions("a") == [0] and [e.seq for e in store.events("a")] == [1]

    def test_members_are_upserted_and_forgotten(self, store: CheckpointStore) -> None:
        assert store.members() == []
        store.put_member(MemberRecord("w2", "worker", 1, "ipv4:1", "alive", 1.0))
        store.put_member(MemberRecord("w1", "mcu", 1, "ipv4:2", "alive", 2.0))
        store.put_member(MemberRecord("w2", "worker", 2, "ipv4:3", "expired", 3.0))
        assert store.members() == [
            MemberRecord("w1", "mcu", 1, "ipv4:2", "alive", 2.0),
            MemberRecord("w2", "worker", 2, "ipv4:3", "expired", 3.0),
        ]
        store.commit(WriteBatch(forget_members=["w2", "never-seen"]))
        assert [m.node_id for m in store.members()] == ["w1"]

    def test_the_leadership_record_only_moves_to_higher_or_equal_terms(
        self, store: CheckpointStore
    ) -> None:
        assert store.leadership() is None
        store.save_leadership(LeadershipRecord(1, "l1", "127.0.0.1:1", 1.0))
        store.save_leadership(LeadershipRecord(3, "l2", "127.0.0.1:2", 2.0))
        store.save_leadership(
            LeadershipRecord(3, "l2", "127.0.0.1:3", 3.0)
        )  # same term, new address
        for bad in (2, 0):
            with pytest.raises(StoreError):
                store.save_leadership(LeadershipRecord(bad, "l1", "", 4.0))
        assert store.leadership() == LeadershipRecord(3, "l2", "127.0.0.1:3", 3.0)


class TestMemoryStore(StoreContract):
    __test__ = True

    def store_factory(self, tmp_path: Path) -> CheckpointStore:
        return MemoryStore()


class TestSqliteStore(StoreContract):
    __test__ = True

    def store_factory(self, tmp_path: Path) -> CheckpointStore:
        return SqliteStore(tmp_path)

    def test_reopened_store_holds_everything(self, tmp_path: Path) -> None:
        s = SqliteStore(tmp_path)
        s.add_job("a", {"rounds": 2}, "running", 1.0)
        s.save_version("a", 0, params(0), {"m": 1}, 1.0)
        s.append_events([event("a", 1)])
        s.close()
        again = SqliteStore(tmp_path / "leader.sqlite3")
        rec = again.latest_version("a")
        assert rec is not None and rec.meta == {"m": 1}
        np.testing.assert_array_equal(rec.params["W1"], params(0)["W1"])
        assert again.last_event_seq("a") == 1
        again.close()

    def test_unopenable_path_is_a_store_error(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(StoreError, match="cannot open"):
            SqliteStore(blocker / "sub" / "leader.sqlite3")


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from eddl.leader.store import SqliteStore

    store = SqliteStore(sys.argv[1])
    store.add_job("j", {"rounds": 100000}, "running", 0.0)
    rng = np.random.default_rng(0)
    for v in range(100000):
        p = {"W0": rng.normal(size=(64, 32)).astype(np.float32), "b0": np.full(32, v, np.int32)}
        store.save_version("j", v, p, {"v": v}, float(v))
        print(v, flush=True)
    """
)


def test_sigkill_while_writing_loses_no_returned_version(tmp_path: Path) -> None:
    """A leader killed with -9 keeps every version whose save had returned, contiguous."""
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    reported = -1
    try:
        for _ in range(1000):  # bounded: stop after 40 versions or 1000 lines
            line = proc.stdout.readline()
            if not line:
                break
            reported = int(line)
            if reported >= 40:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert reported >= 40, "the writer did not get going"
    store = SqliteStore(tmp_path)
    versions = store.versions("j")
    assert versions == list(range(len(versions))) and versions[-1] >= reported
    last = store.load_version("j", versions[-1])
    assert last is not None and int(last.params["b0"][0]) == versions[-1]
    store.close()
