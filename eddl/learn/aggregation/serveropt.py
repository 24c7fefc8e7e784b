"""Server optimizers: how the aggregated delta of a round moves the global model.

FedAvg's new model is ``θ + Δ`` with ``Δ = Σ_i w_i (φ_i − θ) / Σ_i w_i``, the weighted mean of
the clients' deltas. Reddi et al. (*Adaptive Federated Optimization*, 2021) read ``−Δ`` as a
pseudo-gradient and hand it to a server optimizer instead: a plain server learning rate, heavy-ball
momentum (FedAvgM, Hsu et al. 2019), or an adaptive method (FedAdam, FedYogi in ``adaptive``).

An optimizer keeps per-parameter moments between rounds, keyed ``"<slot>/<name>"`` (``"m/W0"``);
they are its :class:`RuleState`, saved with the leader's checkpoint. A step computes the new
moments and the new model in new arrays and commits the moments only once nothing can fail, so
a refused step leaves the optimizer as it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from eddl.learn.aggregation.base import AggregationError
from eddl.learn.aggregation.checks import cast_back, check_real
from eddl.learn.aggregation.state import RuleState
from eddl.learn.params import Params

__all__ = ["SERVER_LR_MAX", "ServerOptimizer", "ServerSGD"]

#: Bound of every server learning rate: far above any useful value, low enough that a typo
#: (``1e9``) is refused at submission rather than overflowing the model on the first step.
SERVER_LR_MAX = 1000.0

Deltas = Mapping[str, np.ndarray]


class ServerOptimizer(ABC):
    """``θ ← θ + step(Δ)`` per parameter name, for the names present in ``Δ``."""

    name: ClassVar[str]
    #: Moment slots kept per parameter (``("m",)``, ``("m", "v")``; none for a plain rate).
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = check_real(lr, "server_lr", low=0.0, high=SERVER_LR_MAX, low_open=True)
        self._moments: dict[str, np.ndarray] = {}
        self._steps = 0

    @abstractmethod
    def params(self) -> dict[str, object]:
        """Its settings under the keys ``make_rule`` takes (``server_opt``, ``server_lr``...)."""

    @abstractmethod
    def _initial(self, slot: str, shape: tuple[int, ...]) -> np.ndarray:
        """The value of a moment before the first step."""

    @abstractmethod
    def _step(
        self, delta: np.ndarray, moments: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(step, new moments by slot)`` for one parameter; pure, all float64."""

    def apply(self, global_params: Params, delta: Deltas) -> Params:
        """The new global model; names absent from ``delta`` are copied unchanged."""
        for name, values in delta.items():
            if not np.isfinite(values).all():
                raise AggregationError(f"{name}: aggregated delta holds NaN or Inf")
        new_moments: dict[str, np.ndarray] = {}
        out: Params = {}
        for name, current in global_params.items():
            if name not in delta:
                out[name] = current.copy()
                continue
            d = delta[name]
            moments = {slot: self._moment(slot, name, d.shape) for slot in self.slots}
            step, updated = self._step(d, moments)
            for slot, value in updated.items():
                if not np.isfinite(value).all():
                    raise AggregationError(f"{name}: server optimizer moment {slot} overflowed")
                new_moments[f"{slot}/{name}"] = value
            out[name] = cast_back(current.astype(np.float64) + step, current.dtype, name)
        # Nothing can fail from here on: commit.
        self._moments.update(new_moments)
        self._steps += 1
        return out

    def state(self) -> RuleState:
        return RuleState(steps=self._steps, arrays={k: v.copy() for k, v in self._moments.items()})

    def load_state(self, state: RuleState) -> None:
        if not isinstance(state, RuleState):
            raise AggregationError(f"expected a RuleState, got {type(state).__name__}")
        for key in state.arrays:
            slot, _, name = key.partition("/")
            if slot not in self.slots or not name:
                known = ", ".join(f"{s}/<name>" for s in self.slots) or "none"
                raise AggregationError(
                    f"server optimizer {self.name}: state key {key!r} is not one of its "
                    f"moments ({known})"
                )
        self._moments = {k: v.astype(np.float64, copy=True) for k, v in state.arrays.items()}
        self._steps = int(state.steps)

    def _moment(self, slot: str, name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self._moments.get(f"{slot}/{name}")
        if value is None:
            return self._initial(slot, shape)
        if value.shape != shape:
            raise AggregationError(
                f"{name}: server optimizer moment {slot} has shape {value.shape}, the model {shape}"
            )
        return value


class ServerSGD(ServerOptimizer):
    """``m ← β m + Δ``, ``θ ← θ + η m`` (FedAvgM); with ``β = 0`` a plain server rate ``θ + η Δ``.

    ``η = 1, β = 0`` is FedAvg. Momentum ``β`` in ``[0, 1)``: at 1 the steps never decay.
    """

    name = "sgd"

    def __init__(self, *, lr: float = 1.0, momentum: float = 0.0) -> None:
        super().__init__(lr)
        self.momentum = check_real(momentum, "server_momentum", low=0.0, high=0.999, low_open=False)
        # No moment to keep without momentum: the state stays empty.
        self.slots = ("m",) if self.momentum > 0.0 else ()

    def params(self) -> dict[str, object]:
        return {"server_opt": self.name, "server_lr": self.lr, "server_momentum": self.momentum}

    def _initial(self, slot: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, np.float64)

    def _step(
        self, delta: np.ndarray, moments: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not self.slots:
            return self.lr * delta, {}
        m = self.momentum * moments["m"] + delta
        return self.lr * m, {"m": m}
