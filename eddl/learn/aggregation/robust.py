"""Robust synchronous rules: the coordinate-wise median and trimmed mean of a round.

FedAvg's mean follows any single update as far as it goes: in a round of two, one client's
1e6 weights leave 5e5 in the model. Per coordinate, over the updates that hold a parameter,

* ``median``: the median of the values (the mean of the two middle ones for an even count);
* ``trimmed-mean``: with ``m`` values, the ``k = floor(trim * m)`` smallest and ``k`` largest are
  dropped and the rest averaged (Yin et al., 2018).

Both are unweighted (a sample count is the sender's word, the first thing a hostile client
would inflate). With ``f`` hostile updates in a round of ``m``, the median stays within the
honest values while ``f < m / 2``, the trimmed mean while ``f <= k``; a round of two has no
majority to side with, so these rules need at least three updates per round to discount one.
Float models only (integer models keep TIFeD's exact integer mean).

In a job: ``[job.sync_params] robust = "median"`` or ``robust = "trimmed-mean"`` with
``trim = 0.2`` (default 0.2, in [0, 0.5)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import cast_back, check_bool, check_real, check_round
from eddl.learn.aggregation.fedavg import contributions
from eddl.learn.params import Params

__all__ = ["ROBUST_KINDS", "RobustMean", "coordinate_median", "trimmed_mean"]

ROBUST_KINDS = ("median", "trimmed-mean")


def coordinate_median(arrays: Sequence[np.ndarray]) -> np.ndarray:
    median: np.ndarray = np.median(np.stack([a.astype(np.float64) for a in arrays]), axis=0)
    return median


def trimmed_mean(arrays: Sequence[np.ndarray], trim: float) -> np.ndarray:
    stacked = np.sort(np.stack([a.astype(np.float64) for a in arrays]), axis=0)
    k = int(np.floor(trim * len(arrays)))
    kept: np.ndarray = stacked[k : len(arrays) - k].mean(axis=0)
    return kept


class RobustMean(SyncRule):
    """The coordinate-wise ``median`` or ``trimmed-mean`` of a round (see the module)."""

    name = "robust"

    def __init__(self, kind: str, *, trim: float = 0.2, allow_partial: bool = False) -> None:
        if kind not in ROBUST_KINDS:
            raise AggregationError(f"robust must be one of {ROBUST_KINDS}, got {kind!r}")
        self.kind = kind
        self.trim = check_real(trim, "trim", low=0.0, high=0.5, low_open=False)
        if self.trim >= 0.5:
            raise AggregationError(f"trim must be below 0.5, got {self.trim}")
        self.allow_partial = check_bool(allow_partial, "allow_partial")

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": "fedavg",
            "robust": self.kind,
            "allow_partial": self.allow_partial,
        }
        if self.kind == "trimmed-mean":
            out["trim"] = self.trim
        return out

    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        check_round(global_params, updates, version, allow_partial=self.allow_partial)
        ints = sorted(n for n, a in global_params.items() if a.dtype.kind != "f")
        if ints:
            raise AggregationError(
                f"robust aggregation applies to float models; {ints} are integer"
            )
        out: Params = {}
        for name, current in global_params.items():
            arrays, _ = contributions(name, updates)
            if not arrays:
                out[name] = current.copy()
                continue
            value = (
                coordinate_median(arrays)
                if self.kind == "median"
                else trimmed_mean(arrays, self.trim)
            )
            out[name] = cast_back(value, current.dtype, name)
        return out
