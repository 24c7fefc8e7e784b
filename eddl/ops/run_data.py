"""A job's history, read from a leader's store without disturbing it: what ``eddl report`` plots.

The store (:mod:`eddl.leader.sqlite_store`) keeps each job's spec, state and result, its events
(model versions with accuracy and samples, policy switches, nodes joining and leaving, refused
updates, failed tasks) and its recent checkpoints, whose metadata holds who trained what. The
file is opened **read-only** (``mode=ro``), so a report can be made while the leader runs.

Event times are the leader's monotonic clock; they are shown as seconds since the job's first
event. A job resumed by a restarted leader starts a new clock: each resume is marked.

When each node was in the job comes from the join, leave and expiry events (a node there
before the job started has no join event: it counts from the start). A node's samples per
second are the samples of its updates taken into the model over that time, so they include
its waits between tasks. The store does not keep when each task started and ended, the bytes
on the wire or a device's serial time: those are the daemons' metrics (docs/operations.md).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "STORE_FILE",
    "NodeWork",
    "Presence",
    "RunData",
    "RunDataError",
    "Switch",
    "VersionPoint",
    "find_store",
    "list_jobs",
    "load_run",
]

STORE_FILE = "leader.sqlite3"


class RunDataError(ValueError):
    """No store where one was expected, no such job, or a store this code cannot read."""


@dataclass(frozen=True)
class VersionPoint:
    version: int
    seconds: float  # since the job's first event
    samples: int  # samples trained into the model so far
    accuracy: float | None
    mode: str
    interval_s: float  # since the previous version


@dataclass(frozen=True)
class Switch:
    seconds: float
    previous: str
    mode: str
    reason: str


@dataclass(frozen=True)
class Presence:
    """``node_id`` was in the job from ``start`` to ``end`` (seconds since its first event)."""

    node_id: str
    start: float
    end: float


@dataclass(frozen=True)
class NodeWork:
    node_id: str
    tasks: int
    samples: int
    seconds_in_job: float = 0.0

    @property
    def samples_per_second(self) -> float | None:
        return self.samples / self.seconds_in_job if self.seconds_in_job > 0 else None


@dataclass
class RunData:
    job_id: str
    status: str
    spec: dict[str, Any]
    result: dict[str, Any]
    versions: list[VersionPoint] = field(default_factory=list)
    switches: list[Switch] = field(default_factory=list)
    resumes: list[float] = field(default_factory=list)  # seconds of each JOB_RESUMED
    nodes: list[NodeWork] = field(default_factory=list)
    presence: list[Presence] = field(default_factory=list)
    joins: int = 0
    departures: int = 0  # nodes that left or expired
    refused: int = 0
    failed_tasks: int = 0
    duration_s: float = 0.0

    @property
    def final_accuracy(self) -> float | None:
        acc = [v.accuracy for v in self.versions if v.accuracy is not None]
        return acc[-1] if acc else None


def find_store(path: Path) -> Path:
    """The store file for ``path``: the file itself, a leader's state directory, or the state
    directory of ``eddl local`` / :class:`~eddl.cluster.local.LocalCluster` (``leader/``)."""
    for candidate in (path, path / STORE_FILE, path / "leader" / STORE_FILE):
        if candidate.is_file():
            return candidate
    raise RunDataError(
        f"no leader store at {path}: expected {STORE_FILE} in it or in its leader/ folder"
    )


def _connect(store: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM jobs LIMIT 1")
    except sqlite3.Error as exc:
        raise RunDataError(f"cannot read the store {store}: {exc}") from exc
    return db


def list_jobs(store: Path) -> list[tuple[str, str]]:
    """``(job_id, status)`` of every job, in submission order."""
    with _connect(store) as db:
        return [(str(r[0]), str(r[1])) for r in db.execute(
            "SELECT job_id, status FROM jobs ORDER BY ordinal"
        )]  # fmt: skip


def load_run(store: Path, job_id: str | None = None) -> RunData:
    """Job ``job_id`` (default: the latest submitted) from ``store``."""
    db = _connect(store)
    try:
        jobs = list_jobs(store)
        if not jobs:
            raise RunDataError(f"{store} holds no job")
        if job_id is None:
            job_id = jobs[-1][0]
        row = db.execute(
            "SELECT spec, status, result FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None:
            known = ", ".join(j for j, _ in jobs)
            raise RunDataError(f"no job {job_id!r} in {store}; jobs there: {known}")
        run = RunData(job_id, str(row[1]), json.loads(row[0]), json.loads(row[2] or "{}"))
        events = db.execute(
            "SELECT at, kind, data FROM events WHERE job_id = ? ORDER BY seq", (job_id,)
        ).fetchall()
        _read_events(run, [(float(at), str(kind), json.loads(data)) for at, kind, data in events])
        work = run.result.get("work")
        if not work:
            meta = db.execute(
                "SELECT meta FROM versions WHERE job_id = ? ORDER BY version DESC LIMIT 1",
                (job_id,),
            ).fetchone()
            work = json.loads(meta[0]).get("work") if meta else None
        run.nodes = _with_time(run, work or {})
    except (sqlite3.Error, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise RunDataError(f"cannot read job {job_id!r} from {store}: {exc}") from exc
    finally:
        db.close()
    return run


def _with_time(run: RunData, work: dict[str, Any]) -> list[NodeWork]:
    """Each node's work with its time in the job; a node with work but no membership event was
    there from the start to the end."""
    seen = {p.node_id for p in run.presence}
    for node in sorted(set(work) - seen):
        run.presence.append(Presence(str(node), 0.0, run.duration_s))
    run.presence.sort(key=lambda p: (p.node_id, p.start))
    nodes = []
    for node, w in sorted(work.items()):
        seconds = sum(p.end - p.start for p in run.presence if p.node_id == node)
        nodes.append(NodeWork(str(node), int(w["tasks"]), int(w["samples"]), seconds))
    return nodes


def _read_events(run: RunData, events: list[tuple[float, str, dict[str, Any]]]) -> None:
    # Each resume restarts the leader's clock: later events are shifted to follow on.
    offset, last, start = 0.0, 0.0, None
    samples, previous = 0, 0.0
    since: dict[str, float] = {}  # node -> when it joined (still in the job)
    seen: set[str] = set()
    for at, kind, data in events:
        if start is None:
            start = at
        if kind == "job_resumed" and at - start + offset < last:
            offset = last - (at - start)
        t = max(last, at - start + offset)
        last = t
        if kind == "model_updated":
            samples += int(data.get("samples") or 0)
            acc = data.get("accuracy")
            run.versions.append(
                VersionPoint(
                    int(data.get("version", 0)),
                    t,
                    samples,
                    None if acc is None else float(acc),
                    str(data.get("mode", "")),
                    t - previous,
                )
            )
            previous = t
        elif kind == "policy_switched":
            run.switches.append(
                Switch(t, str(data.get("previous")), str(data.get("mode")), str(data.get("reason")))
            )
        elif kind == "job_resumed":
            run.resumes.append(t)
            previous = t
        elif kind == "node_joined":
            run.joins += 1
            node = str(data.get("node_id", ""))
            since.setdefault(node, t)
            seen.add(node)
        elif kind in ("node_left", "node_expired"):
            run.departures += 1
            node = str(data.get("node_id", ""))
            # No join seen: the node was there when the job started.
            begun = since.pop(node, None if node in seen else 0.0)
            if begun is not None:
                run.presence.append(Presence(node, begun, t))
            seen.add(node)
        elif kind == "update_refused":
            run.refused += 1
        elif kind == "task_failed":
            run.failed_tasks += 1
        elif kind == "job_started":
            previous = t
    run.duration_s = last
    run.presence.extend(Presence(node, begun, last) for node, begun in since.items())
