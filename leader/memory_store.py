"""``MemoryStore``: the checkpoint store in dicts (tests, throw-away runs)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from eddl.leader.checkpoint import (
    CheckpointStore,
    JobRecord,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
    check_keep,
    check_leadership,
    check_next_version,
    dumps_value,
    json_copy,
)
from eddl.leader.errors import StoreError
from eddl.leader.events import Event

__all__ = ["MemoryStore"]


class MemoryStore(CheckpointStore):
    """Everything in dicts; arrays are copied in and out so callers cannot alter the store."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._events: dict[str, list[Event]] = {}
        self._values: dict[str, str] = {}
        self._members: dict[str, MemberRecord] = {}
        self._leadership: LeadershipRecord | None = None
        self._lock = threading.Lock()

    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self._check_status(status)
        with self._lock:
            if job_id in self._jobs:
                raise StoreError(f"job {job_id!r} is already stored")
            self._jobs[job_id] = JobRecord(job_id, json_copy(spec), status, at, at)

    def job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[JobRecord]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        rec = self._versions.get(job_id, {}).get(version)
        if rec is None:
            return None
        params = {k: v.copy() for k, v in rec.params.items()}
        return VersionRecord(job_id, version, params, json_copy(rec.meta), rec.saved_at)

    def versions(self, job_id: str) -> list[int]:
        return sorted(self._versions.get(job_id, {}))

    def commit(self, batch: WriteBatch) -> None:
        with self._lock:
            self._check_batch(batch)
            for change in batch.statuses:
                old = self._jobs[change.job_id]
                result = old.result if change.result is None else json_copy(change.result)
                self._jobs[change.job_id] = JobRecord(
                    old.job_id, old.spec, change.status, old.created_at, change.at, result
                )
            for rec in batch.versions:
                copy = {k: np.array(v, copy=True) for k, v in rec.params.items()}
                self._versions.setdefault(rec.job_id, {})[rec.version] = VersionRecord(
                    rec.job_id, rec.version, copy, json_copy(rec.meta), rec.saved_at
                )
            for job_id, keep in batch.prunes:
                stored = self._versions.get(job_id, {})
                for v in sorted(stored)[:-keep]:
                    del stored[v]
            for event in batch.events:
                have = self._events.setdefault(event.job_id, [])
                have.append(event)
                have.sort(key=lambda e: e.seq)
            for member in batch.members:
                self._members[member.node_id] = member
            for node_id in batch.forget_members:
                self._members.pop(node_id, None)
            if batch.leadership is not None:
                self._leadership = batch.leadership

    def _check_batch(self, batch: WriteBatch) -> None:
        """Every refusal before any write, as SQLite's rollback would give."""
        for change in batch.statuses:
            self._check_status(change.status)
            if change.job_id not in self._jobs:
                raise StoreError(f"job {change.job_id!r} is not stored")
            if change.result is not None:
                json_copy(change.result)
        latest: dict[str, int | None] = {}
        for rec in batch.versions:
            if rec.job_id not in self._jobs:
                raise StoreError(f"job {rec.job_id!r} is not stored")
            if rec.job_id not in latest:
                latest[rec.job_id] = max(self._versions.get(rec.job_id, {}), default=None)
            check_next_version(rec.job_id, rec.version, latest[rec.job_id])
            latest[rec.job_id] = rec.version
            json_copy(rec.meta)
        for _, keep in batch.prunes:
            check_keep(keep)
        seen: set[tuple[str, int]] = set()
        for event in batch.events:
            key = (event.job_id, event.seq)
            stored = any(e.seq == event.seq for e in self._events.get(event.job_id, []))
            if stored or key in seen:
                raise StoreError(f"event {event.job_id}#{event.seq} is already stored")
            seen.add(key)
        if batch.leadership is not None:
            check_leadership(batch.leadership, self._leadership)

    def members(self) -> list[MemberRecord]:
        return [self._members[k] for k in sorted(self._members)]

    def leadership(self) -> LeadershipRecord | None:
        return self._leadership

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        return [e for e in self._events.get(job_id, []) if e.seq > since]

    def get_value(self, key: str) -> Any:
        raw = self._values.get(key)
        return None if raw is None else json.loads(raw)

    def set_value(self, key: str, value: Any) -> None:
        self._values[key] = dumps_value(value)

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._versions.clear()
            self._events.clear()
            self._members.clear()

    def close(self) -> None:
        pass
