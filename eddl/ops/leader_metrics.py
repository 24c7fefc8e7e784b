"""The leader's Prometheus metrics: a collector that reads one typed snapshot per scrape.

Nothing inside the leader's logic knows about metrics. At wiring, the daemon hands over one
callable that returns a :class:`LeaderSnapshot` (:func:`leader_snapshot` reads it from the
coordinator under its lock), and the :class:`~eddl.ops.sink.MetricsSink` that the gRPC edge
feeds. Every scrape calls both once and turns them into metric families: nothing is polled,
nothing is kept between scrapes.

Names follow Prometheus' conventions (``eddl_`` prefix, base units, ``_total`` counters,
``_ratio`` for a fraction); labels take bounded values only (roles, job states, modes, RPC
method names, update outcomes, refusal codes and reasons), never a job id. One family,
``eddl_leader_node_samples_per_second``, is labelled by node id: it lists the nodes alive at
the scrape only, so its series at any time are bounded by the cluster's size. The job metrics
describe the running job, or else the latest one; a new job starts its counters again from
zero, which Prometheus' ``rate()`` and ``increase()`` treat as a counter reset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from eddl.ops.ha_metrics import HaSnapshot, ha_families
from eddl.ops.sink import UPDATE_OUTCOMES, MetricsSink

__all__ = [
    "MODES",
    "JobSnapshot",
    "LeaderCollector",
    "LeaderSnapshot",
    "NodeSpeed",
    "SyncFigures",
    "leader_snapshot",
]

MODES = ("sync", "async")
ROLES = ("worker", "gateway", "mcu", "leader")
JOB_STATES = ("queued", "running", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class JobSnapshot:
    """The running job (or the latest one) as the metrics show it."""

    status: str
    version: int
    accuracy: float | None
    samples_trained: int
    tasks_in_flight: int
    failed_tasks: int
    mode: str | None
    switches: int
    epochs: float
    link_busy: float | None = None  # share of the leader link's capacity in use (0..1)
    # Updates refused by the sanity bound, per node, and the nodes quarantined for it.
    refused_by_node: tuple[tuple[str, int], ...] = ()
    quarantined: tuple[str, ...] = ()

    @classmethod
    def from_status(cls, status: dict[str, Any]) -> JobSnapshot:
        """From the coordinator's ``job_status`` (a running job's summary or a stored one's)."""
        result = status.get("result") or {}
        accuracy = status.get("accuracy", result.get("accuracy"))
        mode = status.get("mode", result.get("mode"))
        policy = status.get("policy") or {}
        busy = policy.get("bandwidth") if isinstance(policy, dict) else None
        sanity = status.get("sanity") or {}
        refused = sanity.get("refused") if isinstance(sanity, dict) else None
        quarantined = sanity.get("quarantined") if isinstance(sanity, dict) else None
        return cls(
            status=str(status.get("status", "")),
            version=int(status.get("version", result.get("version")) or 0),
            accuracy=None if accuracy is None else float(accuracy),
            samples_trained=int(status.get("samples_trained", result.get("samples_trained")) or 0),
            tasks_in_flight=int(status.get("tasks_in_flight") or 0),
            failed_tasks=int(status.get("failed_tasks") or 0),
            mode=mode if mode in MODES else None,
            switches=len(status.get("switches", result.get("switches")) or []),
            epochs=float(status.get("epochs", result.get("epochs")) or 0.0),
            link_busy=None if busy is None else float(busy),
            refused_by_node=tuple(sorted((str(k), int(v)) for k, v in (refused or {}).items())),
            quarantined=tuple(sorted(str(k) for k in quarantined or {})),
        )


@dataclass(frozen=True)
class NodeSpeed:
    """The leader's estimate of a node's training speed in the running job."""

    node_id: str
    role: str
    samples_per_second: float


