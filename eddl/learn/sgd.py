"""Mini-batch SGD with per-weight gradient buffers: the baseline ("Algorithm 1") of L-SGD.

One step on a batch of ``m`` samples:

1. forward: for every layer keep the pre-activations ``Z = A_prev·W + b`` and the outputs
   ``A = f(Z)`` of the whole batch;
2. backward: from the output delta ``D = ∂loss/∂Z`` (scaled by ``1/m``: the loss is the batch
   mean) fill the gradient buffers ``gW = A_prevᵀ·D``, ``gb = Σ_rows D`` and propagate
   ``D_prev = (D·Wᵀ) ⊙ f'(A_prev)`` through the *unchanged* weights;
3. update: only after the full backward pass, ``W -= lr·gW`` and ``b -= lr·gb`` for all layers.

Every buffer is allocated once, for ``batch_size`` rows, and reused; the last, shorter batch of
an epoch uses their leading rows. All of it is vectorised over the batch with BLAS products;
``np.dot`` rather than ``np.matmul``, because numpy's matmul does not hand the batch-1 case
``(in, 1)·(1, out)`` to BLAS and runs several times slower on it.
"""

from __future__ import annotations

import numpy as np

from eddl.learn.activations import activate, derivative_from_output
from eddl.learn.model import MLPSpec
from eddl.learn.params import Params
from eddl.learn.trainer import Trainer, TrainStats, check_positive_int

__all__ = ["SGDTrainer"]


class SGDTrainer(Trainer):
    """Mini-batch backprop that buffers the gradients and applies them after the backward pass."""

    name = "sgd"

    def __init__(self, spec: MLPSpec, lr: float, batch_size: int = 1) -> None:
        super().__init__(spec, lr)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        rows = self.batch_size
        f32 = np.float32
        self._grads: dict[str, np.ndarray] = {
            name: np.zeros(shape, dtype=f32) for name, shape in spec.param_shapes().items()
        }
        widths = spec.sizes[1:]
        # Pre-activations are the matmul targets; after the forward pass they are free, and the
        # backward pass reuses them to hold the activation derivatives.
        self._pre = [np.zeros((rows, k), dtype=f32) for k in widths]
        self._out = [np.zeros((rows, k), dtype=f32) for k in widths]
        self._delta = [np.zeros((rows, k), dtype=f32) for k in widths]
        # A shuffled batch is gathered here (an ordered one is a view of x and needs no copy).
        self._batch_x = np.zeros((rows, spec.sizes[0]), dtype=f32)
        self._row_index = np.arange(rows, dtype=np.intp)

    def _buffers(self) -> list[np.ndarray]:
        return [
            *self._grads.values(),
            *self._pre,
            *self._out,
            *self._delta,
            self._batch_x,
            self._row_index,
        ]

    @property
    def state_bytes(self) -> int:
        return int(sum(b.nbytes for b in self._buffers()))

    def train(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> TrainStats:
        n_epochs = self._validate(params, x, y, epochs, rng)
        n = x.shape[0]
        rows = self.batch_size
        steps = 0
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n_epochs):
                order = self._epoch_order(n, rng)
                for start in range(0, n, rows):
                    stop = min(start + rows, n)
                    if order is None:
                        xb, yb = x[start:stop], y[start:stop]
                    else:
                        idx = order[start:stop]
                        xb = np.take(x, idx, axis=0, out=self._batch_x[: stop - start])
                        yb = y[idx]
                    self._step(params, xb, yb)
                    steps += 1
        self._check_finite(params)
        return TrainStats(samples=n * n_epochs, steps=steps, state_bytes=self.state_bytes)

    def _step(self, params: Params, xb: np.ndarray, yb: np.ndarray) -> None:
        spec = self.spec
        acts = spec.activations
        m = xb.shape[0]
        last = spec.num_layers - 1

        a = xb
        for i in range(spec.num_layers):
            z = self._pre[i][:m]
            np.dot(a, params[f"W{i}"], out=z)
            np.add(z, params[f"b{i}"], out=z)
            a = activate(acts[i], z, out=self._out[i][:m])

        # Output delta: y - t (one-hot t subtracted by index), times f'(y) for mse; bce+sigmoid
        # and ce+softmax need no derivative factor (see losses.output_delta).
        d = self._delta[last][:m]
        np.copyto(d, a)
        d[self._row_index[:m], yb] -= 1.0
        if spec.loss == "mse":
            np.multiply(d, derivative_from_output(acts[last], a, self._pre[last][:m]), out=d)
        if m > 1:
            np.multiply(d, 1.0 / m, out=d)

        for i in range(last, -1, -1):
            a_prev = xb if i == 0 else self._out[i - 1][:m]
            np.dot(a_prev.T, d, out=self._grads[f"W{i}"])
            np.sum(d, axis=0, out=self._grads[f"b{i}"])
            if i > 0:
                d_prev = self._delta[i - 1][:m]
                np.dot(d, params[f"W{i}"].T, out=d_prev)
                deriv = derivative_from_output(acts[i - 1], a_prev, self._pre[i - 1][:m])
                np.multiply(d_prev, deriv, out=d_prev)
                d = d_prev

        lr = self.lr
        for name, g in self._grads.items():
            np.multiply(g, lr, out=g)
            np.subtract(params[name], g, out=params[name])
