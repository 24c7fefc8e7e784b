"""Counters that must be counted where things happen, kept apart from any daemon's logic.

Most of a leader's metrics are read from its state when Prometheus scrapes
(:mod:`eddl.ops.leader_metrics`); what no state holds is counted here as it happens: updates
taken or refused (by reason), bytes received and sent per RPC method, and how long the leader
took over each update. :mod:`eddl.ops.interceptor` feeds this at the gRPC edge; the collector
reads :meth:`MetricsSink.snapshot`. Thread-safe: gRPC and the scrape thread both touch it.

Label values are bounded: methods are the server's own RPC names, reasons the fixed reasons of
:mod:`eddl.net.status` (anything else is counted as ``other``).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass

__all__ = ["UPDATE_SECONDS_BUCKETS", "HistogramSnapshot", "MetricsSink", "SinkSnapshot"]

# From a small update on loopback (a few ms) to a large model over a slow link.
UPDATE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_MAX_LABEL_VALUES = 64  # a guard: past it, new label values fold into "other"


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last bound is +Inf), and the sum of values."""

    buckets: tuple[tuple[float, int], ...]
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


@dataclass(frozen=True)
class SinkSnapshot:
    updates_accepted: int
    updates_refused: dict[str, int]  # reason -> count
    bytes_received: dict[str, int]  # RPC method -> bytes
    bytes_sent: dict[str, int]
    update_seconds: HistogramSnapshot


class MetricsSink:
    def __init__(self, buckets: tuple[float, ...] = UPDATE_SECONDS_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be increasing and distinct")
        self._lock = threading.Lock()
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._accepted = 0
        self._refused: Counter[str] = Counter()
        self._received: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()

    def update_accepted(self, seconds: float) -> None:
        with self._lock:
            self._accepted += 1
            self._observe(seconds)

    def update_refused(self, reason: str, seconds: float) -> None:
        with self._lock:
            self._refused[_bounded(self._refused, reason or "other")] += 1
            self._observe(seconds)

    def received(self, method: str, nbytes: int) -> None:
        with self._lock:
            self._received[_bounded(self._received, method)] += max(0, nbytes)

    def sent(self, method: str, nbytes: int) -> None:
        with self._lock:
            self._sent[_bounded(self._sent, method)] += max(0, nbytes)

    def snapshot(self) -> SinkSnapshot:
        with self._lock:
            running, buckets = 0, []
            for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
                running += n
                buckets.append((bound, running))
            return SinkSnapshot(
                self._accepted,
                dict(self._refused),
                dict(self._received),
                dict(self._sent),
                HistogramSnapshot(tuple(buckets), self._sum),
            )

    def _observe(self, seconds: float) -> None:
        value = max(0.0, seconds)
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value


def _bounded(counter: Counter[str], label: str) -> str:
    return label if label in counter or len(counter) < _MAX_LABEL_VALUES else "other"
