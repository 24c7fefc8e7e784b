"""Where a worker's time goes during one job, read from the worker's own log.

Each worker daemon logs ``task`` when it takes a task and ``update pushed`` when the leader
acknowledged its update, with a timestamp, the task's ``busy_s`` (training plus the throttle's
idle: the emulated device computing), ``pull_s`` (the model), ``fetch_s`` (samples not yet
cached) and ``push_s`` (the update). Over a worker's span in a job (its first task taken to its
last update acknowledged) :func:`worker_timeline` splits the time into:

* **compute**: ``busy_s`` summed;
* **transfer**: pull, fetch and push summed (the task's communication, leader work included:
  a push returns once the leader has taken the update, so a sync round's close shows here);
* **other**: the rest of each task's time (deserialising, the task's checks);
* **waiting**: time between tasks (update acknowledged to the next task taken: the long poll
  for work, in sync mode the round barrier).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "TaskSpan",
    "WorkerTimeline",
    "mean_timeline",
    "read_timelines",
    "stamp",
    "task_spans",
    "worker_timeline",
]


@dataclass(frozen=True)
class WorkerTimeline:
    """Shares (0..1) of one worker's span in one job."""

    worker: str
    tasks: int
    samples: int
    span_s: float
    compute: float
    transfer: float
    other: float
    waiting: float


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class TaskSpan:
    """One finished task of one worker, from its log: taken at ``start``, its update
    acknowledged at ``end``."""

    worker: str
    job_id: str
    version: int  # the model version the task started from (-1: not logged)
    start: float
    end: float
    busy_s: float
    pull_s: float
    fetch_s: float
    push_s: float
    samples: int

    @property
    def transfer_s(self) -> float:
        return self.pull_s + self.fetch_s + self.push_s


def task_spans(worker: str, lines: Iterable[str]) -> list[TaskSpan]:
    """The finished tasks in ``worker``'s JSON log ``lines`` (``task``, then ``update
    pushed``), in the order their updates were acknowledged."""
    started: dict[str, tuple[float, int]] = {}
    spans: list[TaskSpan] = []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        task = str(row.get("task", ""))
        if ":" not in task:
            continue
        if row.get("event") == "task":
            started[task] = (stamp(row["timestamp"]), int(row.get("version", -1)))
        elif row.get("event") == "update pushed" and task in started:
            begun, version = started.pop(task)
            busy, pull, fetch, push = (
                float(row.get(k, 0.0)) for k in ("busy_s", "pull_s", "fetch_s", "push_s")
            )
            spans.append(
                TaskSpan(
                    worker,
                    task.split(":", 1)[0],
                    version,
                    begun,
                    stamp(row["timestamp"]),
                    busy,
                    pull,
                    fetch,
                    push,
                    int(row.get("samples", 0)),
                )
            )
    return spans


def worker_timeline(worker: str, lines: Iterable[str], job_id: str) -> WorkerTimeline | None:
    """The timeline of ``worker`` in ``job_id`` from its JSON log ``lines`` (None: no task)."""
    done = [s for s in task_spans(worker, lines) if s.job_id == job_id]
    if not done:
        return None
    span = done[-1].end - done[0].start
    if span <= 0:
        return None
    wall = sum(s.end - s.start for s in done)
    busy = sum(s.busy_s for s in done)
    transfer = sum(s.transfer_s for s in done)
    return WorkerTimeline(
        worker,
        len(done),
        sum(s.samples for s in done),
        span,
        busy / span,
        transfer / span,
        max(0.0, wall - busy - transfer) / span,
        max(0.0, span - wall) / span,
    )


def read_timelines(log_dir: Path, workers: Sequence[str], job_id: str) -> list[WorkerTimeline]:
    """The timelines of ``workers`` (log files ``<name>.log`` under ``log_dir``) in a job."""
    found = []
    for name in workers:
        path = log_dir / f"{name}.log"
        if path.exists():
            with path.open(errors="replace") as f:
                t = worker_timeline(name, f, job_id)
            if t is not None:
                found.append(t)
    return found


def mean_timeline(runs: Sequence[WorkerTimeline]) -> WorkerTimeline:
    """One worker's timelines over several runs, averaged (``runs`` not empty)."""
    return WorkerTimeline(
        runs[0].worker,
        round(statistics.fmean(r.tasks for r in runs)),
        round(statistics.fmean(r.samples for r in runs)),
        statistics.fmean(r.span_s for r in runs),
        statistics.fmean(r.compute for r in runs),
        statistics.fmean(r.transfer for r in runs),
        statistics.fmean(r.other for r in runs),
        statistics.fmean(r.waiting for r in runs),
    )
