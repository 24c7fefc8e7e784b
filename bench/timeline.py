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

__all__ = ["WorkerTimeline", "mean_timeline", "read_timelines", "worker_timeline"]


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


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def worker_timeline(worker: str, lines: Iterable[str], job_id: str) -> WorkerTimeline | None:
    """The timeline of ``worker`` in ``job_id`` from its JSON log ``lines`` (None: no task)."""
    started: dict[str, float] = {}
    done: list[tuple[float, float, float, float, int]] = []  # start, end, busy, transfer, n
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        task = str(row.get("task", ""))
        if not task.startswith(f"{job_id}:"):
            continue
        if row.get("event") == "task":
            started[task] = _stamp(row["timestamp"])
        elif row.get("event") == "update pushed" and task in started:
            transfer = sum(float(row.get(k, 0.0)) for k in ("pull_s", "fetch_s", "push_s"))
            done.append(
                (
                    started[task],
                    _stamp(row["timestamp"]),
                    float(row.get("busy_s", 0.0)),
                    transfer,
                    int(row.get("samples", 0)),
                )
            )
    if not done:
        return None
    span = done[-1][1] - done[0][0]
    if span <= 0:
        return None
    wall = sum(end - start for start, end, *_ in done)
    busy = sum(d[2] for d in done)
    transfer = sum(d[3] for d in done)
    return WorkerTimeline(
        worker,
        len(done),
        sum(d[4] for d in done),
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
