"""FedAdam and FedYogi: adaptive server optimizers (Reddi et al., *Adaptive Federated
Optimization*, ICLR 2021, Algorithm 2).

With ``Δ`` the round's aggregated delta (the negative pseudo-gradient), per coordinate:

* ``m ← β1 m + (1 − β1) Δ``
* Adam: ``v ← β2 v + (1 − β2) Δ²``;  Yogi: ``v ← v − (1 − β2) Δ² sign(v − Δ²)``
* ``θ ← θ + η m / (√v + τ)``

as in the paper: no bias correction, ``m`` starts at 0 and ``v`` at ``τ²`` (the paper asks for
``v ≥ τ²``). ``τ`` bounds the step of a coordinate whose ``v`` is tiny: it is at most
``η |m| / τ``. Yogi's ``v`` moves by at most ``(1 − β2) Δ²`` per round toward ``Δ²``, so one
large round does not shrink the steps of every later one the way Adam's average does.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from eddl.learn.aggregation.checks import check_real
from eddl.learn.aggregation.serveropt import ServerOptimizer

__all__ = ["FedAdam", "FedYogi"]


class _Adaptive(ServerOptimizer):
    slots = ("m", "v")

    def __init__(
        self, *, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3
    ) -> None:
        super().__init__(lr)
        self.beta1 = check_real(beta1, "server_beta1", low=0.0, high=0.999, low_open=False)
        self.beta2 = check_real(beta2, "server_beta2", low=0.0, high=0.9999, low_open=False)
        # tau above 1e-9: a step is at most lr |m| / tau, and the moments are float64.
        self.tau = check_real(tau, "server_tau", low=1e-9, high=1.0, low_open=False)

    def params(self) -> dict[str, object]:
        return {
            "server_opt": self.name,
            "server_lr": self.lr,
            "server_beta1": self.beta1,
            "server_beta2": self.beta2,
            "server_tau": self.tau,
        }

    def _initial(self, slot: str, shape: tuple[int, ...]) -> np.ndarray:
        if slot == "m":
            return np.zeros(shape, np.float64)
        return np.full(shape, self.tau * self.tau, np.float64)

    @abstractmethod
    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        """The new ``v`` from the old one and ``Δ²``."""

    def _step(
        self, delta: np.ndarray, moments: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        m = self.beta1 * moments["m"] + (1.0 - self.beta1) * delta
        v = self._second_moment(moments["v"], delta * delta)
        # Yogi can drive v below 0 only from a corrupt state; clip so sqrt stays real.
        v = np.maximum(v, 0.0)
        return self.lr * m / (np.sqrt(v) + self.tau), {"m": m, "v": v}


class FedAdam(_Adaptive):
    """Adam on the server: ``v ← β2 v + (1 − β2) Δ²``."""

    name = "adam"

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * sq


class FedYogi(_Adaptive):
    """Yogi on the server: ``v ← v − (1 − β2) Δ² sign(v − Δ²)``."""

    name = "yogi"

    def _second_moment(self, v: np.ndarray, sq: np.ndarray) -> np.ndarray:
        out: np.ndarray = v - (1.0 - self.beta2) * sq * np.sign(v - sq)
        return out
