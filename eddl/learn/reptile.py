"""Reptile's outer update (Nichol et al., 2018) as TinyMetaFed's server uses it.

After a round in which devices ``i`` adapted the meta-model ``θ`` to ``φ_i``, the server moves
``θ`` toward the devices' models::

    θ ← θ + ε_r · Σ_i w_i · (φ_i − θ),    w_i = n_i / Σ_j n_j

weighted by the devices' sample counts ``n_i``. A device sends ``δ_i = φ_i − θ`` (possibly only
its top-P entries and only the shared layers), so the update takes deltas: a name a device did
not send counts as a zero delta for that device, and a name nobody sent keeps its value.

``ε_r`` follows :class:`MetaLrSchedule`, a linear decay from ``meta_lr`` at round 0 toward
``meta_lr_final`` at round ``R`` (Reptile's own schedule; with ``meta_lr_final = meta_lr`` the
step is constant). With one device and ``ε = 1`` the update returns ``φ``: plain fine-tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eddl.learn.params import Params, ParamsError

__all__ = ["MetaLrSchedule", "ReptileError", "reptile_update"]


class ReptileError(ValueError):
    """An outer update was given bad deltas, weights or step size."""


@dataclass(frozen=True)
class MetaLrSchedule:
    """``ε_r = meta_lr + (meta_lr_final − meta_lr) · r / rounds`` for rounds ``r = 0..R-1``."""

    meta_lr: float = 1.0
    meta_lr_final: float = 0.0
    rounds: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.meta_lr) and 0.0 < self.meta_lr <= 1.0):
            raise ReptileError(f"meta_lr must be in (0, 1], got {self.meta_lr!r}")
        if not (math.isfinite(self.meta_lr_final) and 0.0 <= self.meta_lr_final <= self.meta_lr):
            raise ReptileError(
                f"meta_lr_final must be in [0, meta_lr={self.meta_lr}], got {self.meta_lr_final!r}"
            )
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ReptileError(f"rounds must be an int >= 1, got {self.rounds!r}")

    def at(self, rnd: int) -> float:
        """The step of round ``rnd`` (0-based); always > 0 for ``rnd < rounds``."""
        if not 0 <= rnd < self.rounds:
            raise ReptileError(f"round {rnd} outside 0..{self.rounds - 1}")
        return self.meta_lr + (self.meta_lr_final - self.meta_lr) * rnd / self.rounds


def _check(theta: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray], i: int) -> None:
    for name, arr in delta.items():
        ref = theta.get(name)
        if ref is None:
            raise ReptileError(f"delta #{i}: unknown parameter {name!r}")
        if not isinstance(arr, np.ndarray) or arr.shape != ref.shape:
            shape = getattr(arr, "shape", None)
            raise ReptileError(f"delta #{i}: {name} has shape {shape}, expected {ref.shape}")
        if arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise ReptileError(f"delta #{i}: {name} must be finite floats")


def reptile_update(
    theta: Mapping[str, np.ndarray],
    deltas: Sequence[Mapping[str, np.ndarray]],
    weights: Sequence[int],
    eps: float,
) -> Params:
    """The new meta-model (a new mapping; ``theta`` is not changed).

    Arithmetic in float64, cast back to each parameter's dtype. Everything is checked before
    anything is computed: matching names and shapes, finite values, ``len(weights) ==
    len(deltas) >= 1``, weights ``>= 1``, ``eps`` in (0, 1].
    """
    if not deltas or len(deltas) != len(weights):
        raise ReptileError(f"need >= 1 delta and one weight each, got {len(deltas)}/{len(weights)}")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in weights):
        raise ReptileError(f"weights must be sample counts >= 1, got {list(weights)}")
    if isinstance(eps, bool) or not (math.isfinite(eps) and 0.0 < eps <= 1.0):
        raise ReptileError(f"eps must be in (0, 1], got {eps!r}")
    for name, arr in theta.items():
        if arr.dtype.kind != "f":
            raise ParamsError(f"theta: {name} is {arr.dtype}; Reptile needs float parameters")
    for i, delta in enumerate(deltas):
        _check(theta, delta, i)
    total = float(sum(weights))
    out: Params = {}
    for name, current in theta.items():
        acc = np.zeros(current.shape, dtype=np.float64)
        for delta, w in zip(deltas, weights, strict=True):
            if name in delta:
                acc += (w / total) * delta[name].astype(np.float64)
        new = current.astype(np.float64) + eps * acc
        out[name] = new.astype(current.dtype)
    return out
