"""``Outbox``: the store as the leader's logic sees it, with writes gathered per command.

The job queue and the running job write as they go (an event here, a version and its prune
there, the job's new status). Through an outbox those writes wait in one
:class:`~eddl.leader.checkpoint.WriteBatch` until :meth:`Outbox.flush`, which the owner of the
leader's state calls once per command: a new model version, the events that led to it and the
job's status are then committed in one transaction, or not at all. Reads flush first, so the
logic never reads past its own writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eddl.leader.checkpoint import (
    CheckpointStore,
    JobRecord,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
)
from eddl.leader.events import Event

__all__ = ["Outbox"]


class Outbox(CheckpointStore):
    """A :class:`CheckpointStore` that buffers writes for ``store`` until :meth:`flush`."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store
        self._pending = WriteBatch()

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take(self) -> WriteBatch:
        """The writes gathered so far, leaving the outbox empty (commit them elsewhere)."""
        batch, self._pending = self._pending, WriteBatch()
        return batch

    def flush(self) -> None:
        """Commit every gathered write in one transaction."""
        if self._pending:
            self.store.commit(self.take())

    def commit(self, batch: WriteBatch) -> None:
        p = self._pending
        p.statuses += batch.statuses
        p.versions += batch.versions
        p.prunes += batch.prunes
        p.events += batch.events
        p.members += batch.members
        p.forget_members += batch.forget_members
        if batch.leadership is not None:
            p.leadership = batch.leadership

    # -- reads (and the writes that are not batched) go to the store after a flush ----------
    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self.flush()
        self.store.add_job(job_id, spec, status, at)

    def job(self, job_id: str) -> JobRecord | None:
        self.flush()
        return self.store.job(job_id)

    def jobs(self) -> list[JobRecord]:
        self.flush()
        return self.store.jobs()

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        self.flush()
        return self.store.load_version(job_id, version)

    def versions(self, job_id: str) -> list[int]:
        self.flush()
        return self.store.versions(job_id)

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        self.flush()
        return self.store.events(job_id, since)

    def last_event_seq(self, job_id: str) -> int:
        self.flush()
        return self.store.last_event_seq(job_id)

    def get_value(self, key: str) -> Any:
        self.flush()
        return self.store.get_value(key)

    def set_value(self, key: str, value: Any) -> None:
        self.flush()
        self.store.set_value(key, value)

    def members(self) -> list[MemberRecord]:
        self.flush()
        return self.store.members()

    def leadership(self) -> LeadershipRecord | None:
        self.flush()
        return self.store.leadership()

    def close(self) -> None:
        self.flush()
        self.store.close()
