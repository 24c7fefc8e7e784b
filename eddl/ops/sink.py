"""Counters that must be counted where things happen, kept apart from any daemon's logic.

Most of a leader's metrics are read from its state when Prometheus scrapes
(:mod:`eddl.ops.leader_metrics`); what no state holds is counted here as it happens: updates
taken (by outcome) or refused (by gRPC status code and reason), bytes received and sent per
RPC method, how long the leader took over each update, and the CPU time the leader's owner
thread spent in each kind of command (a task handed out, an update folded in, a heartbeat).
:mod:`eddl.ops.interceptor` feeds this at the gRPC edge and the leader's owner its command
times; the collector reads :meth:`MetricsSink.snapshot`. Thread-safe: gRPC and
the scrape thread both touch it.

Label values are bounded: outcomes are the leader's fixed acknowledgements
(:data:`UPDATE_OUTCOMES`), codes the members of ``grpc.StatusCode``, reasons the fixed
``eddl-reason`` values (:data:`REFUSAL_REASONS`, ``none`` when the call named none) and methods
the server's own RPC names. Anything else is counted as ``other``.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

import grpc

__all__ = [
    "COMMAND_SECONDS_BUCKETS",
    "REFUSAL_REASONS",
    "UPDATE_OUTCOMES",
    "UPDATE_SECONDS_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "MetricsSink",
    "SinkSnapshot",
]

# From a small update on loopback (a few ms) to a large model over a slow link.
UPDATE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Owner-thread CPU per command: from a heartbeat (tens of µs) to folding a large model.
COMMAND_SECONDS_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.1, 1.0
)  # fmt: skip
# What the leader answers to an update it takes: folded into the model at once, kept for the
# next async buffer flush, folded although stale, or kept for the sync round.
UPDATE_OUTCOMES = ("aggregated", "buffered", "stale-folded", "round", "duplicate")
# The ``eddl-reason`` trailing-metadata values a refusal may carry (eddl.net.status): the node
# must join again. Other refusals are told apart by their status code only.
REFUSAL_REASONS = ("unknown-node", "stale-term", "unauthenticated", "permission-denied")
_CODES = frozenset(code.name.lower() for code in grpc.StatusCode)
_MAX_LABEL_VALUES = 64  # a guard: past it, new label values fold into "other"


@dataclass(frozen=True)
class HistogramSnapshot:
    """Cumulative counts per upper bound (the last bound is +Inf), and the sum of values."""

    buckets: tuple[tuple[float, int], ...]
    total: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


class Histogram:
    """Observations counted per bucket (the caller serialises calls)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram buckets must be increasing and distinct")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self._sum = 0.0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        running, buckets = 0, []
        for bound, n in zip((*self._bounds, float("inf")), self._counts, strict=True):
            running += n
            buckets.append((bound, running))
        return HistogramSnapshot(tuple(buckets), self._sum)


@dataclass(frozen=True)
class SinkSnapshot:
    updates_accepted: dict[str, int]  # outcome -> count
    updates_refused: dict[tuple[str, str], int]  # (status code, reason) -> count
    bytes_received: dict[str, int]  # RPC method -> bytes
    bytes_sent: dict[str, int]
    update_seconds: HistogramSnapshot
    # command name (the owner's function: ``_hand_out``, ``submit_update``...) -> CPU seconds
    command_seconds: dict[str, HistogramSnapshot] = field(default_factory=dict)


class MetricsSink:
    def __init__(self, buckets: tuple[float, ...] = UPDATE_SECONDS_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._seconds = Histogram(buckets)
        self._accepted: Counter[str] = Counter()
        self._refused: Counter[tuple[str, str]] = Counter()
        self._received: Counter[str] = Counter()
        self._sent: Counter[str] = Counter()
        self._commands: dict[str, Histogram] = {}

    def update_accepted(self, outcome: str, seconds: float) -> None:
        with self._lock:
            self._accepted[outcome if outcome in UPDATE_OUTCOMES else "other"] += 1
            self._seconds.observe(seconds)

    def update_refused(self, code: str, reason: str, seconds: float) -> None:
        """``code``: a ``grpc.StatusCode`` name; ``reason``: the call's ``eddl-reason``."""
        code = code.lower()
        key = (
            code if code in _CODES else "other",
            reason if reason in REFUSAL_REASONS else ("none" if not reason else "other"),
        )
        with self._lock:
            self._refused[key] += 1
            self._seconds.observe(seconds)

    def received(self, method: str, nbytes: int) -> None:
        with self._lock:
            self._received[_bounded(self._received, method)] += max(0, nbytes)

    def sent(self, method: str, nbytes: int) -> None:
        with self._lock:
            self._sent[_bounded(self._sent, method)] += max(0, nbytes)

    def command(self, name: str, seconds: float) -> None:
        """The leader's owner thread spent ``seconds`` of CPU in one command ``name``."""
        with self._lock:
            hist = self._commands.get(name)
            if hist is None:
                if len(self._commands) >= _MAX_LABEL_VALUES:
                    name = "other"
                hist = self._commands.setdefault(name, Histogram(COMMAND_SECONDS_BUCKETS))
            hist.observe(seconds)

    def snapshot(self) -> SinkSnapshot:
        with self._lock:
            return SinkSnapshot(
                dict(self._accepted),
                dict(self._refused),
                dict(self._received),
                dict(self._sent),
                self._seconds.snapshot(),
                {name: hist.snapshot() for name, hist in self._commands.items()},
            )


def _bounded(counter: Counter[str], label: str) -> str:
    return label if label in counter or len(counter) < _MAX_LABEL_VALUES else "other"
