"""A worker's or gateway's Prometheus metrics, read from the daemon at scrape time.

:func:`worker_snapshot` reads the counters a :class:`~eddl.worker.daemon.WorkerDaemon` keeps
anyway (tasks done and failed, samples, its samples/s estimate, its passive link estimates),
and for a :class:`~eddl.worker.gateway.Gateway` those of each device's agent plus the device's
serial-link and on-device training time. What no counter keeps, how long each task took, is
counted by a :class:`TaskSink` that the daemon's ``on_task`` hook feeds. Labels: ``device``
(the gateway's configured devices, '' for a plain worker) and ``peer`` (a leader address from
the configured list): both bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from eddl.ops.sink import Histogram, HistogramSnapshot

__all__ = [
    "TASK_SECONDS_BUCKETS",
    "LinkFigures",
    "McuFigures",
    "NodeFigures",
    "TaskSink",
    "WorkerCollector",
    "worker_snapshot",
]

# From a short task on a fast host to a microcontroller's task over a slow serial link.
TASK_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_MAX_DEVICES = 64  # a guard: a gateway's devices are configured, so far fewer


@dataclass(frozen=True)
class TaskFigures:
    """One device's task durations and training seconds, as counted so far."""

    seconds: HistogramSnapshot
    train_seconds: float


class TaskSink:
    """Task durations per device, fed by the daemon's ``on_task`` hook (``observe``).

    ``prefix`` is the gateway's node id and a dot: a device's node id without it is the
    ``device`` label; a plain worker's tasks carry the label ''.
    """

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._seconds: dict[str, Histogram] = {}
        self._train: dict[str, float] = {}

    def observe(self, timing: Any) -> None:
        """``timing``: a :class:`~eddl.worker.daemon.TaskTiming`."""
        node = str(timing.node_id)
        device = "" if self._prefix is None else node.removeprefix(self._prefix)
        with self._lock:
            if device not in self._seconds and len(self._seconds) >= _MAX_DEVICES:
                device = "other"
            hist = self._seconds.setdefault(device, Histogram(TASK_SECONDS_BUCKETS))
            hist.observe(float(timing.seconds))
            self._train[device] = self._train.get(device, 0.0) + max(0.0, timing.train_seconds)

    def snapshot(self) -> dict[str, TaskFigures]:
        with self._lock:
            return {d: TaskFigures(h.snapshot(), self._train[d]) for d, h in self._seconds.items()}


@dataclass(frozen=True)
class LinkFigures:
    peer: str
    rtt_seconds: float | None
    upload_bytes_per_second: float | None
    download_bytes_per_second: float | None


@dataclass(frozen=True)
class McuFigures:
    tasks: int
    serial_seconds: float
    train_seconds: float
    busy_seconds: float  # the whole task on the device: serial link, training, the rest


@dataclass(frozen=True)
class NodeFigures:
    """One cluster node this process speaks for: the worker itself, or one device."""

    device: str
    joined: bool
    tasks_done: int
    tasks_failed: int
    samples_trained: int
    samples_per_second: float
    links: list[LinkFigures] = field(default_factory=list)
    mcu: McuFigures | None = None


def _node(daemon: Any, device: str, counters: Any = None) -> NodeFigures:
    links = [
        LinkFigures(e.peer, e.rtt_seconds, e.upload_bytes_per_second, e.download_bytes_per_second)
        for e in daemon.links.estimates(time.time())
    ]
    mcu = (
        None
        if counters is None
        else McuFigures(
            counters.tasks, counters.link_seconds, counters.train_seconds, counters.busy_seconds
        )
    )
    return NodeFigures(
        device,
        bool(daemon.joined),
        int(daemon.tasks_done),
        int(daemon.tasks_failed),
        int(daemon.samples_done),
        float(daemon.samples_per_second),
        links,
        mcu,
    )


