"""Live progress of a job for ``eddl local``: what the leader's Admin API says, as it changes.

:class:`Progress` folds the replies of ``ListNodes`` and ``JobStatus`` and the job's events
into one picture: model version, accuracy, policy, samples per second, and per node its state,
the leader's estimate of its samples/s, its task and how many tasks it finished. Node arrivals
and departures come from the node table, so the joins that happen before a job starts are seen
too. Three views show it: :class:`RichView` (a live table on a terminal, events printed above
it), :class:`LineView` (plain lines when stdout is not a terminal: every event, and a progress
line when the model version changed, at most every few seconds) and :class:`SilentView`
(``--json``: the result only).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from eddl.proto.v1 import admin_pb2

__all__ = [
    "NOTABLE_EVENTS",
    "LineView",
    "NodeProgress",
    "Progress",
    "ProgressView",
    "RichView",
    "SilentView",
    "make_view",
]

# Job events worth a line; node joins and departures come from the node table instead.
NOTABLE_EVENTS = frozenset(
    {
        "job_started",
        "job_resumed",
        "job_completed",
        "job_cancelled",
        "job_failed",
        "evaluation_failed",
        "policy_switched",
        "task_requeued",
        "task_failed",
        "update_refused",
        "layer_groups",
    }
)
_RATE_WINDOW_S = 3.0


@dataclass
class NodeProgress:
    """One node as last listed by the leader."""

    node_id: str
    role: str
    state: str
    samples_per_second: float = 0.0
    task: str = ""
    tasks_done: int = 0
    tasks_seen: set[str] = field(default_factory=set)

    @property
    def tasks(self) -> str:
        """Tasks finished, as the leader counts them; else, where it reports none, at least the
        distinct tasks seen running on the node (a lower bound: short tasks between two looks
        are missed)."""
        if self.tasks_done:
            return str(self.tasks_done)
        return f">={len(self.tasks_seen)}" if self.tasks_seen else "0"


@dataclass
class Progress:
    """The job and the nodes as last seen; fed by the poller and the event stream."""

    job_id: str = ""
    state: str = "starting"
    version: int = 0
    accuracy: float | None = None
    policy: str = ""
    policy_reason: str = ""
    samples: int = 0
    nodes: dict[str, NodeProgress] = field(default_factory=dict)
    _event_samples: int = 0
    _rate: deque[tuple[float, int]] = field(default_factory=deque)

    def update_nodes(self, reply: admin_pb2.ListNodesReply) -> list[str]:
        """Take a node listing; the lines for nodes that joined, left or came back."""
        lines = []
        for n in reply.nodes:
            old = self.nodes.get(n.node_id)
            if old is None:
                old = self.nodes[n.node_id] = NodeProgress(n.node_id, n.role, "")
                lines.append(
                    f"{n.role or 'node'} {n.node_id} joined"
                    if n.state == "alive"
                    else f"{n.role or 'node'} {n.node_id} is {n.state}"
                )
            elif old.state != n.state:
                lines.append(
                    f"{n.node_id} is back" if n.state == "alive" else f"{n.node_id} {n.state}"
                )
            old.role, old.state = n.role, n.state
            if n.samples_per_second > 0:  # the leader estimates only while a job runs: keep
                old.samples_per_second = n.samples_per_second  # the last estimate after it
            old.task = n.current_task
            old.tasks_done = n.tasks_done
            if n.current_task:
                old.tasks_seen.add(n.current_task)
        return lines

    def update_status(self, reply: admin_pb2.JobStatusReply, now: float) -> None:
        self.state = reply.state
        self.version = reply.envelope.model_version
        self.accuracy = None if reply.accuracy < 0 else reply.accuracy
        self.policy, self.policy_reason = reply.policy, reply.policy_reason
        # The leader's own count where it keeps one, else the sum of the model updates' samples.
        self.samples = max(int(reply.samples_trained), self._event_samples)
        self._rate.append((now, self.samples))
        while len(self._rate) > 2 and now - self._rate[1][0] >= _RATE_WINDOW_S:
            self._rate.popleft()

    @property
    def samples_per_second(self) -> float:
        """Samples trained per second over the last few seconds."""
        if len(self._rate) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def on_event(self, event: admin_pb2.JobEvent) -> str | None:
        """Take a job event; its line if it is a notable one."""
        if event.kind == "model_updated" and event.data_json:
            data = json.loads(event.data_json)
            samples = data.get("samples") if isinstance(data, dict) else None
            if isinstance(samples, int) and samples > 0:
                self._event_samples += samples
        if event.kind not in NOTABLE_EVENTS:
            return None
        return f"v{event.model_version} {event.kind}: {event.message}"

    def headline(self) -> str:
        acc = "-" if self.accuracy is None else f"{self.accuracy:.2%}"
        # While it runs, how fast it trains; once it ended, how much it trained.
        pace = (
            f"{self.samples_per_second:,.0f} samples/s"
            if self.state == "running"
            else f"{self.samples:,} samples trained"
        )
        return (
            f"job {self.job_id or '-'} {self.state}  version {self.version}  accuracy {acc}  "
            f"policy {self.policy or '-'}  {pace}"
        )

    def node_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        return [
            (
                n.node_id,
                n.role,
                n.state,
                f"{n.samples_per_second:,.0f}" if n.samples_per_second else "-",
                n.task or "-",
                n.tasks,
            )
            for n in sorted(self.nodes.values(), key=lambda n: n.node_id)
        ]


_COLUMNS = ("node", "role", "state", "samples/s", "task", "tasks")


class ProgressView(Protocol):
    def note(self, line: str) -> None:
        """Show one notable thing that happened."""

    def refresh(self, progress: Progress) -> None:
        """Show the current picture."""

    def close(self, progress: Progress) -> None:
        """Leave the last picture on screen."""


class SilentView:
    """``--json``: nothing but the result."""

    def note(self, line: str) -> None:
        pass

    def refresh(self, progress: Progress) -> None:
        pass

    def close(self, progress: Progress) -> None:
        pass


class LineView:
    """Plain lines: each event as it comes, a progress line per new version (at most one every
    ``every_s``), the nodes' table once at the end."""

    def __init__(self, out: TextIO, every_s: float = 2.0) -> None:
        self.out = out
        self.every_s = every_s
        self._last_version = -1
        self._last_at = -float("inf")
        self._last_line = ""

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def note(self, line: str) -> None:
        self._print(f"  * {line}")

    def refresh(self, progress: Progress) -> None:
        if not progress.job_id or progress.version == self._last_version:
            return
        now = time.monotonic()
        if now - self._last_at < self.every_s:
            return
        self._last_version, self._last_at = progress.version, now
        self._headline(progress)

    def _headline(self, progress: Progress) -> None:
        line = f"  {progress.headline()}"
        if line != self._last_line:
            self._last_line = line
            self._print(line)

    def close(self, progress: Progress) -> None:
        if progress.job_id:
            self._headline(progress)
        rows = progress.node_rows()
        if not rows:
            return
        widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(_COLUMNS)]
        for row in (_COLUMNS, *rows):
            cells = (v.ljust(w) for v, w in zip(row, widths, strict=True))
            self._print(("  " + "  ".join(cells)).rstrip())


class RichView:
    """A live table on a terminal, refreshed in place; events scroll above it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live = Live(
            Text("waiting for the cluster..."),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        self._live.start()

    @staticmethod
    def render(progress: Progress) -> Group:
        table = Table(*_COLUMNS, box=None, pad_edge=False)
        for row in progress.node_rows():
            table.add_row(*row)
        lines = [Text(progress.headline(), style="bold")]
        if progress.policy_reason:
            lines.append(Text(f"policy {progress.policy}: {progress.policy_reason}", style="dim"))
        return Group(*lines, table)

    def note(self, line: str) -> None:
        self._live.console.print(f"  * {line}", markup=False, highlight=False)

    def refresh(self, progress: Progress) -> None:
        self._live.update(self.render(progress))

    def close(self, progress: Progress) -> None:
        self._live.update(self.render(progress))
        self._live.stop()


def make_view(quiet: bool, out: TextIO) -> ProgressView:
    """Silent for ``--json``, a live table on a terminal, plain lines otherwise."""
    if quiet:
        return SilentView()
    console = Console(file=out)
    if console.is_terminal and not console.is_dumb_terminal:
        return RichView(console)
    return LineView(out)
