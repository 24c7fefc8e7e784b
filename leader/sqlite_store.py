"""``SqliteStore``: the checkpoint store in one SQLite file of the leader's state directory.

WAL mode with one transaction per call, so a leader killed with SIGKILL loses nothing that a
call had returned from. Tensors are rows ``(name, dtype, shape, bytes)`` in parameter order.
"""

from __future__ import annotations

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
    VersionRecord,
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

    def set_job_status(
        self, job_id: str, status: str, at: float, result: Mapping[str, Any] | None = None
    ) -> None:
        self._check_status(status)
        if self.job(job_id) is None:
            raise StoreError(f"job {job_id!r} is not stored")
        if result is None:
            self._tx(
                [
                    (
                        "UPDATE jobs SET status = ?, updated_at = ? WHERE job_id = ?",
                        (status, at, job_id),
                    )
                ]
            )
        else:
            self._tx(
                [
                    (
                        "UPDATE jobs SET status = ?, updated_at = ?, result = ? WHERE job_id = ?",
                        (status, at, dumps(result), job_id),
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

    def save_version(
        self, job_id: str, version: int, params: Params, meta: Mapping[str, Any], at: float
    ) -> None:
        if self.job(job_id) is None:
            raise StoreError(f"job {job_id!r} is not stored")
        latest = self._query("SELECT MAX(version) FROM versions WHERE job_id = ?", (job_id,))
        check_next_version(job_id, version, latest[0][0])
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT INTO versions (job_id, version, meta, saved_at) VALUES (?, ?, ?, ?)",
                (job_id, version, dumps(meta), at),
            )
        ]
        for position, (name, arr) in enumerate(params.items()):
            a = np.ascontiguousarray(arr)
            statements.append(
                (
                    "INSERT INTO tensors (job_id, version, position, name, dtype, shape, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        version,
                        position,
                        name,
                        a.dtype.str,
                        json.dumps(list(a.shape)),
                        a.tobytes(),
                    ),
                )
            )
        self._tx(statements)

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

    def prune(self, job_id: str, keep: int) -> int:
        if keep < 1:
            raise StoreError("keep at least one version")
        drop = self.versions(job_id)[:-keep]
        if not drop:
            return 0
        cutoff = drop[-1]
        self._tx(
            [
                ("DELETE FROM tensors WHERE job_id = ? AND version <= ?", (job_id, cutoff)),
                ("DELETE FROM versions WHERE job_id = ? AND version <= ?", (job_id, cutoff)),
            ]
        )
        return len(drop)

    def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._tx(
            [
                (
                    "INSERT INTO events (job_id, seq, at, kind, message, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (e.job_id, e.seq, e.at, e.kind.value, e.message, e.data_json()),
                )
                for e in events
            ]
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

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        str(row[0]),
        json.loads(row[1]),
        str(row[2]),
        float(row[3]),
        float(row[4]),
        json.loads(row[5]),
    )
