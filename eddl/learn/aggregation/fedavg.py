"""FedAvg: the sample-weighted mean of a round of client models (McMahan et al.), optionally
followed by a server optimizer on the round's mean delta (Reddi et al.: FedAvgM, FedAdam...)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import (
    cast_back,
    check_bool,
    check_round,
    int_weighted_mean,
)
from eddl.learn.aggregation.serveropt import ServerOptimizer
from eddl.learn.aggregation.state import RuleState
from eddl.learn.params import Params

__all__ = ["FedAvg", "contributions", "mean_deltas"]


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


def mean_deltas(global_params: Params, updates: Sequence[ClientUpdate]) -> dict[str, np.ndarray]:
    """``Δ = Σ_i n_i (φ_i − θ) / Σ_i n_i`` in float64, per name sent by at least one update.

    ``θ`` is the global model the round meets, so a late update counts as its whole model, as in
    the plain mean: ``θ + Δ`` is FedAvg's result.
    """
    out: dict[str, np.ndarray] = {}
    for name, current in global_params.items():
        arrays, weights = contributions(name, updates)
        if not arrays:
            continue
        theta = current.astype(np.float64)
        acc = np.zeros_like(theta)
        for arr, w in zip(arrays, weights, strict=True):
            acc += float(w) * (arr.astype(np.float64) - theta)
        out[name] = acc / float(sum(weights))
    return out


class FedAvg(SyncRule):
    """``x = sum_i n_i x_i / sum_i n_i`` per parameter, weighted by ``num_samples``.

    Float models are averaged in float64 and cast back to their dtype. Integer models get the
    exact weighted mean truncated toward zero. With ``allow_partial`` each name is averaged
    over the updates that contain it, and a name nobody sent keeps its global value.

    With a ``server`` optimizer the round's mean delta ``Δ`` (:func:`mean_deltas`) goes to it
    instead: ``θ ← θ + step(Δ)``. Float models only: integer models keep the exact integer mean.
    """

    name = "fedavg"

    def __init__(
        self, *, allow_partial: bool = False, server: ServerOptimizer | None = None
    ) -> None:
        self.allow_partial = check_bool(allow_partial, "allow_partial")
        if server is not None and not isinstance(server, ServerOptimizer):
            raise TypeError(f"server must be a ServerOptimizer, got {type(server).__name__}")
        self.server = server

    def describe(self) -> dict[str, object]:
        server = self.server.params() if self.server is not None else {}
        return {"name": self.name, "allow_partial": self.allow_partial, **server}

    def state(self) -> RuleState:
        return self.server.state() if self.server is not None else RuleState()

    def load_state(self, state: RuleState) -> None:
        if self.server is None:
            super().load_state(state)
        else:
            self.server.load_state(state)

    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        check_round(global_params, updates, version, allow_partial=self.allow_partial)
        if self.server is not None:
            ints = sorted(n for n, a in global_params.items() if a.dtype.kind != "f")
            if ints:
                raise AggregationError(
                    f"server optimizers apply to float models; {ints} are integer "
                    "(integer models keep the exact integer mean)"
                )
            return self.server.apply(global_params, mean_deltas(global_params, updates))
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
