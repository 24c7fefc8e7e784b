"""Reptile's outer step as a synchronous rule: ``θ + ε · Σ_i w_i (φ_i − θ)``.

The round's client models ``φ_i`` (full, or with ``allow_partial`` a subset of the names, as
when local layers stay on the devices) are turned into deltas against the global model and
folded in by :func:`eddl.learn.reptile.reptile_update`, weighted by ``num_samples``. A name
nobody sent keeps its global value. With ``meta_lr = 1`` this is FedAvg over the senders.
With ``schedule`` (a :class:`~eddl.learn.reptile.MetaLrSchedule`) the step of the round that
makes version ``v + 1`` is ``schedule.at(v)`` (the last round's step after ``rounds``), and
``meta_lr`` is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import check_bool, check_round
from eddl.learn.params import Params
from eddl.learn.reptile import MetaLrSchedule, ReptileError, reptile_update

__all__ = ["Reptile"]


class Reptile(SyncRule):
    name = "reptile"

    def __init__(
        self,
        *,
        meta_lr: float = 1.0,
        allow_partial: bool = False,
        schedule: MetaLrSchedule | None = None,
    ) -> None:
        if isinstance(meta_lr, bool) or not isinstance(meta_lr, int | float):
            raise AggregationError(f"meta_lr must be a number, got {meta_lr!r}")
        if not 0.0 < float(meta_lr) <= 1.0:
            raise AggregationError(f"meta_lr must be in (0, 1], got {meta_lr!r}")
        self.meta_lr = float(meta_lr)
        self.allow_partial = check_bool(allow_partial, "allow_partial")
        if schedule is not None and not isinstance(schedule, MetaLrSchedule):
            raise AggregationError(f"schedule must be a MetaLrSchedule, got {schedule!r}")
        self.schedule = schedule

    def step(self, version: int) -> float:
        """ε of the round that starts from ``version``."""
        s = self.schedule
        return self.meta_lr if s is None else s.at(min(max(version, 0), s.rounds - 1))

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "meta_lr": self.meta_lr,
            "allow_partial": self.allow_partial,
        }
        if self.schedule is not None:
            out["meta_lr_final"] = self.schedule.meta_lr_final
            out["rounds"] = self.schedule.rounds
        return out

    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        check_round(global_params, updates, version, allow_partial=self.allow_partial)
        deltas = [
            {n: a.astype("float64") - global_params[n] for n, a in u.params.items()}
            for u in updates
        ]
        try:
            return reptile_update(
                global_params, deltas, [int(u.num_samples) for u in updates], self.step(version)
            )
        except ReptileError as exc:
            raise AggregationError(str(exc)) from exc
