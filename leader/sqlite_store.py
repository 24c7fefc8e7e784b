"""``SqliteStore``: the checkpoint store in one SQLite file of the leader's state directory.

WAL mode with one transaction per call, so a leader killed with SIGKILL loses nothing that a
call had returned from. Tensors are rows ``(name, dtype, shape, bytes)`` in parameter order.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eddl.leader.checkpoint import (
    STORE_FILE,
    CheckpointStore,
    JobRecord,
    JobStatusChange,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
    check_keep,
    check_leadership,
    check_next_version,
    dumps,
    dumps_value,
)
from eddl.leader.errors import StoreError
from eddl.leader.events import Event
from eddl.learn.params import Params

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, result TEXT NOT NULL DEFAULT '{}',
    ordinal INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    job_id TEXT NOT NULL REFERENCES jobs(job_id), version INTEGER NOT NULL,
    meta TEXT NOT NULL, saved_at REAL NOT NULL, PRIMARY KEY (job_id, version));
CREATE TABLE IF NOT EXISTS tensors (
    job_id TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
    name TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (job_id, version, position));
CREATE TABLE IF NOT EXISTS leader (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    node_id TEXT PRIMARY KEY, role TEXT NOT NULL, session INTEGER NOT NULL,
    address TEXT NOT NULL, status TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq));
"""


