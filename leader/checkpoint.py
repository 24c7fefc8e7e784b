"""The checkpoint store's interface, its records, and helpers shared by the implementations."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from eddl.leader.errors import StoreError
from eddl.leader.events import Event
from eddl.learn.params import Params

__all__ = [
    "JOB_STATUSES",
    "STORE_FILE",
    "CheckpointStore",
    "JobRecord",
    "JobStatusChange",
    "JobStatusName",
    "LeadershipRecord",
    "MemberRecord",
    "VersionRecord",
    "WriteBatch",
    "check_keep",
    "check_leadership",
    "check_next_version",
    "dumps",
    "dumps_value",
    "json_copy",
]

JobStatusName = Literal["queued", "running", "completed", "cancelled", "failed"]
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "completed", "cancelled", "failed")
STORE_FILE = "leader.sqlite3"


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    spec: Mapping[str, Any]
    status: str
    created_at: float
    updated_at: float
    result: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionRecord:
    job_id: str
    version: int
    params: Params
    meta: Mapping[str, Any]
    saved_at: float


@dataclass(frozen=True)
class JobStatusChange:
    job_id: str
    status: str
    at: float
    result: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LeadershipRecord:
    """Who leads and in which term; the term only grows."""

    term: int
    leader_id: str
    address: str
    at: float


@dataclass(frozen=True)
class MemberRecord:
    """A node as the root leader knows it (``status``: alive, left or expired)."""

    node_id: str
    role: str
    session: int
    address: str
    status: str
    at: float


@dataclass
class WriteBatch:
    """Writes committed together in one transaction (see :class:`~eddl.leader.outbox.Outbox`):
    a new model version, its prune, its events and the job's status land all or none."""

    statuses: list[JobStatusChange] = field(default_factory=list)
    versions: list[VersionRecord] = field(default_factory=list)
    prunes: list[tuple[str, int]] = field(default_factory=list)  # (job id, versions to keep)
    events: list[Event] = field(default_factory=list)
    members: list[MemberRecord] = field(default_factory=list)
    forget_members: list[str] = field(default_factory=list)
    leadership: LeadershipRecord | None = None

    def __bool__(self) -> bool:
        return bool(
            self.statuses
            or self.versions
            or self.prunes
            or self.events
            or self.members
            or self.forget_members
            or self.leadership is not None
        )

    def extend(self, later: WriteBatch) -> None:
        """Add the writes of ``later`` after these (its leadership record replaces ours)."""
        self.statuses += later.statuses
        self.versions += later.versions
        self.prunes += later.prunes
        self.events += later.events
        self.members += later.members
        self.forget_members += later.forget_members
        if later.leadership is not None:
            self.leadership = later.leadership


class CheckpointStore(ABC):
    """Durable state of the root leader. Every method is one atomic, synchronous call;
    :meth:`commit` applies a whole :class:`WriteBatch` atomically (validated before any write).
    """

    @abstractmethod
    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        """Record a new job; an existing id is a :class:`StoreError`."""

    def set_job_status(
        self, job_id: str, status: str, at: float, result: Mapping[str, Any] | None = None
    ) -> None:
        """Change a job's status (and result); an unknown id is a :class:`StoreError`."""
        self.commit(WriteBatch(statuses=[JobStatusChange(job_id, status, at, result)]))

    @abstractmethod
    def job(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def jobs(self) -> list[JobRecord]:
        """All jobs, oldest first."""

    def save_version(
        self, job_id: str, version: int, params: Params, meta: Mapping[str, Any], at: float
    ) -> None:
        """Store model ``version`` of a known job; it must exceed the latest stored version."""
        self.commit(WriteBatch(versions=[VersionRecord(job_id, version, params, meta, at)]))

    @abstractmethod
    def load_version(self, job_id: str, version: int) -> VersionRecord | None: ...

    @abstractmethod
    def versions(self, job_id: str) -> list[int]:
        """Stored versions of a job, ascending."""

    def prune(self, job_id: str, keep: int) -> int:
        """Delete all but the newest ``keep`` versions; returns how many were deleted."""
        check_keep(keep)
        dropped = len(self.versions(job_id)[:-keep])
        self.commit(WriteBatch(prunes=[(job_id, keep)]))
        return dropped

    def append_events(self, events: Sequence[Event]) -> None:
        """Store events; a (job, seq) already stored is a :class:`StoreError`."""
        self.commit(WriteBatch(events=list(events)))

    def put_member(self, member: MemberRecord) -> None:
        self.commit(WriteBatch(members=[member]))

    def save_leadership(self, record: LeadershipRecord) -> None:
        """Record who leads; a term below the stored one is a :class:`StoreError`."""
        self.commit(WriteBatch(leadership=record))

    @abstractmethod
    def commit(self, batch: WriteBatch) -> None:
        """Apply every write of ``batch`` in one transaction, or none (:class:`StoreError`)."""

    @abstractmethod
    def members(self) -> list[MemberRecord]:
        """Known nodes, by node id."""

    @abstractmethod
    def leadership(self) -> LeadershipRecord | None:
        """The last leadership record, or ``None`` before the first leader."""

    @abstractmethod
    def events(self, job_id: str, since: int = 0) -> list[Event]:
        """Events of a job with ``seq > since``, in order."""

    @abstractmethod
    def get_value(self, key: str) -> Any:
        """A small JSON value kept by the leader itself (its term), or ``None``."""

    @abstractmethod
    def set_value(self, key: str, value: Any) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def reset(self) -> None:
        """Forget every job, version, event and member; the leadership record stays (a standby
        replacing a history that may have diverged with the root's snapshot)."""
        raise StoreError(f"{type(self).__name__} cannot be reset")

    # -- derived -----------------------------------------------------------------------------
    def latest_version(self, job_id: str) -> VersionRecord | None:
        versions = self.versions(job_id)
        return self.load_version(job_id, versions[-1]) if versions else None

    def last_event_seq(self, job_id: str) -> int:
        events = self.events(job_id)
        return events[-1].seq if events else 0

    def _check_status(self, status: str) -> None:
        if status not in JOB_STATUSES:
            raise StoreError(f"unknown job status {status!r}; known: {JOB_STATUSES}")


def check_keep(keep: int) -> None:
    if keep < 1:
        raise StoreError("keep at least one version")


def check_leadership(record: LeadershipRecord, stored: LeadershipRecord | None) -> None:
    if isinstance(record.term, bool) or not isinstance(record.term, int) or record.term < 1:
        raise StoreError(f"term must be an int >= 1, got {record.term!r}")
    if stored is not None and record.term < stored.term:
        raise StoreError(f"term {record.term} is below the stored term {stored.term}")


def check_next_version(job_id: str, version: int, latest: int | None) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StoreError(f"version must be an int >= 0, got {version!r}")
    if latest is not None and version <= latest:
        raise StoreError(f"job {job_id}: version {version} is not above the stored {latest}")


def dumps(value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(value), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"not storable as JSON: {exc}") from exc


def dumps_value(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"not storable as JSON: {exc}") from exc


def json_copy(value: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(dumps(value))
    return out
