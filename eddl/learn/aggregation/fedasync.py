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

    Computed in float64 as ``x + a_s (x_new - x)`` (the same value; an update equal to the
    global model changes nothing, exactly) and cast back: floats round, integer models
    truncate toward zero. With ``allow_partial`` only the names present in an update move.
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
            x = current.astype(np.float64)
            mixed = x + weight * (incoming.astype(np.float64) - x)
            out[name] = cast_back(mixed, current.dtype, name)
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