@dataclass(frozen=True)
class LeaderSnapshot:
    serving: bool
    term: int = 0
    nodes_alive: dict[str, int] = field(default_factory=dict)  # role -> count
    jobs: dict[str, int] = field(default_factory=dict)  # job state -> count
    job: JobSnapshot | None = None
    speeds: tuple[NodeSpeed, ...] = ()  # nodes alive with a measured speed
    ha: HaSnapshot | None = None  # a candidate's election and replication (None: lone leader)


def leader_snapshot(coordinator: Any | None) -> LeaderSnapshot:
    """Read a snapshot from a :class:`~eddl.leader.coordinator.Coordinator` (None: the leader
    does not serve yet). Uses only the coordinator's public reading methods."""
    if coordinator is None:
        return LeaderSnapshot(serving=False)
    from eddl.leader.errors import LeaderError  # the leader package is optional for workers

    alive: dict[str, int] = dict.fromkeys(ROLES, 0)
    for node in coordinator.membership.alive():
        alive[_role(node.role)] += 1
    jobs: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
    for record in coordinator.store.jobs():
        if record.status in jobs:
            jobs[record.status] += 1
    try:
        job: JobSnapshot | None = JobSnapshot.from_status(coordinator.job_status())
    except LeaderError:
        job = None  # no job was ever submitted
    speeds = tuple(
        NodeSpeed(str(row["node_id"]), _role(row.get("role")), float(row["samples_per_second"]))
        for row in coordinator.list_nodes()
        if row.get("alive") and row.get("samples_per_second") is not None
    )
    return LeaderSnapshot(True, int(coordinator.term), alive, jobs, job, speeds)


def _role(value: object) -> str:
    role = str(getattr(value, "value", value))
    return role if role in ROLES else "worker"


