"""``Outbox``: the store as the leader's logic sees it, with writes gathered per command.

The job queue and the running job write as they go (an event here, a version and its prune
there, the job's new status). Through an outbox those writes wait in one
:class:`~eddl.leader.checkpoint.WriteBatch` until :meth:`Outbox.flush`, which the owner of the
leader's state calls once per command: a new model version, the events that led to it and the
job's status are then committed in one transaction, or not at all. The commit happens at once
or, given a committer such as :class:`~eddl.leader.actor.StoreWriter`, on a writer thread
beside the owner of the state. Reads flush and wait for every commit first, so the logic never
reads past its own writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
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

__all__ = ["Committer", "Outbox"]

# Commits one batch, now or on a writer thread; the future settles when it is durable.
Committer = Callable[[WriteBatch], "Future[None]"]


class Outbox(CheckpointStore):
    """A :class:`CheckpointStore` that buffers writes for ``store`` until :meth:`flush`."""

    def __init__(self, store: CheckpointStore, commit: Committer | None = None) -> None:
        self.store = store
        self._pending = WriteBatch()
        self._commit = commit if commit is not None else _commit_now(store)
        self._last: Future[None] | None = None

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take(self) -> WriteBatch:
        """The writes gathered so far, leaving the outbox empty (commit them elsewhere)."""
        batch, self._pending = self._pending, WriteBatch()
        return batch

    def flush(self) -> Future[None] | None:
        """Commit every gathered write in one transaction; the commit's future (None: no
        writes). With the default committer the commit is done when this returns."""
        if not self._pending:
            return None
        self._last = self._commit(self.take())
        return self._last

    def _settled(self) -> None:
        """Flush, and wait until every commit so far is done: a read sees all writes."""
        self.flush()
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def commit(self, batch: WriteBatch) -> None:
        self._pending.extend(batch)

    # -- reads (and the writes that are not batched) go to the store after a flush ----------
    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self._settled()
        self.store.add_job(job_id, spec, status, at)

    def job(self, job_id: str) -> JobRecord | None:
        self._settled()
        return self.store.job(job_id)

    def jobs(self) -> list[JobRecord]:
        self._settled()
        return self.store.jobs()

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        self._settled()
        return self.store.load_version(job_id, version)

    def versions(self, job_id: str) -> list[int]:
        self._settled()
        return self.store.versions(job_id)

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        self._settled()
        return self.store.events(job_id, since)

    def last_event_seq(self, job_id: str) -> int:
        self._settled()
        return self.store.last_event_seq(job_id)

    def get_value(self, key: str) -> Any:
        self._settled()
        return self.store.get_value(key)

    def set_value(self, key: str, value: Any) -> None:
        self._settled()
        self.store.set_value(key, value)

    def members(self) -> list[MemberRecord]:
        self._settled()
        return self.store.members()

    def leadership(self) -> LeadershipRecord | None:
        self._settled()
        return self.store.leadership()

    def close(self) -> None:
        self._settled()
        self.store.close()


def _commit_now(store: CheckpointStore) -> Committer:
    def commit(batch: WriteBatch) -> Future[None]:
        done: Future[None] = Future()
        try:
            store.commit(batch)
        except BaseException as exc:
            done.set_exception(exc)
            raise
        done.set_result(None)
        return done

    return commit
