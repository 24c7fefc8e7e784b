"""What the daemons' entry points wire in: metrics, readiness and status for systemd.

``eddl-leader`` and ``eddl-worker`` each build one of these objects before their daemon, pass
its hooks to the daemon, and close it when the daemon returns:

* :class:`LeaderOps`: a :class:`~eddl.ops.sink.MetricsSink` fed by the gRPC interceptor in
  :attr:`LeaderOps.interceptors`, the metrics endpoint (when ``metrics_bind`` is set) and the
  systemd notifier: ``READY=1`` once the leader serves, ``STOPPING=1`` on a stop request,
  ``STATUS=`` lines with the term, the job and its version (refreshed with each watchdog ping).
* :class:`WorkerOps`: the same for a worker or a gateway, reading the daemon at scrape time;
  task durations come from the daemon's ``on_task`` hook into a
  :class:`~eddl.ops.worker_metrics.TaskSink`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc

from eddl.ops.ha_metrics import HaSnapshot, ha_snapshot
from eddl.ops.interceptor import MetricsInterceptor
from eddl.ops.leader_metrics import LeaderCollector, LeaderSnapshot, leader_snapshot
from eddl.ops.metrics_http import MetricsServer, serve_metrics
from eddl.ops.sdnotify import SystemdNotifier
from eddl.ops.sink import MetricsSink
from eddl.ops.worker_metrics import TaskSink, WorkerCollector, worker_snapshot

__all__ = ["LeaderOps", "WorkerOps", "leader_status_line"]


def leader_status_line(snap: LeaderSnapshot, ha: HaSnapshot | None = None) -> str:
    """One line for ``systemctl status``: role, term, nodes, job and model version. A
    candidate's role is ``root`` or ``standby``, with the elected term."""
    role, term = ("leader", snap.term) if ha is None else (f"leader {ha.role}", ha.term)
    if not snap.serving:
        return f"{role} starting"
    if ha is not None and not ha.is_root:
        return f"{role}, term {term}, holds committed version {ha.committed_version}"
    nodes = sum(snap.nodes_alive.values())
    job = snap.job
    what = "no job" if job is None else f"job {job.status}, model version {job.version}"
    return f"{role} serving, term {term}, {nodes} node(s) alive, {what}"


class _Ops:
    def __init__(self, notifier: SystemdNotifier | None) -> None:
        self.notifier = notifier or SystemdNotifier()
        self.metrics: MetricsServer | None = None
        self._watchdog: asyncio.Task[None] | None = None

    def _start_watchdog(self, status: Callable[[], str]) -> None:
        if self.notifier.watchdog_s is not None:
            self._watchdog = asyncio.get_running_loop().create_task(self.notifier.watchdog(status))

    def stopping(self) -> None:
        self.notifier.stopping()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None


class LeaderOps(_Ops):
    def __init__(
        self,
        metrics_bind: str,
        coordinator: Callable[[], Any],
        notifier: SystemdNotifier | None = None,
        ha: Callable[[], Any] | None = None,
        sync: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(notifier)
        self.sink = MetricsSink()
        self.interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor(self.sink)]
        self._coordinator = coordinator
        self._ha = ha
        if metrics_bind:
            collector = LeaderCollector(self.snapshot, self.sink, self.ha_snapshot, sync)
            self.metrics = serve_metrics(metrics_bind, collector)

    def snapshot(self) -> LeaderSnapshot:
        return leader_snapshot(self._coordinator())

    def ha_snapshot(self) -> HaSnapshot | None:
        """A candidate's election and replication (None: a lone leader, or not started)."""
        node = self._ha() if self._ha is not None else None
        return None if node is None else ha_snapshot(node)

    def status_line(self) -> str:
        return leader_status_line(self.snapshot(), self.ha_snapshot())

    def serving(self, address: str) -> None:
        """The leader serves: tell systemd, and start the watchdog pings."""
        self.notifier.ready(f"{self.status_line()} on {address}")
        self._start_watchdog(self.status_line)


class WorkerOps(_Ops):
    def __init__(
        self, metrics_bind: str, daemon: Any, notifier: SystemdNotifier | None = None
    ) -> None:
        super().__init__(notifier)
        self._daemon = daemon
        gateway = hasattr(daemon, "agents")
        self.tasks = TaskSink(f"{daemon.config.node_id}." if gateway else None)
        daemon.on_task.append(self.tasks.observe)
        if metrics_bind:
            self.metrics = serve_metrics(
                metrics_bind, WorkerCollector(lambda: worker_snapshot(daemon), self.tasks)
            )

    def status_line(self) -> str:
        nodes = worker_snapshot(self._daemon)
        joined = sum(n.joined for n in nodes)
        done = sum(n.tasks_done for n in nodes)
        role = "gateway" if hasattr(self._daemon, "agents") else "worker"
        return f"{role}: {joined}/{len(nodes)} node(s) joined, {done} task(s) done"

    def serving(self) -> None:
        self.notifier.ready(self.status_line())
        self._start_watchdog(self.status_line)
