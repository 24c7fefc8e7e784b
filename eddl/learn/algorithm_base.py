"""What every training algorithm is: the :class:`Algorithm` base, :class:`AlgorithmError`, and
the checks of hyper-parameters and input pixels the concrete algorithms share.

An :class:`Algorithm` is one algorithm with its model and hyper-parameters fixed: it makes the
initial model and a local :class:`~eddl.learn.trainer.Trainer`, turns uint8 pixels into the
trainer's inputs, evaluates, names its synchronous aggregation rule, and says what its model
and trainer need in bytes before anything is allocated. The concrete algorithms and the
registry by name are in :mod:`eddl.learn.algorithms`, which re-exports these names.

The checks refuse unknown hyper-parameter keys and values no trainer could use (a float
learning rate above ``MAX_LR``, a mini-batch above ``MAX_BATCH_SIZE`` rows) with an
:class:`AlgorithmError` that names the key.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from eddl.learn.params import Params
from eddl.learn.trainer import Trainer

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_LR",
    "Algorithm",
    "AlgorithmError",
]

# A float learning rate above 10 only ever diverges; a batch above 65536 rows is no mini-batch.
MAX_LR = 10.0
MAX_BATCH_SIZE = 1 << 16


class AlgorithmError(ValueError):
    """An algorithm name, model or hyper-parameter is not valid.

    ``key`` names what is wrong (``"hyper.lr"``, ``"model"``, ``"algorithm"``); the message
    starts with it.
    """

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


@dataclass(frozen=True)
class Algorithm(ABC):
    """One algorithm with its model and hyper-parameters fixed."""

    name: str
    model: Mapping[str, Any]
    hyper: Mapping[str, Any] = field(default_factory=dict)

    @property
    @abstractmethod
    def num_layers(self) -> int: ...

    @property
    @abstractmethod
    def sync_rule_name(self) -> str:
        """The synchronous aggregation rule that fits this algorithm's parameters."""

    @property
    def single_layer(self) -> bool:
        """Whether each client trains (and uploads) one layer only."""
        return False

    @property
    @abstractmethod
    def sizes(self) -> tuple[int, ...]:
        """Layer widths, input to output."""

    #: Bytes per parameter (float32 and int32 models: 4; int8: 1).
    param_itemsize: ClassVar[int] = 4

    @property
    def batch_rows(self) -> int:
        """Samples a trainer holds activations for at once."""
        return 1

    def param_bytes(self) -> int:
        """Bytes of the model's parameters (weights and biases), computed from the sizes."""
        s = self.sizes
        return sum((a + 1) * b for a, b in itertools.pairwise(s)) * self.param_itemsize

    def buffer_bytes(self) -> int:
        """An upper estimate of a trainer's batch buffers: pre-activations, outputs, deltas
        and the gathered inputs, four 4-byte rows of every width per sample of a batch."""
        return self.batch_rows * sum(self.sizes) * 4 * 4

    @abstractmethod
    def init_params(self, seed: int) -> Params: ...

    @abstractmethod
    def make_trainer(self, layer: int | None = None, seed: int = 0) -> Trainer:
        """A fresh local trainer; ``seed`` keys any randomness inside the kernel (lsgd-q8's
        stochastic rounding), so a client-round gets reproducible updates."""

    @abstractmethod
    def prepare_inputs(self, x_u8: np.ndarray) -> np.ndarray:
        """uint8 pixels ``(n, features)`` -> the trainer's input representation."""

    @abstractmethod
    def evaluate(self, params: Params, x_u8: np.ndarray, y: np.ndarray) -> float:
        """Accuracy in [0, 1] on uint8 pixels."""

    def describe(self) -> dict[str, Any]:
        return {"algo": self.name, "model": dict(self.model), "hyper": dict(self.hyper)}


def _check_keys(hyper: Mapping[str, Any], allowed: tuple[str, ...], algo: str) -> None:
    unknown = sorted(set(hyper) - set(allowed))
    if unknown:
        raise AlgorithmError(
            f"{algo}: unknown hyper-parameter(s) {unknown}; known: {allowed}", key="hyper"
        )


def _hyper_number(hyper: Mapping[str, Any], name: str, default: float, high: float) -> float:
    """A hyper-parameter that must be a finite number in (0, high]."""
    value = hyper.get(name, default)
    key = f"hyper.{name}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AlgorithmError(f"must be a number, got {value!r}", key=key)
    if not math.isfinite(value) or value <= 0:
        raise AlgorithmError(f"must be > 0, got {value!r}", key=key)
    if value > high:
        raise AlgorithmError(f"must be at most {high:g}, got {value!r}", key=key)
    return float(value)


def _hyper_int(hyper: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = hyper.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AlgorithmError(f"must be an int in {low}..{high}, got {value!r}", key=f"hyper.{name}")
    return value


def _check_pixels(x_u8: np.ndarray) -> np.ndarray:
    if not isinstance(x_u8, np.ndarray) or x_u8.dtype != np.uint8 or x_u8.ndim != 2:
        raise AlgorithmError("inputs must be uint8 pixels of shape (n, features)")
    return x_u8
