"""FedAsync (Xie et al.): mix each incoming model into the global one, scaled by staleness.

EDDL's asynchronous update ``global = (global + incoming) / 2`` is FedAsync with ``alpha = 1/2``
and constant staleness: :class:`EDDLMix`.
"""

from __future__ import annotations

import numpy as np

from eddl.learn.aggregation.base import AsyncRule, ClientUpdate
from eddl.learn.aggregation.checks import (
    cast_back,
    check_bool,
    check_global,
    check_real,
    check_single,
    check_version,
)
from eddl.learn.aggregation.staleness import Constant, Polynomial, Staleness
from eddl.learn.params import Params

__all__ = ["EDDLMix", "FedAsync"]


class FedAsync(AsyncRule):
    """``x = (1 - a_s) x + a_s x_new`` with ``a_s = alpha * S(s)``; every update applies at once.

    Computed as ``x + a_s (x_new - x)`` (the same value; an update equal to the global model
    changes nothing, exactly): float32 and float64 models in their own dtype, with ``a_s = 1/2``
    as ``(x + x_new) / 2`` (correctly rounded); other models in float64, cast back: floats
    round, integer models truncate toward zero. A float result that overflows in its own dtype
    is computed again in float64 and refused only if it does not fit there either. With
    ``allow_partial`` only the names present in an update move.
    """

    name = "fedasync"

    def __init__(
        self,
        *,
        alpha: float = 0.6,
        staleness: Staleness | None = None,
        allow_partial: bool = False,
    ) -> None:
        self.alpha = check_real(alpha, "alpha", low=0.0, high=1.0, low_open=True)
        if staleness is None:
            staleness = Polynomial(a=0.5)
        if not isinstance(staleness, Staleness):
            raise TypeError(f"staleness must be a Staleness, got {type(staleness).__name__}")
        self.staleness = staleness
        self.allow_partial = check_bool(allow_partial, "allow_partial")

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "alpha": self.alpha,
            "staleness": self.staleness.name,
            **self.staleness.params(),
            "allow_partial": self.allow_partial,
        }

    def mixing_weight(self, staleness: int) -> float:
        """``alpha * S(staleness)``: the share of an update with that staleness."""
        return self.alpha * self.staleness(staleness)

    def submit(self, global_params: Params, update: ClientUpdate, version: int) -> Params:
        v = check_version(version)
        check_global(global_params)
        s = check_single(global_params, update, v, allow_partial=self.allow_partial, what="update")
        weight = self.mixing_weight(s)
        out: Params = {}
        for name, current in global_params.items():
            incoming = update.params.get(name)
            if incoming is None:
                out[name] = current.copy()
                continue
            out[name] = _mix(current, incoming, weight, name)
        return out

    def pending(self) -> int:
        return 0  # nothing is ever buffered

    def flush(self, global_params: Params) -> Params | None:
        return None  # nothing is ever buffered


class EDDLMix(FedAsync):
    """EDDL's asynchronous update: ``global = (global + incoming) / 2`` whatever the staleness.

    On integer models this is TIFeD's truncating mean of the two models.
    """

    name = "eddl-mix"

    def __init__(self, *, allow_partial: bool = False) -> None:
        super().__init__(alpha=0.5, staleness=Constant(), allow_partial=allow_partial)

    # describe() is inherited: it reports alpha 0.5 and constant staleness, which make_rule
    # accepts for "eddl-mix" only with exactly these values.


def _mix(current: np.ndarray, incoming: np.ndarray, weight: float, name: str) -> np.ndarray:
    """``current + weight (incoming - current)``, in the model's dtype where that is float32 or
    float64 (three passes, no float64 copies of a float32 model on the leader's update path)."""
    if current.dtype == np.float32 or current.dtype == np.float64:
        w = current.dtype.type(weight)
        with np.errstate(over="ignore", invalid="ignore"):
            mixed: np.ndarray
            if weight == 0.5:  # EDDL's mix: one rounding, as (x + x_new) / 2
                mixed = np.add(current, incoming)
                mixed *= w
            else:
                mixed = np.subtract(incoming, current)
                mixed *= w
                mixed += current
        if np.isfinite(mixed).all():
            return mixed
    x = current.astype(np.float64)
    return cast_back(x + weight * (incoming.astype(np.float64) - x), current.dtype, name)
