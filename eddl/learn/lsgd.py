"""L-SGD (Costa et al., "Train Me If You Can", 2022): per-sample SGD with a fused backward pass.

Per sample, with ``L`` layers and outputs ``y_l``:

1. forward: ``y_l = f_l(y_{l-1}·W_l + b_l)`` into one preallocated output vector per layer; the
   pre-activations are computed in that same vector and overwritten, never kept;
2. output delta ``δ_{L-1} = y_{L-1} - t`` (bce+sigmoid, ce+softmax), times ``f'(y)`` for mse;
3. one sweep from the top: ``δ_{l-1} = (W_l·δ_l) ⊙ f'_{l-1}(y_{l-1})`` is computed with the
   *old* ``W_l``, then ``W_l`` and ``b_l`` are updated in place at once, and the two delta buffers
   swap roles (ping-pong). ``f'`` comes from the stored output (tanh ``1 - y²``, sigmoid
   ``y(1 - y)``, relu ``y > 0``), using the output vector itself as scratch since it is no longer
   needed once ``W_l`` has been updated.

The held state is two delta vectors of the widest layer plus one output vector per layer: no
gradient buffers, no weight copies, no batch. This is the same arithmetic as
:class:`~eddl.learn.sgd.SGDTrainer` with ``batch_size=1``, reordered, so both give the same
weights to float32 rounding on the same sample order.

Numpy has no in-place rank-1 update (BLAS ``ger``), so ``W -= x ⊗ (lr·δ)`` has to materialise
the outer product. It is done in blocks of rows whose temporary is at most
:data:`UPDATE_BLOCK_BYTES` (32 KiB: four blocks for the 784×40 input layer of the paper's
network), freed at once and never held between steps, so the transient memory stays bounded
whatever the layer size. Each block is the BLAS product ``(rows, 1)·(1, out)`` (``np.dot``):
every entry is one exact product, as with ``np.outer``, but it runs 2-3× faster than numpy's
broadcasting multiply, whose inner loop only spans one short row. The C kernels of the firmware
update element by element without any temporary.
"""

from __future__ import annotations

import numpy as np

from eddl.learn.activations import activate, scale_by_derivative
from eddl.learn.model import MLPSpec
from eddl.learn.params import Params
from eddl.learn.trainer import Trainer, TrainStats

__all__ = ["UPDATE_BLOCK_BYTES", "LSGDTrainer"]


UPDATE_BLOCK_BYTES = 32 * 1024
"""Largest temporary the rank-1 weight update materialises at once (one block of rows)."""


def _row_blocks(rows: int, cols: int) -> list[tuple[int, int]]:
    per_block = max(1, UPDATE_BLOCK_BYTES // (cols * np.dtype(np.float32).itemsize))
    return [(r, min(r + per_block, rows)) for r in range(0, rows, per_block)]


class LSGDTrainer(Trainer):
    """Light per-sample SGD: in-place updates fused into backprop, two ping-pong delta buffers."""

    name = "lsgd"

    def __init__(self, spec: MLPSpec, lr: float) -> None:
        super().__init__(spec, lr)
        widths = spec.sizes[1:]
        widest = max(widths)
        self._ping = np.zeros(widest, dtype=np.float32)
        self._pong = np.zeros(widest, dtype=np.float32)
        self._outs = [np.zeros(k, dtype=np.float32) for k in widths]
        # The top layer's delta goes to ping, the next one down to pong, and so on; these are
        # views of the two buffers, made once so the per-sample loop only indexes a list.
        last = spec.num_layers - 1
        self._deltas = [
            (self._ping if (last - i) % 2 == 0 else self._pong)[:k] for i, k in enumerate(widths)
        ]
        # 2-D views of the same memory for the rank-1 update (see the module docstring).
        self._delta_rows = [d[None, :] for d in self._deltas]
        self._out_cols = [o[:, None] for o in self._outs]
        # Row ranges of each weight matrix updated together, so that the temporary outer
        # product of one block stays within UPDATE_BLOCK_BYTES.
        self._row_blocks = [
            _row_blocks(spec.sizes[i], spec.sizes[i + 1]) for i in range(spec.num_layers)
        ]

    @property
    def state_bytes(self) -> int:
        held = [self._ping, self._pong, *self._outs]
        return int(sum(b.nbytes for b in held))

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
        spec = self.spec
        num_layers = spec.num_layers
        last = num_layers - 1
        acts = spec.activations
        weights = [params[f"W{i}"] for i in range(num_layers)]
        biases = [params[f"b{i}"] for i in range(num_layers)]
        outs = self._outs
        deltas = self._deltas
        delta_rows = self._delta_rows
        # Per layer: (block of W, block of its input column or None for x, first row, end row).
        updates = [
            [
                (weights[i][r0:r1], None if i == 0 else self._out_cols[i - 1][r0:r1], r0, r1)
                for r0, r1 in self._row_blocks[i]
            ]
            for i in range(num_layers)
        ]
        top_act = acts[last]
        mse = spec.loss == "mse"
        lr = self.lr
        labels = y.tolist()
        # Hoisting everything above into locals keeps the per-sample loop down to numpy calls.
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(n_epochs):
                order = self._epoch_order(n, rng)
                for k in range(n) if order is None else order.tolist():
                    xk = x[k]
                    x_col = xk[:, None]
                    a = xk
                    for i in range(num_layers):
                        o = outs[i]
                        np.dot(a, weights[i], out=o)
                        np.add(o, biases[i], out=o)
                        activate(acts[i], o, o)
                        a = o

                    d = deltas[last]
                    np.copyto(d, a)
                    d[labels[k]] -= 1.0
                    if mse:
                        scale_by_derivative(top_act, a, d)

                    for i in range(last, -1, -1):
                        w = weights[i]
                        if i > 0:
                            d_below = deltas[i - 1]
                            np.dot(w, d, out=d_below)  # with W_i before its update
                        np.multiply(d, lr, out=d)
                        d_row = delta_rows[i]
                        for w_blk, a_blk, r0, r1 in updates[i]:
                            if a_blk is None:
                                a_blk = x_col[r0:r1]
                            np.subtract(w_blk, np.dot(a_blk, d_row), out=w_blk)
                        np.subtract(biases[i], d, out=biases[i])
                        if i > 0:
                            scale_by_derivative(acts[i - 1], outs[i - 1], d_below)
                            d = d_below
        self._check_finite(params)
        return TrainStats(samples=n * n_epochs, steps=n * n_epochs, state_bytes=self.state_bytes)
