"""Link figures per peer: the latest active probe plus a passive estimate from real transfers.

Daemons call :meth:`LinkTracker.observe_transfer` after each real transfer (a model pulled, an
update pushed) and :meth:`LinkTracker.record_probe` after a probe. A transfer's time includes one
round trip of request/response latency, which would make small transfers look slow; when the
peer's RTT is known (from a probe) it is taken off, never below half the measured time.
"""

from __future__ import annotations

import threading
from typing import Literal

from eddl.profiler.estimator import TransferEstimator
from eddl.profiler.probe_client import ProbeResult
from eddl.profiler.profiles import LinkEstimate, LinkSource, NetworkProfile

__all__ = ["Direction", "LinkTracker"]

Direction = Literal["upload", "download"]


class LinkTracker:
    """Network profile of this node towards its peers. Thread-safe."""

    def __init__(self, alpha: float = 0.4, half_life_s: float = 600.0) -> None:
        # Validate once here, so a bad setting fails at construction, not at the first transfer.
        TransferEstimator(alpha=alpha, half_life_s=half_life_s)
        self._alpha = alpha
        self._half_life_s = half_life_s
        self._lock = threading.Lock()
        self._probes: dict[str, ProbeResult] = {}
        self._passive: dict[tuple[str, Direction], TransferEstimator] = {}

    def record_probe(self, result: ProbeResult) -> None:
        """Keep ``result`` as the peer's active figure and as the prior of its passive ones."""
        with self._lock:
            self._probes[result.peer] = result
            peer, at = result.peer, result.measured_at
            self._estimator(peer, "upload").set_prior(result.upload_bytes_per_second, at)
            self._estimator(peer, "download").set_prior(result.download_bytes_per_second, at)

    def _estimator(self, peer: str, direction: Direction) -> TransferEstimator:
        key = (peer, direction)
        est = self._passive.get(key)
        if est is None:
            est = TransferEstimator(alpha=self._alpha, half_life_s=self._half_life_s)
            self._passive[key] = est
        return est

    def observe_transfer(
        self, peer: str, direction: Direction, nbytes: int, seconds: float, at: float
    ) -> None:
        """Record a real transfer of ``nbytes`` payload bytes that took ``seconds``."""
        if not peer:
            raise ValueError("peer must not be empty")
        if direction not in ("upload", "download"):
            raise ValueError(f"direction must be 'upload' or 'download', got {direction!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
        with self._lock:
            probe = self._probes.get(peer)
            effective = seconds
            if probe is not None and seconds > 0:
                effective = max(seconds - probe.rtt_seconds, seconds / 2)
            self._estimator(peer, direction).observe(nbytes, effective, at)

    def estimates(self, now: float) -> list[LinkEstimate]:
        """One PROBE entry per probed peer and one PASSIVE entry per peer with transfers."""
        out: list[LinkEstimate] = []
        with self._lock:
            peers = sorted({p for p, _ in self._passive} | set(self._probes))
            for peer in peers:
                probe = self._probes.get(peer)
                if probe is not None:
                    out.append(probe.to_link_estimate())
                up = self._passive.get((peer, "upload"))
                down = self._passive.get((peer, "download"))
                observed = [e for e in (up, down) if e is not None and e.observations]
                if not observed:
                    continue
                last = max(e.last_observed_at or 0.0 for e in observed)
                out.append(
                    LinkEstimate(
                        peer=peer,
                        rtt_seconds=None if probe is None else probe.rtt_seconds,
                        upload_bytes_per_second=_observed_rate(up, now),
                        download_bytes_per_second=_observed_rate(down, now),
                        source=LinkSource.PASSIVE,
                        measured_at=last,
                        confidence=min(e.confidence(now) for e in observed),
                        observations=sum(e.observations for e in observed),
                    )
                )
        return out

    def network_profile(self, now: float) -> NetworkProfile:
        return NetworkProfile(tuple(self.estimates(now)))


def _observed_rate(est: TransferEstimator | None, now: float) -> float | None:
    if est is None or est.observations == 0:
        return None
    rate = est.bytes_per_second(now)
    return None if rate is None else float(rate)
