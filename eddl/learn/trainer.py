"""The interface every training algorithm implements, and the checks they share.

A :class:`Trainer` trains a parameter mapping *in place* on ``(x, y)`` and reports
:class:`TrainStats`. Before touching the parameters it validates everything it was given, so a
bad call raises a :class:`ValueError` subclass and leaves the parameters exactly as they were:

* :class:`~eddl.learn.params.ParamsError`: wrong names, shapes or dtype, NaN/Inf in params;
* :class:`~eddl.learn.model.DataError`: wrong shape/dtype of ``x`` or ``y``, NaN/Inf, labels out
  of range;
* :class:`TrainerConfigError`: a bad learning rate, batch size, epoch count or rng.

A run that starts from valid inputs but drives the weights to NaN/Inf (a learning rate far too
large) raises :class:`DivergedError` at the end; the weights are then left as trained, so the
caller should fall back on its own copy of the model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from eddl.learn.model import MLPSpec, check_labels, check_params, check_x
from eddl.learn.params import Params

__all__ = [
    "DivergedError",
    "TrainStats",
    "Trainer",
    "TrainerConfigError",
    "check_learning_rate",
    "check_positive_int",
]


class TrainerConfigError(ValueError):
    """A trainer setting (learning rate, batch size, epochs, rng) is invalid."""


class DivergedError(ArithmeticError):
    """Training produced NaN or Inf weights."""


@dataclass(frozen=True)
class TrainStats:
    samples: int
    """Samples processed, epochs included."""
    steps: int
    """Weight updates applied (one per mini-batch; one per sample for L-SGD)."""
    state_bytes: int
    """Training state held beyond the weights, as :attr:`Trainer.state_bytes`."""


def check_learning_rate(lr: object) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.floating | np.integer):
        raise TrainerConfigError(f"learning rate must be a number, got {type(lr).__name__}")
    value = float(lr)
    if not math.isfinite(value) or value <= 0.0:
        raise TrainerConfigError(f"learning rate must be finite and > 0, got {value}")
    return value


def check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise TrainerConfigError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


class Trainer(ABC):
    """A training algorithm that trains a :data:`Params` mapping in place.

    Float trainers pass their :class:`MLPSpec` and learning rate to ``__init__`` and use the
    shared checks below; trainers on another representation (TIFeD's integers) keep their own
    configuration and validation, and only implement :meth:`train` and :attr:`state_bytes`.
    """

    name: str
    """Short algorithm name (``"sgd"``, ``"lsgd"``, ...), as used in configs and logs."""

    def __init__(self, spec: MLPSpec, lr: float) -> None:
        if not isinstance(spec, MLPSpec):
            raise TrainerConfigError(f"spec must be an MLPSpec, got {type(spec).__name__}")
        self.spec = spec
        self.lr = check_learning_rate(lr)

    @abstractmethod
    def train(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> TrainStats:
        """Train ``params`` in place on samples ``x`` ``(n, in)`` with integer labels ``y``.

        ``rng`` reshuffles the sample order every epoch; ``None`` keeps the given order.
        """

    @property
    @abstractmethod
    def state_bytes(self) -> int:
        """Bytes of training state held beyond the weights (sum of the buffers' ``nbytes``)."""

    def _validate(
        self,
        params: Mapping[str, np.ndarray],
        x: object,
        y: object,
        epochs: object,
        rng: object,
    ) -> int:
        """Check every argument of :meth:`train`; return the epoch count."""
        check_params(self.spec, params)
        xs = check_x(self.spec, x)
        check_labels(self.spec, y, n=xs.shape[0])
        n_epochs = check_positive_int(epochs, "epochs")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TrainerConfigError(
                f"rng must be a numpy Generator or None, got {type(rng).__name__}"
            )
        return n_epochs

    @staticmethod
    def _epoch_order(n: int, rng: np.random.Generator | None) -> np.ndarray | None:
        return None if rng is None else rng.permutation(n)

    def _check_finite(self, params: Mapping[str, np.ndarray]) -> None:
        for name, arr in params.items():
            if not np.isfinite(arr).all():
                raise DivergedError(
                    f"{self.name}: {name} became NaN/Inf during training (lr={self.lr} too large?)"
                )
