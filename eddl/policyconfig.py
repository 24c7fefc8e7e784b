"""The thresholds of the automatic sync/async policy: a job's ``[job.policy]`` table.

They are part of a :class:`~eddl.jobspec.JobSpec` (so the CLI checks them before a job is sent),
and :class:`eddl.leader.policy.AutoPolicy` applies them; that module explains each signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["PolicyConfig"]

# Seconds, counts and ratios alike: anything larger is a typo, and a number that big would
# only turn the policy off in an obscure way.
_MAX_VALUE = 1e9


@dataclass(frozen=True)
class PolicyConfig:
    """Thresholds of the auto policy. ``*_high`` enters async, ``*_low`` returns to sync."""

    window_s: float = 20.0
    # Four rounds of four workers. The first rounds of a job are noisy (workers start at
    # different moments, the leader is busy starting the job): over two rounds a cluster whose
    # rounds idle 12-18% in steady state was measured anywhere from 19% to 46%.
    min_tasks: int = 16
    # Workers idle 25% of the time in sync rounds: async would do 1.33x more work per second.
    # That is the floor; the staleness cost raises the bar when async would pay more than this
    # (an update one version stale is worth 71% of a fresh one under FedBuff's discount).
    # Below 10% the barrier costs less than a stale update may.
    idle_high: float = 0.25
    idle_low: float = 0.1
    # Task times on shared machines are noisy (1.5x between identical tasks is common), so
    # the band is wide: only a real straggler (2.5x the median) flips the mode.
    spread_high: float = 2.5
    spread_low: float = 1.5
    # Expiries in the window at which sync is not "no worse" (blocks a return to sync; the
    # stalls they cause in sync are measured as idle). Clean leaves and joins do not count.
    churn_high: int = 2
    churn_low: int = 0
    bandwidth_high: float = 0.85
    bandwidth_low: float = 0.5
    # Updates 4 versions old on average: async is mostly averaging old models.
    staleness_high: float = 4.0
    # Predicted progress per second of async over sync (FedBuff only, see AutoPolicy): leave
    # sync at 1.3x; a return to sync is blocked while async is predicted above 1.1x, and made
    # when sync is predicted 1.3x better. With four workers and K = 3 the 1.3x bar is 27.5%
    # idle, close to the idle rule's 29%; with eight workers async is predicted 1.46x at no idle.
    rate_high: float = 1.3
    rate_low: float = 1.1
    min_dwell_s: float = 20.0
    memory_s: float = 120.0

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.min_dwell_s < 0 or self.memory_s < 0:
            raise ValueError("window_s must be > 0, min_dwell_s and memory_s >= 0")
        if self.min_tasks < 2:
            raise ValueError("min_tasks must be >= 2")
        if not 0.0 <= self.idle_low < self.idle_high <= 1.0:
            raise ValueError("need 0 <= idle_low < idle_high <= 1")
        if not 1.0 <= self.spread_low < self.spread_high:
            raise ValueError("need 1 <= spread_low < spread_high")
        if not 0 <= self.churn_low < self.churn_high:
            raise ValueError("need 0 <= churn_low < churn_high")
        if not 0.0 <= self.bandwidth_low < self.bandwidth_high <= 1.0:
            raise ValueError("need 0 <= bandwidth_low < bandwidth_high <= 1")
        if not self.staleness_high > 0:
            raise ValueError("need staleness_high > 0")
        if not 1.0 <= self.rate_low < self.rate_high:
            raise ValueError("need 1 <= rate_low < rate_high")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> PolicyConfig:
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown policy key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            want_int = known[name] in (int, "int")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"policy.{name}: expected a number, got {value!r}")
            if want_int and not isinstance(value, int):
                raise ValueError(f"policy.{name}: expected an integer, got {value!r}")
            if not (math.isfinite(value) and abs(value) <= _MAX_VALUE):
                raise ValueError(f"policy.{name}: must be finite and at most {_MAX_VALUE:g}")
            values[name] = value if want_int else float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
