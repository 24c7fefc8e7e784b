"""``MemoryStore``: the checkpoint store in dicts (tests, throw-away runs)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from eddl.leader.checkpoint import (
    CheckpointStore,
    JobRecord,
    VersionRecord,
    check_next_version,
    dumps_value,
    json_copy,
)
from eddl.leader.errors import StoreError
from eddl.leader.events import Event
from eddl.learn.params import Params

__all__ = ["MemoryStore"]


class MemoryStore(CheckpointStore):
    """Everything in dicts; arrays are copied in and out so callers cannot alter the store."""

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._versions: dict[str, dict[int, VersionRecord]] = {}
        self._events: dict[str, list[Event]] = {}
        self._values: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self._check_status(status)
        with self._lock:
            if job_id in self._jobs:
                raise StoreError(f"job {job_id!r} is already stored")
            self._jobs[job_id] = JobRecord(job_id, json_copy(spec), status, at, at)

    def set_job_status(
        self, job_id: str, status: str, at: float, result: Mapping[str, Any] | None = None
    ) -> None:
        self._check_status(status)
        with self._lock:
            old = self._jobs.get(job_id)
            if old is None:
                raise StoreError(f"job {job_id!r} is not stored")
            new_result = old.result if result is None else json_copy(result)
            self._jobs[job_id] = JobRecord(job_id, old.spec, status, old.created_at, at, new_result)

    def job(self, job_id: str) -> JobRecord | None:
        return self._jobs.get(job_id)

    def jobs(self) -> list[JobRecord]:
        return sorted(self._jobs.values(), key=lambda j: j.created_at)

    def save_version(
        self, job_id: str, version: int, params: Params, meta: Mapping[str, Any], at: float
    ) -> None:
        with self._lock:
            if job_id not in self._jobs:
                raise StoreError(f"job {job_id!r} is not stored")
            stored = self._versions.setdefault(job_id, {})
            check_next_version(job_id, version, max(stored, default=None))
            copy = {k: np.array(v, copy=True) for k, v in params.items()}
            stored[version] = VersionRecord(job_id, version, copy, json_copy(meta), at)

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        rec = self._versions.get(job_id, {}).get(version)
        if rec is None:
            return None
        params = {k: v.copy() for k, v in rec.params.items()}
        return VersionRecord(job_id, version, params, json_copy(rec.meta), rec.saved_at)

    def versions(self, job_id: str) -> list[int]:
        return sorted(self._versions.get(job_id, {}))

    def prune(self, job_id: str, keep: int) -> int:
        if keep < 1:
            raise StoreError("keep at least one version")
        with self._lock:
            stored = self._versions.get(job_id, {})
            drop = sorted(stored)[:-keep]
            for v in drop:
                del stored[v]
            return len(drop)

    def append_events(self, events: Sequence[Event]) -> None:
        with self._lock:
            for event in events:
                have = self._events.setdefault(event.job_id, [])
                if any(e.seq == event.seq for e in have):
                    raise StoreError(f"event {event.job_id}#{event.seq} is already stored")
            for event in events:
                self._events[event.job_id].append(event)
                self._events[event.job_id].sort(key=lambda e: e.seq)

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        return [e for e in self._events.get(job_id, []) if e.seq > since]

    def get_value(self, key: str) -> Any:
        raw = self._values.get(key)
        return None if raw is None else json.loads(raw)

    def set_value(self, key: str, value: Any) -> None:
        self._values[key] = dumps_value(value)

    def close(self) -> None:
        pass