class LeaderCollector(Collector):
    """Metric families from ``snapshot()`` and ``sink`` at each scrape."""

    def __init__(
        self,
        snapshot: Callable[[], LeaderSnapshot],
        sink: MetricsSink,
        ha: Callable[[], HaSnapshot | None] | None = None,
        sync: Callable[[], SyncFigures] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._sink = sink
        self._ha = ha
        self._sync = sync

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the snapshot: let the registry collect instead

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield _gauge("eddl_leader_serving", "1 while the leader serves its gRPC services",
                     float(snap.serving))  # fmt: skip
        ha = self._ha() if self._ha is not None else None
        term = snap.term if ha is None else ha.term  # a candidate: the elected term
        yield _gauge("eddl_leader_term", "the leader's current term", term)
        if ha is not None:
            yield from ha_families(ha)
        alive = GaugeMetricFamily(
            "eddl_leader_nodes_alive", "nodes alive in the membership, by role", labels=["role"]
        )
        for role, n in sorted(snap.nodes_alive.items()):
            alive.add_metric([role], n)
        yield alive
        jobs = GaugeMetricFamily(
            "eddl_leader_jobs", "jobs in the leader's store, by state", labels=["state"]
        )
        for state, n in sorted(snap.jobs.items()):
            jobs.add_metric([state], n)
        yield jobs
        speed = GaugeMetricFamily(
            "eddl_leader_node_samples_per_second",
            "the leader's estimate of each alive node's training speed in the running job",
            labels=["node", "role"],
        )
        for node in sorted(snap.speeds, key=lambda n: n.node_id):
            speed.add_metric([node.node_id, node.role], node.samples_per_second)
        yield speed
        yield from self._job(snap.job)
        yield from self._counted()
        if self._sync is not None:
            yield from _sync_families(self._sync())

    def _job(self, job: JobSnapshot | None) -> Iterator[Metric]:
        if job is None:
            return
        yield _gauge("eddl_model_version", "model version of the current job", job.version)
        if job.accuracy is not None:
            yield _gauge(
                "eddl_model_accuracy_ratio",
                "test accuracy of the current job's model at its last evaluation (0..1)",
                job.accuracy,
            )
        yield _counter(
            "eddl_job_samples_trained", "samples trained into the current job's model",
            job.samples_trained,
        )  # fmt: skip
        yield _gauge("eddl_job_epochs", "passes over the training set so far", job.epochs)
        yield _gauge("eddl_job_tasks_in_flight", "tasks handed out and not back yet",
                     job.tasks_in_flight)  # fmt: skip
        yield _counter("eddl_job_task_failures", "tasks workers reported as failed",
                       job.failed_tasks)  # fmt: skip
        mode = GaugeMetricFamily(
            "eddl_job_policy_mode", "1 for the aggregation mode in force", labels=["mode"]
        )
        for name in MODES:
            mode.add_metric([name], float(job.mode == name))
        yield mode
        yield _counter("eddl_job_policy_switches", "switches between sync and async", job.switches)
        refused = CounterMetricFamily(
            "eddl_job_updates_refused_sanity",
            "updates refused by the sanity bound (non-finite, too far from their base), by node",
            labels=["node"],
        )
        for node, count in job.refused_by_node:
            refused.add_metric([node], count)
        yield refused
        yield _gauge("eddl_job_nodes_quarantined", "nodes quarantined in the current job",
                     len(job.quarantined))  # fmt: skip
        if job.link_busy is not None:
            yield _gauge(
                "eddl_job_link_busy_ratio",
                "share of the leader link's capacity the job's traffic used, over the auto "
                "policy's window (0..1)",
                job.link_busy,
            )

    def _counted(self) -> Iterator[Metric]:
        s = self._sink.snapshot()
        accepted = CounterMetricFamily(
            "eddl_leader_updates_accepted",
            "model updates taken in, by the leader's outcome",
            labels=["outcome"],
        )
        for outcome in UPDATE_OUTCOMES:
            accepted.add_metric([outcome], s.updates_accepted.get(outcome, 0))
        if "other" in s.updates_accepted:
            accepted.add_metric(["other"], s.updates_accepted["other"])
        yield accepted
        refused = CounterMetricFamily(
            "eddl_leader_updates_refused",
            "model updates refused, by gRPC status code and eddl-reason ('none': no reason)",
            labels=["code", "reason"],
        )
        for (code, reason), n in sorted(s.updates_refused.items()):
            refused.add_metric([code, reason], n)
        yield refused
        for name, what, values in (
            ("eddl_leader_received_bytes", "bytes of gRPC messages received", s.bytes_received),
            ("eddl_leader_sent_bytes", "bytes of gRPC messages sent", s.bytes_sent),
        ):
            family = CounterMetricFamily(name, f"{what}, by RPC method", labels=["method"])
            for method, n in sorted(values.items()):
                family.add_metric([method], n)
            yield family
        hist = s.update_seconds
        yield HistogramMetricFamily(
            "eddl_leader_update_seconds",
            "time from an update's first chunk to the leader's reply (receive, check, aggregate)",
            buckets=[(_bound(b), n) for b, n in hist.buckets],
            sum_value=hist.total,
        )
        commands = HistogramMetricFamily(
            "eddl_leader_command_seconds",
            "CPU time of the leader's owner thread per command (_hand_out: the scheduler, "
            "submit_update: the checks and the aggregator)",
            labels=["command"],
        )
        for name, hist in sorted(s.command_seconds.items()):
            commands.add_metric(
                [name], [(_bound(b), n) for b, n in hist.buckets], sum_value=hist.total
            )
        yield commands


class SyncFigures(Protocol):
    """The root's synchronisation meter, as a scrape reads it (``SyncMeter.totals()``)."""

    @property
    def syncs(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def workers(self) -> int: ...


def _sync_families(sync: SyncFigures) -> Iterator[Metric]:
    # BUC = n / t_sync over a scrape interval: workers / (increase(seconds) / increase(syncs))
    yield _counter(
        "eddl_leader_syncs",
        "synchronisations (a model pull and an update push) the root timed",
        sync.syncs,
    )
    yield _counter(
        "eddl_leader_sync_seconds", "seconds of the synchronisations the root timed", sync.seconds
    )
    yield _gauge(
        "eddl_leader_sync_workers",
        "workers that synchronised within the split window (a sub-leader as its group)",
        sync.workers,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
