"""The models meta-learning adapts, with the online inner loop every device runs.

A :class:`MetaModel` knows its parameters (``W{i}``, ``b{i}``, as every float model here), how
to run *one online pass* over local samples with batch size 1 (:meth:`MetaModel.train_pass`),
optionally with the lower layers frozen, and how to score a model on test samples.

* :class:`Classifier` wraps an :class:`~eddl.learn.model.MLPSpec`; its pass *is* L-SGD
  (:class:`~eddl.learn.lsgd.LSGDTrainer`), the kernel the firmware runs. Labels are ints;
  the score is accuracy (higher is better).
* :class:`Regressor` is a tanh MLP with a linear output and targets ``(n, out)`` float32
  (the sine task). Its pass is the same per-sample fused update as L-SGD with the MSE delta
  ``y − t``; it exists because L-SGD's loss takes class labels only. The score is the mean
  squared error (lower is better).

Training only layers ``first_layer..L-1`` (the head, when reconstructing local layers) runs
the frozen layers forward once and trains the head as a network of its own on those features:
the head's arrays are updated in place, the frozen ones are never written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from eddl.learn import model as mlp
from eddl.learn.activations import activate, scale_by_derivative
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.params import Params, param_names
from eddl.learn.trainer import DivergedError, TrainerConfigError, check_learning_rate

__all__ = ["Classifier", "MetaModel", "Regressor"]


class MetaModel(ABC):
    """A float model a device adapts with one online pass (batch size 1) per epoch."""

    #: ``"accuracy"`` (higher is better) or ``"mse"`` (lower is better).
    metric: str

    @property
    @abstractmethod
    def sizes(self) -> tuple[int, ...]:
        """Layer widths, input to output."""

    @property
    @abstractmethod
    def activations(self) -> tuple[str, ...]: ...

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    def init_params(self, seed: int) -> Params:
        """Glorot-uniform weights, zero biases (as :func:`eddl.learn.model.init_params`)."""
        rng = np.random.default_rng(seed)
        params: Params = {}
        for i in range(self.num_layers):
            a, b = self.sizes[i], self.sizes[i + 1]
            r = np.sqrt(6.0 / (a + b))
            params[f"W{i}"] = rng.uniform(-r, r, size=(a, b)).astype(np.float32)
            params[f"b{i}"] = np.zeros(b, dtype=np.float32)
        return params

    def features(self, params: Params, x: np.ndarray, layers: int) -> np.ndarray:
        """Outputs of the first ``layers`` layers (``x`` itself for 0)."""
        a = x
        for i in range(layers):
            z = a @ params[f"W{i}"] + params[f"b{i}"]
            a = activate(self.activations[i], z, out=z)
        return np.ascontiguousarray(a, dtype=np.float32)

    def head(self, params: Params, first_layer: int) -> Params:
        """The arrays of layers ``first_layer..`` renamed from 0: views, not copies."""
        if not 0 <= first_layer < self.num_layers:
            raise TrainerConfigError(f"first_layer must be in 0..{self.num_layers - 1}")
        return {
            f"{kind}{i - first_layer}": params[f"{kind}{i}"]
            for i in range(first_layer, self.num_layers)
            for kind in ("W", "b")
        }

    @abstractmethod
    def train_pass(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        *,
        first_layer: int = 0,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> int:
        """Train ``params`` in place, one sample at a time; return the steps taken."""

    @abstractmethod
    def score(self, params: Params, x: np.ndarray, y: np.ndarray) -> float: ...


@dataclass(frozen=True, eq=False)
class Classifier(MetaModel):
    spec: mlp.MLPSpec

    metric = "accuracy"

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.spec.sizes

    @property
    def activations(self) -> tuple[str, ...]:
        return self.spec.activations

    def train_pass(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        *,
        first_layer: int = 0,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> int:
        head = self.head(params, first_layer)
        spec = mlp.MLPSpec(
            self.spec.sizes[first_layer:], self.spec.activations[first_layer:], self.spec.loss
        )
        mlp.check_params(self.spec, params)
        feats = self.features(params, mlp.check_x(self.spec, x), first_layer)
        stats = LSGDTrainer(spec, lr).train(head, feats, y, epochs=epochs, rng=rng)
        return stats.steps

    def score(self, params: Params, x: np.ndarray, y: np.ndarray) -> float:
        return mlp.accuracy(self.spec, params, x, y)


@dataclass(frozen=True, eq=False)
class Regressor(MetaModel):
    """``widths = (in, hidden..., out)``, tanh hidden layers and a linear output."""

    widths: tuple[int, ...]

    metric = "mse"

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or any(int(s) < 1 for s in self.widths):
            raise TrainerConfigError(f"widths must be >= 2 positive sizes, got {self.widths}")

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.widths

    @property
    def activations(self) -> tuple[str, ...]:
        return ("tanh",) * (len(self.sizes) - 2) + ("linear",)

    def _check(self, params: Params, x: np.ndarray, y: np.ndarray) -> None:
        for name in param_names(self.num_layers):
            if name not in params or params[name].dtype != np.float32:
                raise TrainerConfigError(f"params need float32 {name}")
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != self.sizes[0] or not len(x):
            raise TrainerConfigError(f"x must be float32 (n>=1, {self.sizes[0]})")
        if y.dtype != np.float32 or y.shape != (x.shape[0], self.sizes[-1]):
            raise TrainerConfigError(f"y must be float32 ({x.shape[0]}, {self.sizes[-1]})")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise TrainerConfigError("x and y must be finite")

    def train_pass(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        *,
        first_layer: int = 0,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> int:
        self._check(params, x, y)
        lr = check_learning_rate(lr)
        head = self.head(params, first_layer)
        feats = self.features(params, x, first_layer)
        acts = self.activations[first_layer:]
        layers = len(acts)
        ws = [head[f"W{i}"] for i in range(layers)]
        bs = [head[f"b{i}"] for i in range(layers)]
        steps = 0
        for _ in range(epochs):
            order = range(len(x)) if rng is None else rng.permutation(len(x)).tolist()
            for k in order:
                outs = [feats[k]]
                for i in range(layers):
                    z = outs[-1] @ ws[i] + bs[i]
                    outs.append(activate(acts[i], z, out=z))
                d = outs[-1] - y[k]  # linear output, ½‖y − t‖²: the delta is y − t
                # As in L-SGD: the delta below uses W before its update, then W changes.
                for i in range(layers - 1, -1, -1):
                    below = ws[i] @ d if i > 0 else None
                    ws[i] -= lr * np.outer(outs[i], d).astype(np.float32)
                    bs[i] -= np.float32(lr) * d
                    if below is not None:
                        d = scale_by_derivative(acts[i - 1], outs[i].copy(), below)
                steps += 1
        for arr in (*ws, *bs):
            if not np.isfinite(arr).all():
                raise DivergedError(f"regressor diverged (lr={lr} too large?)")
        return steps

    def score(self, params: Params, x: np.ndarray, y: np.ndarray) -> float:
        pred = self.features(params, x, self.num_layers)
        return float(np.mean((pred.astype(np.float64) - y) ** 2))
