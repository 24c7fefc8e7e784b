"""Typed events of a job: what ``eddl watch`` streams, ``eddl status`` shows and the store keeps.

An :class:`Event` is immutable and numbered per job (``seq`` starts at 1 and has no gaps), so a
watcher that reconnects asks for ``since(seq)`` and misses nothing. Per-task bookkeeping is not
an event (it would flood the log); rounds, versions, membership changes, re-queued work,
refused updates, failed tasks, policy
switches and changes of the single-layer groups are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "DomainBus",
    "DomainEvent",
    "Event",
    "EventFanout",
    "EventKind",
    "EventLog",
    "Listener",
    "NodeChanged",
    "UpdateAccepted",
]


class EventKind(StrEnum):
    JOB_SUBMITTED = "job_submitted"
    JOB_STARTED = "job_started"
    JOB_RESUMED = "job_resumed"
    JOB_COMPLETED = "job_completed"
    JOB_CANCELLED = "job_cancelled"
    JOB_FAILED = "job_failed"  # tasks kept failing on the workers (or the job cannot resume)
    NODE_JOINED = "node_joined"
    NODE_LEFT = "node_left"
    NODE_EXPIRED = "node_expired"
    NODE_QUARANTINED = "node_quarantined"  # its updates kept failing the sanity bound
    TASK_REQUEUED = "task_requeued"
    TASK_FAILED = "task_failed"  # a worker could not run its task and said why
    UPDATE_REFUSED = "update_refused"
    ROUND_CLOSED = "round_closed"
    MODEL_UPDATED = "model_updated"
    MODEL_EVALUATED = "model_evaluated"  # a version's test accuracy, measured beside the owner
    EVALUATION_FAILED = "evaluation_failed"  # a version's evaluation raised
    POLICY_SWITCHED = "policy_switched"
    LAYER_GROUPS = "layer_groups"  # single-layer mode: a node got a layer or left its group
    LEADER_ELECTED = "leader_elected"  # an elected candidate took over as root (and why)


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job, at leader time ``at`` (seconds of the injected clock)."""

    job_id: str
    seq: int
    at: float
    kind: EventKind
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind.value,
            "message": self.message,
            "data": dict(self.data),
        }

    def data_json(self) -> str:
        return json.dumps(dict(self.data), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        return cls(
            job_id=str(raw["job_id"]),
            seq=int(raw["seq"]),
            at=float(raw["at"]),
            kind=EventKind(raw["kind"]),
            message=str(raw["message"]),
            data=dict(raw.get("data", {})),
        )


Listener = Callable[[Event], None]


class EventLog:
    """The numbered events of one job, kept in memory; listeners hear each new one.

    ``first_seq`` lets a resumed job continue numbering after the events already stored.
    Only the most recent ``keep`` events stay in memory; the store holds them all.
    """

    def __init__(self, job_id: str, *, first_seq: int = 1, keep: int = 10_000) -> None:
        if first_seq < 1:
            raise ValueError("first_seq must be >= 1")
        self.job_id = job_id
        self._next = first_seq
        self._keep = keep
        self._events: list[Event] = []
        self._listeners: list[Listener] = []

    @property
    def last_seq(self) -> int:
        return self._next - 1

    def append(self, kind: EventKind, at: float, message: str, **data: Any) -> Event:
        event = Event(self.job_id, self._next, at, kind, message, data)
        self._next += 1
        self._events.append(event)
        if len(self._events) > self._keep:
            del self._events[: len(self._events) - self._keep]
        for listener in list(self._listeners):
            listener(event)
        return event

    def since(self, seq: int = 0) -> list[Event]:
        """Events with ``event.seq > seq`` still held in memory, oldest first."""
        return [e for e in self._events if e.seq > seq]

    def last(self, kind: EventKind) -> Event | None:
        for event in reversed(self._events):
            if event.kind is kind:
                return event
        return None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every new event; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe


class EventFanout:
    """An :class:`~eddl.leader.ports.EventSink` that hands each event to the listeners of its
    job (``WatchJob`` streams), and to the ones that hear every job (long-poll wake-ups)."""

    def __init__(self) -> None:
        self._by_job: dict[str, list[Listener]] = {}
        self._all: list[Listener] = []

    def emit(self, event: Event) -> None:
        for listener in [*self._by_job.get(event.job_id, ()), *self._all]:
            listener(event)

    def subscribe(self, listener: Listener, job_id: str | None = None) -> Callable[[], None]:
        """Hear the events of ``job_id`` (every job when ``None``); returns the unsubscribe."""
        group = self._all if job_id is None else self._by_job.setdefault(job_id, [])
        group.append(listener)

        def unsubscribe() -> None:
            if listener in group:
                group.remove(listener)
            if job_id is not None and not group:
                self._by_job.pop(job_id, None)

        return unsubscribe


@dataclass(frozen=True)
class NodeChanged:
    """A node joined, left or expired (with or without a job running)."""

    node_id: str
    change: str  # "joined", "left" or "expired"


@dataclass(frozen=True)
class UpdateAccepted:
    """An update was folded into a job (whether or not it made a new version)."""

    job_id: str
    node_id: str
    version: int


# What wakes long-polls: every job event, plus the signals that are not job events.
DomainEvent = Event | NodeChanged | UpdateAccepted


class DomainBus:
    """Hands every domain event to every subscriber, in order, on the caller's thread."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[DomainEvent], None]] = []

    def emit(self, event: DomainEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def subscribe(self, listener: Callable[[DomainEvent], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe
