"""TIFeD's server step: the unweighted mean of integer models, truncated toward zero."""

from __future__ import annotations

from collections.abc import Sequence

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import check_bool, check_round, int_weighted_mean
from eddl.learn.aggregation.fedavg import contributions
from eddl.learn.params import Params

__all__ = ["IntMean"]


class IntMean(SyncRule):
    """``x = trunc(mean_i x_i)`` per parameter name, as TIFeD's ``mean(...).astype(int)``.

    Unweighted: every update counts once whatever its ``num_samples``. Computed exactly with
    integer sums and a division that truncates toward zero, so it equals the float64
    reference ``np.mean(stack, axis=0).astype(dtype)`` wherever that reference is exact and
    stays exact beyond it. Partial updates are allowed by default (single-layer TIFeD: each
    layer is averaged over its own group; a name nobody sent keeps its global value).
    """

    name = "intmean"

    def __init__(self, *, allow_partial: bool = True) -> None:
        self.allow_partial = check_bool(allow_partial, "allow_partial")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "allow_partial": self.allow_partial}

    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        check_round(global_params, updates, version, allow_partial=self.allow_partial)
        floats = sorted(n for n, a in global_params.items() if a.dtype.kind == "f")
        if floats:
            raise AggregationError(
                f"intmean averages integer models; {floats} are floating point (use fedavg)"
            )
        out: Params = {}
        for name, current in global_params.items():
            arrays, _ = contributions(name, updates)
            if arrays:
                out[name] = int_weighted_mean(arrays, [1] * len(arrays))
            else:
                out[name] = current.copy()
        return out