class SqliteStore(CheckpointStore):
    """One SQLite file; ``path`` is the file, or a directory that gets ``leader.sqlite3``."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if p.is_dir():
            p = p / STORE_FILE
        self.path = p
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            # The coordinator may be driven from a grpc.aio loop or a worker thread: one
            # connection, serialised by our lock.
            self._db = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open checkpoint store {p}: {exc}") from exc
        self._lock = threading.Lock()

    def _tx(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"checkpoint store refused a write: {exc}") from exc
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"checkpoint store failed: {exc}") from exc

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"checkpoint store failed: {exc}") from exc

    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self._check_status(status)
        if self.job(job_id) is not None:
            raise StoreError(f"job {job_id!r} is already stored")
        ordinal = self._query("SELECT COALESCE(MAX(ordinal), 0) + 1 FROM jobs")[0][0]
        self._tx(
            [
                (
                    "INSERT INTO jobs (job_id, spec, status, created_at, updated_at, ordinal) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, dumps(spec), status, at, at, ordinal),
                )
            ]
        )

    def job(self, job_id: str) -> JobRecord | None:
        rows = self._query(
            "SELECT job_id, spec, status, created_at, updated_at, result FROM jobs "
            "WHERE job_id = ?",
            (job_id,),
        )
        return _job(rows[0]) if rows else None

    def jobs(self) -> list[JobRecord]:
        rows = self._query(
            "SELECT job_id, spec, status, created_at, updated_at, result FROM jobs ORDER BY ordinal"
        )
        return [_job(r) for r in rows]

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        head = self._query(
            "SELECT meta, saved_at FROM versions WHERE job_id = ? AND version = ?",
            (job_id, version),
        )
        if not head:
            return None
        rows = self._query(
            "SELECT name, dtype, shape, data FROM tensors WHERE job_id = ? AND "
            "version = ? ORDER BY position",
            (job_id, version),
        )
        params: Params = {}
        for name, dtype, shape, data in rows:
            try:
                dt = np.dtype(dtype)
                dims = tuple(int(d) for d in json.loads(shape))
                arr = np.frombuffer(data, dtype=dt).reshape(dims).copy()
            except (TypeError, ValueError) as exc:
                raise StoreError(
                    f"job {job_id} version {version}: tensor {name} is corrupt: {exc}"
                ) from exc
            params[name] = arr
        return VersionRecord(job_id, version, params, json.loads(head[0][0]), float(head[0][1]))

    def versions(self, job_id: str) -> list[int]:
        rows = self._query(
            "SELECT version FROM versions WHERE job_id = ? ORDER BY version", (job_id,)
        )
        return [int(r[0]) for r in rows]

    def commit(self, batch: WriteBatch) -> None:
        # Validation reads happen before the transaction; the statements then run in one
        # BEGIN IMMEDIATE .. COMMIT, so a batch lands whole or (on any refusal) not at all.
        statements: list[tuple[str, Sequence[Any]]] = []
        for change in batch.statuses:
            statements.append(self._status_statement(change))
        latest: dict[str, int | None] = {}
        stored_versions: dict[str, list[int]] = {}
        for rec in batch.versions:
            if rec.job_id not in latest:
                if self.job(rec.job_id) is None:
                    raise StoreError(f"job {rec.job_id!r} is not stored")
                stored_versions[rec.job_id] = self.versions(rec.job_id)
                have = stored_versions[rec.job_id]
                latest[rec.job_id] = have[-1] if have else None
            check_next_version(rec.job_id, rec.version, latest[rec.job_id])
            latest[rec.job_id] = rec.version
            stored_versions[rec.job_id].append(rec.version)
            statements += _version_statements(rec)
        for job_id, keep in batch.prunes:
            check_keep(keep)
            if job_id not in stored_versions:
                stored_versions[job_id] = self.versions(job_id)
            drop = stored_versions[job_id][:-keep]
            if drop:
                cutoff = drop[-1]
                statements += [
                    ("DELETE FROM tensors WHERE job_id = ? AND version <= ?", (job_id, cutoff)),
                    ("DELETE FROM versions WHERE job_id = ? AND version <= ?", (job_id, cutoff)),
                ]
                stored_versions[job_id] = stored_versions[job_id][len(drop) :]
        statements += [
            (
                "INSERT INTO events (job_id, seq, at, kind, message, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (e.job_id, e.seq, e.at, e.kind.value, e.message, e.data_json()),
            )
            for e in batch.events
        ]
        statements += [
            (
                "INSERT INTO members (node_id, role, session, address, status, at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET "
                "role = excluded.role, session = excluded.session, "
                "address = excluded.address, status = excluded.status, at = excluded.at",
                (m.node_id, m.role, m.session, m.address, m.status, m.at),
            )
            for m in batch.members
        ]
        statements += [
            ("DELETE FROM members WHERE node_id = ?", (node_id,))
            for node_id in batch.forget_members
        ]
        if batch.leadership is not None:
            lead = batch.leadership
            check_leadership(lead, self.leadership())
            statements.append(
                (
                    "INSERT INTO leader (key, value) VALUES ('leadership', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (dumps(dataclasses.asdict(lead)),),
                )
            )
        if statements:
            self._tx(statements)

    def _status_statement(self, change: JobStatusChange) -> tuple[str, Sequence[Any]]:
        self._check_status(change.status)
        if self.job(change.job_id) is None:
            raise StoreError(f"job {change.job_id!r} is not stored")
        if change.result is None:
            return (
                "UPDATE jobs SET status = ?, updated_at = ? WHERE job_id = ?",
                (change.status, change.at, change.job_id),
            )
        return (
            "UPDATE jobs SET status = ?, updated_at = ?, result = ? WHERE job_id = ?",
            (change.status, change.at, dumps(change.result), change.job_id),
        )

    def members(self) -> list[MemberRecord]:
        rows = self._query(
            "SELECT node_id, role, session, address, status, at FROM members ORDER BY node_id"
        )
        return [
            MemberRecord(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4]), float(r[5]))
            for r in rows
        ]

    def leadership(self) -> LeadershipRecord | None:
        rows = self._query("SELECT value FROM leader WHERE key = 'leadership'")
        if not rows:
            return None
        raw = json.loads(rows[0][0])
        return LeadershipRecord(
            int(raw["term"]), str(raw["leader_id"]), str(raw["address"]), float(raw["at"])
        )

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        rows = self._query(
            "SELECT job_id, seq, at, kind, message, data FROM events "
            "WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job_id, since),
        )
        return [
            Event.from_dict(
                {
                    "job_id": r[0],
                    "seq": r[1],
                    "at": r[2],
                    "kind": r[3],
                    "message": r[4],
                    "data": json.loads(r[5]),
                }
            )
            for r in rows
        ]

    def last_event_seq(self, job_id: str) -> int:
        rows = self._query("SELECT MAX(seq) FROM events WHERE job_id = ?", (job_id,))
        return int(rows[0][0] or 0)

    def get_value(self, key: str) -> Any:
        rows = self._query("SELECT value FROM leader WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_value(self, key: str, value: Any) -> None:
        self._tx(
            [
                (
                    "INSERT INTO leader (key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, dumps_value(value)),
                )
            ]
        )

    def reset(self) -> None:
        self._tx(
            [
                (f"DELETE FROM {table}", ())
                for table in ("tensors", "versions", "events", "members", "jobs")
            ]
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _version_statements(rec: VersionRecord) -> list[tuple[str, Sequence[Any]]]:
    statements: list[tuple[str, Sequence[Any]]] = [
        (
            "INSERT INTO versions (job_id, version, meta, saved_at) VALUES (?, ?, ?, ?)",
            (rec.job_id, rec.version, dumps(rec.meta), rec.saved_at),
        )
    ]
    for position, (name, arr) in enumerate(rec.params.items()):
        a = np.ascontiguousarray(arr)
        statements.append(
            (
                "INSERT INTO tensors (job_id, version, position, name, dtype, shape, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.job_id,
                    rec.version,
                    position,
                    name,
                    a.dtype.str,
                    json.dumps(list(a.shape)),
                    a.tobytes(),
                ),
            )
        )
    return statements


def _job(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        str(row[0]),
        json.loads(row[1]),
        str(row[2]),
        float(row[3]),
        float(row[4]),
        json.loads(row[5]),
    )
