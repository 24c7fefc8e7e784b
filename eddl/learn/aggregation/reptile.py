"""Reptile's outer step as a synchronous rule: ``θ + ε · Σ_i w_i (φ_i − θ)``.

The round's client models ``φ_i`` (full, or with ``allow_partial`` a subset of the names, as
when local layers stay on the devices) are turned into deltas against the global model and
folded in by :func:`eddl.learn.reptile.reptile_update`, weighted by ``num_samples``. A name
nobody sent keeps its global value. With ``meta_lr = 1`` this is FedAvg over the senders.
A caller with an ε schedule builds one rule per round (or sets ``meta_lr``).
"""

from __future__ import annotations

from collections.abc import Sequence

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import check_bool, check_round
from eddl.learn.params import Params
from eddl.learn.reptile import ReptileError, reptile_update

__all__ = ["Reptile"]


class Reptile(SyncRule):
    name = "reptile"

    def __init__(self, *, meta_lr: float = 1.0, allow_partial: bool = False) -> None:
        if isinstance(meta_lr, bool) or not isinstance(meta_lr, int | float):
            raise AggregationError(f"meta_lr must be a number, got {meta_lr!r}")
        if not 0.0 < float(meta_lr) <= 1.0:
            raise AggregationError(f"meta_lr must be in (0, 1], got {meta_lr!r}")
        self.meta_lr = float(meta_lr)
        self.allow_partial = check_bool(allow_partial, "allow_partial")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "meta_lr": self.meta_lr, "allow_partial": self.allow_partial}

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
                global_params, deltas, [int(u.num_samples) for u in updates], self.meta_lr
            )
        except ReptileError as exc:
            raise AggregationError(str(exc)) from exc
