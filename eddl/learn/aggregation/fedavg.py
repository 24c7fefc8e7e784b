"""FedAvg: the sample-weighted mean of a round of client models (McMahan et al.)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eddl.learn.aggregation.base import ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import (
    cast_back,
    check_bool,
    check_round,
    int_weighted_mean,
)
from eddl.learn.params import Params

__all__ = ["FedAvg", "contributions"]


def contributions(name: str, updates: Sequence[ClientUpdate]) -> tuple[list[np.ndarray], list[int]]:
    """The arrays sent for ``name`` and their senders' sample counts (partial updates skip)."""
    arrays = [u.params[name] for u in updates if name in u.params]
    weights = [int(u.num_samples) for u in updates if name in u.params]
    return arrays, weights


def weighted_float_mean(arrays: Sequence[np.ndarray], weights: Sequence[int]) -> np.ndarray:
    """``sum(w * x) / sum(w)`` in float64, as offsets from the first array.

    Mathematically the plain weighted mean; summing offsets keeps identical models exactly
    identical (every offset is 0) and loses less to cancellation when models are close.
    """
    ref = arrays[0].astype(np.float64)
    acc = np.zeros_like(ref)
    for arr, w in zip(arrays, weights, strict=True):
        acc += float(w) * (arr.astype(np.float64) - ref)
    return ref + acc / float(sum(weights))


class FedAvg(SyncRule):
    """``x = sum_i n_i x_i / sum_i n_i`` per parameter, weighted by ``num_samples``.

    Float models are averaged in float64 and cast back to their dtype. Integer models get the
    exact weighted mean truncated toward zero. With ``allow_partial`` each name is averaged
    over the updates that contain it, and a name nobody sent keeps its global value.
    """

    name = "fedavg"

    def __init__(self, *, allow_partial: bool = False) -> None:
        self.allow_partial = check_bool(allow_partial, "allow_partial")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "allow_partial": self.allow_partial}

    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        check_round(global_params, updates, version, allow_partial=self.allow_partial)
        out: Params = {}
        for name, current in global_params.items():
            arrays, weights = contributions(name, updates)
            if not arrays:
                out[name] = current.copy()
            elif current.dtype.kind == "f":
                out[name] = cast_back(weighted_float_mean(arrays, weights), current.dtype, name)
            else:
                out[name] = int_weighted_mean(arrays, weights)
        return out
