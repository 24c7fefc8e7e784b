"""``WorkerConfig``: what an ``eddl-worker`` daemon needs, from TOML ``[worker]``, env, flags."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field

from eddl.config import ConfigError, check_address

__all__ = ["WorkerConfig"]


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerConfig:
    """Settings of one worker daemon (``EDDL_WORKER_<FIELD>`` in the environment).

    ``leaders`` is an ordered list of leader addresses: the worker talks to the first that
    answers and moves down the list when one goes away (leader failover builds on this).
    ``datasets`` names the datasets this worker holds locally (prefetched); for any other
    dataset it fetches samples by index from the leader. ``throttle`` F >= 1 makes the worker
    F times slower (it idles (F - 1) x the training time after each task): an aid for demos and
    benchmarks of heterogeneity.
    """

    leaders: list[str] = field(default_factory=lambda: ["127.0.0.1:50051"])
    node_id: str = field(default_factory=_default_node_id)
    join_token: str = ""
    datasets: list[str] = field(default_factory=lambda: ["digits", "mnist-10k"])
    throttle: float = 1.0
    poll_ms: int = 1000
    chunk_bytes: int = 1 << 20
    max_model_bytes: int = 512 * 1024 * 1024
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    rpc_timeout_s: float = 30.0
    log_level: str = "INFO"
    # The worker's own endpoint: gRPC health (SERVING while joined to a leader), reflection
    # and the Probe service, so leaders and operators can check it and measure its link.
    # An empty string serves nothing.
    bind: str = "127.0.0.1:0"
    port_file: str | None = None

    def __post_init__(self) -> None:
        if not self.leaders:
            raise ConfigError("worker.leaders: at least one leader address is needed")
        for address in self.leaders:
            check_address(address, "worker.leaders")
        if not self.node_id or any(c.isspace() for c in self.node_id):
            raise ConfigError(f"worker.node_id: {self.node_id!r} must be non-empty, no spaces")
        if not math.isfinite(self.throttle) or self.throttle < 1.0:
            raise ConfigError(f"worker.throttle: {self.throttle} must be a finite number >= 1")
        if self.poll_ms <= 0:
            raise ConfigError("worker.poll_ms must be positive")
        if not 1024 <= self.chunk_bytes <= 3 << 20:
            raise ConfigError("worker.chunk_bytes must be within 1 KiB .. 3 MiB")
        if self.max_model_bytes <= 0:
            raise ConfigError("worker.max_model_bytes must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ConfigError("worker: need 0 < backoff_initial_s <= backoff_max_s")
        if self.rpc_timeout_s <= 0:
            raise ConfigError("worker.rpc_timeout_s must be positive")
        if self.bind:
            check_address(self.bind, "worker.bind")