def worker_snapshot(daemon: Any) -> list[NodeFigures]:
    """The figures of a worker daemon, or of each device a gateway bridges right now."""
    agents = getattr(daemon, "agents", None)
    if agents is None:
        return [_node(daemon, "")]
    prefix = f"{daemon.config.node_id}."
    # Each device is an McuAgent: its WorkerDaemon counts tasks, its executor the device time.
    return [
        _node(agent.daemon, node_id.removeprefix(prefix), agent.counters)
        for node_id, agent in sorted(agents.items())
        if agent is not None
    ]


class WorkerCollector(Collector):
    def __init__(
        self, snapshot: Callable[[], list[NodeFigures]], tasks: TaskSink | None = None
    ) -> None:
        self._snapshot = snapshot
        self._tasks = tasks

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        nodes = self._snapshot()
        dev = ["device"]
        joined = GaugeMetricFamily("eddl_worker_joined", "1 while joined to a leader", labels=dev)
        done = CounterMetricFamily("eddl_worker_tasks_done", "tasks trained and pushed", labels=dev)
        failed = CounterMetricFamily(
            "eddl_worker_tasks_failed", "tasks reported to the leader as failed", labels=dev
        )
        samples = CounterMetricFamily(
            "eddl_worker_samples_trained", "samples trained in tasks pushed", labels=dev
        )
        speed = GaugeMetricFamily(
            "eddl_worker_samples_per_second", "training speed (moving average)", labels=dev
        )
        link = ["device", "peer"]
        rtt = GaugeMetricFamily("eddl_worker_link_rtt_seconds", "round-trip time", labels=link)
        up = GaugeMetricFamily(
            "eddl_worker_link_upload_bytes_per_second", "upload bandwidth estimate", labels=link
        )
        down = GaugeMetricFamily(
            "eddl_worker_link_download_bytes_per_second", "download bandwidth estimate", labels=link
        )
        serial = CounterMetricFamily(
            "eddl_mcu_serial_seconds", "time on the device's serial link", labels=dev
        )
        compute = CounterMetricFamily(
            "eddl_mcu_train_seconds", "time the device spent training", labels=dev
        )
        mcu_busy = CounterMetricFamily(
            "eddl_mcu_busy_seconds",
            "time the device's tasks took (serial link, training and the rest)",
            labels=dev,
        )
        mcu_tasks = CounterMetricFamily("eddl_mcu_tasks", "tasks the device trained", labels=dev)
        for n in nodes:
            d = [n.device]
            joined.add_metric(d, float(n.joined))
            done.add_metric(d, n.tasks_done)
            failed.add_metric(d, n.tasks_failed)
            samples.add_metric(d, n.samples_trained)
            speed.add_metric(d, n.samples_per_second)
            for e in n.links:
                for family, value in (
                    (rtt, e.rtt_seconds),
                    (up, e.upload_bytes_per_second),
                    (down, e.download_bytes_per_second),
                ):
                    if value is not None:
                        family.add_metric([n.device, e.peer], value)
            if n.mcu is not None:
                serial.add_metric(d, n.mcu.serial_seconds)
                compute.add_metric(d, n.mcu.train_seconds)
                mcu_busy.add_metric(d, n.mcu.busy_seconds)
                mcu_tasks.add_metric(d, n.mcu.tasks)
        yield from (joined, done, failed, samples, speed, rtt, up, down)
        if any(n.mcu is not None for n in nodes):
            yield from (serial, compute, mcu_busy, mcu_tasks)
        if self._tasks is not None:
            yield from _task_families(self._tasks.snapshot())


def _task_families(tasks: dict[str, TaskFigures]) -> Iterator[Metric]:
    seconds = HistogramMetricFamily(
        "eddl_worker_task_seconds",
        "a task's time on this node, from its receipt to the leader's reply to its update "
        "(model pull, samples, training, update push)",
        labels=["device"],
    )
    train = CounterMetricFamily(
        "eddl_worker_train_seconds", "time spent training, in tasks pushed", labels=["device"]
    )
    for device, figures in sorted(tasks.items()):
        buckets = [
            ("+Inf" if b == float("inf") else repr(b), n) for b, n in figures.seconds.buckets
        ]
        seconds.add_metric([device], buckets, figures.seconds.total)
        train.add_metric([device], figures.train_seconds)
    yield seconds
    yield train
