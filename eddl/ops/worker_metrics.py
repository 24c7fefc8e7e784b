"""A worker's or gateway's Prometheus metrics, read from the daemon at scrape time.

:func:`worker_snapshot` reads the counters a :class:`~eddl.worker.daemon.WorkerDaemon` keeps
anyway (tasks done and failed, samples, its samples/s estimate, its passive link estimates),
and for a :class:`~eddl.worker.gateway.Gateway` those of each device's agent plus the device's
serial-link and on-device training time. Labels: ``device`` (the gateway's configured devices,
'' for a plain worker) and ``peer`` (a leader address from the configured list): both bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LinkFigures", "McuFigures", "NodeFigures", "WorkerCollector", "worker_snapshot"]


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


def _node(daemon: Any, device: str) -> NodeFigures:
    links = [
        LinkFigures(e.peer, e.rtt_seconds, e.upload_bytes_per_second, e.download_bytes_per_second)
        for e in daemon.links.estimates(time.time())
    ]
    counters = getattr(daemon, "counters", None)
    mcu = (
        None
        if counters is None
        else McuFigures(counters.tasks, counters.link_seconds, counters.train_seconds)
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
    return [
        _node(agent, node_id.removeprefix(prefix))
        for node_id, agent in sorted(agents.items())
        if agent is not None
    ]


class WorkerCollector(Collector):
    def __init__(self, snapshot: Callable[[], list[NodeFigures]]) -> None:
        self._snapshot = snapshot

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
                mcu_tasks.add_metric(d, n.mcu.tasks)
        yield from (joined, done, failed, samples, speed, rtt, up, down)
        if any(n.mcu is not None for n in nodes):
            yield from (serial, compute, mcu_tasks)
