"""FedAvg: the sample-weighted mean of a round of client models (McMahan et al.), optionally
followed by a server optimizer on the round's mean delta (Reddi et al.: FedAvgM, FedAdam...), or
the round's deltas summed up to a sample budget (``sum_samples``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eddl.learn.aggregation.base import AggregationError, ClientUpdate, SyncRule
from eddl.learn.aggregation.checks import (
    cast_back,
    check_bool,
    check_positive_int,
    check_round,
    int_weighted_mean,
)
from eddl.learn.aggregation.serveropt import ServerOptimizer
from eddl.learn.aggregation.state import RuleState
from eddl.learn.params import Params

__all__ = ["SUM_SAMPLES_MAX", "FedAvg", "contributions", "mean_deltas", "summed_rate"]

#: Bound of ``sum_samples``: a round of more samples than this is far past where summed deltas
#: stop adding up (and a peer-declared sample count cannot inflate a step past it).
SUM_SAMPLES_MAX = 1 << 20


def contributions(name: str, updates: Sequence[ClientUpdate]) -> tuple[list[np.ndarray], list[int]]:
    """The arrays sent for ``name`` and their senders' sample counts (partial updates skip)."""
    arrays = [u.params[name] for u in updates if name in u.params]
    weights = [int(u.num_samples) for u in updates if name in u.params]
    return arrays, weights


def weighted_float_mean(arrays: Sequence[np.ndarray], weights: Sequence[int]) -> np.ndarray:
    """``sum(w * x) / sum(w)`` in float64, as offsets from the first array.

    Mathematically the plain weighted mean; summing offsets keeps identical models exactly
    identical (every offset is 0) and loses less to cancellation when models are close. The
    terms are formed in one reused buffer (the same operations in the same order, so the same
    bits as ``ref + Σ w·(x − ref) / Σ w`` written out): a round's close runs on the leader's
    owner thread, and fresh arrays of a large model cost more than the arithmetic.
    """
    ref = arrays[0].astype(np.float64)
    acc = np.zeros_like(ref)
    term = np.empty_like(ref)
    for arr, w in zip(arrays, weights, strict=True):
        np.subtract(arr, ref, out=term, dtype=np.float64)
        term *= float(w)
        acc += term
    acc /= float(sum(weights))
    acc += ref
    return acc


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


def summed_rate(budget: int, weights: Sequence[int]) -> float:
    """``clamp(K · budget / Σ weights, 1, K)``: the server rate on a round's mean delta that
    sums its ``K`` deltas while the round holds at most ``budget`` samples."""
    k = len(weights)
    total = float(sum(weights))
    if total <= 0:
        return 1.0
    return max(1.0, min(float(k), k * budget / total))


class FedAvg(SyncRule):
    """``x = sum_i n_i x_i / sum_i n_i`` per parameter, weighted by ``num_samples``.

    Float models are averaged in float64 and cast back to their dtype. Integer models get the
    exact weighted mean truncated toward zero. With ``allow_partial`` each name is averaged
    over the updates that contain it, and a name nobody sent keeps its global value.

    With a ``server`` optimizer the round's mean delta ``Δ`` (:func:`mean_deltas`) goes to it
    instead: ``θ ← θ + step(Δ)``. Float models only: integer models keep the exact integer mean.

    With ``sum_samples = B > 0`` (and no server optimizer) the round's deltas are **summed**
    rather than averaged, up to a budget of ``B`` samples: ``θ ← θ + η · Δ`` with ``Δ`` the
    sample-weighted mean delta and ``η = clamp(K · B / Σ_i n_i, 1, K)`` for the round's ``K``
    updates. A small task's delta is close to the sum of its SGD steps, so K small tasks summed
    (K times their mean) make about the progress of the same samples trained one after the
    other, where the mean divides it by K; past ``B`` samples a round's deltas no longer add up
    (each was taken from the same base), so the rate falls toward the plain mean. Integer names
    keep the exact integer mean. See docs/leader-logic.md#time-to-accuracy.
    """

    name = "fedavg"

    def __init__(
        self,
        *,
        allow_partial: bool = False,
        server: ServerOptimizer | None = None,
        sum_samples: int = 0,
    ) -> None:
        self.allow_partial = check_bool(allow_partial, "allow_partial")
        if server is not None and not isinstance(server, ServerOptimizer):
            raise TypeError(f"server must be a ServerOptimizer, got {type(server).__name__}")
        self.sum_samples = check_positive_int(sum_samples, "sum_samples", minimum=0)
        if self.sum_samples > SUM_SAMPLES_MAX:
            raise AggregationError(f"sum_samples must be <= {SUM_SAMPLES_MAX}")
        if server is not None and self.sum_samples:
            raise AggregationError("sum_samples and a server optimizer exclude each other")
        self.server = server

    def describe(self) -> dict[str, object]:
        server = self.server.params() if self.server is not None else {}
        extra = {"sum_samples": self.sum_samples} if self.sum_samples else {}
        return {"name": self.name, "allow_partial": self.allow_partial, **server, **extra}

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
            elif current.dtype.kind == "f" and self.sum_samples:
                rate = summed_rate(self.sum_samples, weights)
                mean = weighted_float_mean(arrays, weights)
                out[name] = cast_back(current + rate * (mean - current), current.dtype, name)
            elif current.dtype.kind == "f":
                out[name] = cast_back(weighted_float_mean(arrays, weights), current.dtype, name)
            else:
                out[name] = int_weighted_mean(arrays, weights)
        return out
