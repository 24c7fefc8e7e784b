"""Partial local reconstruction: the top layers of a model never leave the device.

With ``local_layers = m`` the last ``m`` layers of an ``L``-layer model are *local*: the
server holds and sends only the shared layers ``0..L-m-1``; the device rebuilds its local
layers from its own samples every time it takes part (Singhal et al.'s federated
reconstruction, as TinyMetaFed uses it), and its upload names only shared parameters.

Rebuilding (:func:`reconstruct`): fresh local layers, trained for ``epochs`` online passes with
the shared layers frozen. The output layer starts at zero — a neutral prediction (0 for a
regressor, 0.5 for every class of a sigmoid head) — and any local layer below it from the
device's seed. A random output layer made a device with a few samples start from noise:
few-shot scores were worse on all three use cases (``bench/tinymetafed.py``). Only then does
the device adapt the whole model (shared and local) in its inner loop; the local part is
dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eddl.learn.metamodel import MetaModel
from eddl.learn.params import Params

__all__ = ["LayerSplit", "ReconstructionError", "reconstruct"]


class ReconstructionError(ValueError):
    """A split that leaves no shared layer, or shared parameters that do not fit it."""


@dataclass(frozen=True)
class LayerSplit:
    """Which layers of an ``num_layers``-layer model are shared and which stay local."""

    num_layers: int
    local_layers: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.local_layers < self.num_layers:
            raise ReconstructionError(
                f"local_layers must be in 0..{self.num_layers - 1} (one layer at least is "
                f"shared), got {self.local_layers}"
            )

    @property
    def first_local(self) -> int:
        return self.num_layers - self.local_layers

    @property
    def shared_names(self) -> tuple[str, ...]:
        return tuple(f"{k}{i}" for i in range(self.first_local) for k in ("W", "b"))

    @property
    def local_names(self) -> tuple[str, ...]:
        return tuple(
            f"{k}{i}" for i in range(self.first_local, self.num_layers) for k in ("W", "b")
        )

    def shared(self, params: Mapping[str, np.ndarray]) -> Params:
        """The shared parameters of ``params`` (the same arrays, not copies)."""
        return {n: params[n] for n in self.shared_names}

    def check_shared(self, shared: Mapping[str, np.ndarray]) -> None:
        if set(shared) != set(self.shared_names):
            raise ReconstructionError(
                f"shared parameters must be exactly {list(self.shared_names)}, got {sorted(shared)}"
            )


def reconstruct(
    model: MetaModel,
    split: LayerSplit,
    shared: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    seed: int,
) -> Params:
    """A full model: copies of ``shared`` plus local layers rebuilt from ``(x, y)``."""
    split.check_shared(shared)
    full = model.init_params(seed)
    for name in split.shared_names:
        full[name] = np.array(shared[name], dtype=np.float32, copy=True)
    if split.local_layers:
        last = split.num_layers - 1
        full[f"W{last}"].fill(0.0)
        full[f"b{last}"].fill(0.0)
        rng = np.random.default_rng(seed)
        model.train_pass(full, x, y, lr, first_layer=split.first_local, epochs=epochs, rng=rng)
    return full
