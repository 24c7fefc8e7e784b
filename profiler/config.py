"""The profiler's settings: section ``[profiler]`` of a TOML file, ``EDDL_PROFILER_*``, flags.

Loaded with :func:`eddl.config.load_config` (``load_config(ProfilerConfig, "profiler", path)``);
unknown keys and out-of-range values are a :class:`~eddl.config.ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eddl.profiler.probe_client import ProbeConfig
from eddl.profiler.sampler import DEFAULT_PERIOD_S

__all__ = ["ProfilerConfig"]


@dataclass(frozen=True)
class ProfilerConfig:
    """How often to sample, how hard to probe, how fast estimates forget."""

    period_s: float = DEFAULT_PERIOD_S
    """Dynamic profile sampling period."""
    history: int = 120
    """Dynamic samples kept in memory."""
    benchmark_budget_s: float = 1.0
    """Wall time of one compute micro-benchmark."""
    estimator_alpha: float = 0.4
    """EWMA weight of a new task or transfer observation."""
    estimator_half_life_s: float = 600.0
    """Age after which an estimate's confidence has halved."""
    probe_payload_bytes: int = 1 << 20
    probe_chunk_bytes: int = 256 * 1024
    probe_repeats: int = 3
    probe_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("period_s", "benchmark_budget_s", "estimator_half_life_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history}")
        if not 0 < self.estimator_alpha <= 1:
            raise ValueError(f"estimator_alpha must lie in (0, 1], got {self.estimator_alpha}")
        if self.benchmark_budget_s > 60:
            raise ValueError(f"benchmark_budget_s must be <= 60, got {self.benchmark_budget_s}")
        self.probe_config()  # raises ValueError on a bad probe setting

    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(
            payload_bytes=self.probe_payload_bytes,
            chunk_bytes=self.probe_chunk_bytes,
            repeats=self.probe_repeats,
            timeout_s=self.probe_timeout_s,
        )
