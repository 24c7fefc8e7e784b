"""TIFeD: integer-only training with Direct Feedback Alignment (docs/architecture.md#tifed).

Public API:

* :func:`train_step` — one mini-batch update (full network or one layer), in place.
* :class:`StepBuffers` — one mini-batch's training state, at the firmware's widths.
* :class:`TifedTrainer` — the :class:`~eddl.learn.trainer.Trainer` for TIFeD, with a ``layer``
  option for single-layer mode.
* :func:`mcu_state_bytes` — the firmware's training state beyond the weights, in bytes.
* re-exported from :mod:`eddl.learn.tifedmodel`, the model itself: :class:`TifedConfig`,
  :func:`init_params`, :func:`feedback_radius`, :func:`feedback_matrices`,
  :func:`pocket_tanh`, :data:`GRAD_INV`, :class:`Forward`, :func:`forward`, :func:`predict`,
  :func:`accuracy`.

Arithmetic is integer only (int64 intermediates, int32 weights), every division rounds toward
−∞ (numpy ``//``; the C port uses :func:`~eddl.learn.fixedpoint.floor_div`'s rule) and the
sample order is the order given unless a ``rng`` asks for a shuffle, so the Cortex-M firmware
reproduces these weights bit for bit. Buffer widths and ranges: ``docs/integer-kernels.md``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    check_labels,
    check_pixels,
    exact_matmul,
    floor_div,
    saturate,
)
from .params import Params, check_like, param_names
from .tifedmodel import (
    GRAD_INV,
    I64,
    Forward,
    TifedConfig,
    _centre,
    _is_int,
    accuracy,
    feedback_matrices,
    feedback_radius,
    forward,
    init_params,
    pocket_tanh,
    predict,
)
from .trainer import Trainer, TrainerConfigError, TrainStats, check_positive_int

__all__ = [
    "GRAD_INV",
    "Forward",
    "StepBuffers",
    "TifedConfig",
    "TifedTrainer",
    "accuracy",
    "feedback_matrices",
    "feedback_radius",
    "forward",
    "init_params",
    "mcu_state_bytes",
    "pocket_tanh",
    "predict",
    "train_step",
]


def _update(params: Params, i: int, a_in: I64, delta: I64, lr_inv: int) -> None:
    """``W −= (aᵀ·δ) // lr_inv``, ``b −= Σδ // lr_inv``, saturated to int32, in place."""
    w_name, b_name = f"W{i}", f"b{i}"
    dw = floor_div(exact_matmul(a_in.T, delta), lr_inv)
    db = floor_div(delta.sum(axis=0), lr_inv)
    params[w_name][...] = saturate(params[w_name].astype(np.int64) - dw, INT32_MIN, INT32_MAX)
    params[b_name][...] = saturate(params[b_name].astype(np.int64) - db, INT32_MIN, INT32_MAX)


class StepBuffers:
    """The training state of one mini-batch, at the firmware's widths.

    ``acts[l]`` int16 ``(batch, sizes[l+1])`` holds layer l's outputs (−127..128), ``grad_inv[l]``
    uint8 the matching inverse slopes, ``err`` int16 ``(batch, classes)`` the output error, and
    ``delta`` int32 ``(batch, widest hidden)`` one hidden layer's delta at a time. numpy computes
    each product in int64 temporaries and stores the results here; the values always fit (see
    docs/integer-kernels.md), so the narrowing is exact.
    """

    def __init__(self, config: TifedConfig) -> None:
        bs = config.batch_size
        widths = config.sizes[1:]
        self.acts = [np.zeros((bs, w), dtype=np.int16) for w in widths]
        self.grad_inv = [np.zeros((bs, w), dtype=np.uint8) for w in widths]
        self.err = np.zeros((bs, config.classes), dtype=np.int16)
        self.delta = np.zeros((bs, max(config.sizes[1:-1], default=0)), dtype=np.int32)

    @property
    def nbytes(self) -> int:
        held: list[np.ndarray] = [*self.acts, *self.grad_inv, self.err, self.delta]
        return int(sum(b.nbytes for b in held))


def train_step(
    params: Params,
    x: npt.NDArray[np.integer],
    y: npt.NDArray[np.integer],
    config: TifedConfig,
    feedback: list[npt.NDArray[np.int16]] | list[npt.NDArray[np.int32]],
    *,
    layer: int | None = None,
    buffers: StepBuffers | None = None,
) -> None:
    """One mini-batch update of ``params`` in place, without validation (callers validate).

    ``x`` are pixel rows (0..255, at most ``config.batch_size`` of them), ``y`` labels. With
    ``layer`` set, the full forward pass runs but only that layer's weights and bias change.
    ``buffers`` is the trainer's preallocated state (allocated here when not given).
    """
    buf = StepBuffers(config) if buffers is None else buffers
    n = y.shape[0]
    a0 = _centre(x)
    a = a0
    for i in range(config.num_layers):
        z = exact_matmul(a, params[f"W{i}"]) + params[f"b{i}"].astype(np.int64)
        out, g = pocket_tanh(z, config.sizes[i], config.act_shift)
        buf.acts[i][:n] = out
        buf.grad_inv[i][:n] = g
        a = out
    err = buf.err[:n]
    err[...] = buf.acts[-1][:n]
    err[np.arange(n), y.astype(np.int64)] -= config.target
    e = err.astype(np.int64)
    last = config.num_layers - 1
    layers = range(config.num_layers) if layer is None else (layer,)
    # DFA: every delta comes from the output error, none from an updated weight, so the
    # layers may be updated in any order.
    for i in layers:
        a_in = a0 if i == 0 else buf.acts[i - 1][:n].astype(np.int64)
        g_i = buf.grad_inv[i][:n].astype(np.int64)
        if i == last:
            delta = np.floor_divide(e, g_i)
        else:
            d = buf.delta[:n, : config.sizes[i + 1]]
            d[...] = np.floor_divide(exact_matmul(e, feedback[i]), g_i)
            delta = d.astype(np.int64)
        _update(params, i, a_in, delta, config.lr_inv)


class TifedTrainer(Trainer):
    """TIFeD local training: mini-batches in the given order, DFA updates, in place.

    ``layer=None`` is full-network mode; ``layer=i`` is single-layer mode (forward through
    every layer, update only ``W{i}``/``b{i}``). ``feedback`` overrides the matrices drawn
    from ``config.feedback_seed`` (a host may ship B explicitly).
    """

    name = "tifed"

    def __init__(
        self,
        config: TifedConfig,
        *,
        layer: int | None = None,
        feedback: list[npt.NDArray[np.int32]] | None = None,
    ) -> None:
        if not isinstance(config, TifedConfig):
            raise TrainerConfigError(f"config must be a TifedConfig, got {type(config).__name__}")
        if layer is not None and not (_is_int(layer) and 0 <= layer < config.num_layers):
            raise TrainerConfigError(
                f"layer must be None or in 0..{config.num_layers - 1}, got {layer!r}"
            )
        if feedback is None:
            feedback = feedback_matrices(config)
        else:
            _check_feedback(config, feedback)
        self.config = config
        self.layer = layer
        # |B| < r <= 313 for every network, so int16 holds it (as the firmware does).
        self.feedback = [np.array(b, dtype=np.int16, copy=True) for b in feedback]
        self._buffers = StepBuffers(config)

    @property
    def state_bytes(self) -> int:
        """Bytes of the feedback matrices and the mini-batch buffers this trainer holds.

        The widths are the firmware's (B int16, activations int16, gradInv uint8, output error
        int16, hidden delta int32), so this equals :func:`mcu_state_bytes`.
        """
        return int(sum(b.nbytes for b in self.feedback)) + self._buffers.nbytes

    def updated_names(self) -> list[str]:
        """Names of the parameters this trainer changes (and a client uploads)."""
        if self.layer is None:
            return param_names(self.config.num_layers)
        return [f"W{self.layer}", f"b{self.layer}"]

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.integer],
        y: npt.NDArray[np.integer],
        *,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> TrainStats:
        """Train in place for ``epochs`` passes over ``(x, y)`` in mini-batches.

        Without ``rng`` the rows are visited in the order given (what the firmware does); with
        one, each epoch visits ``rng.permutation(n)``. The last mini-batch of an epoch may be
        short. Inputs are validated before anything changes.
        """
        check_like(init_params(self.config), params, what="params")
        check_pixels(x, self.config.sizes[0])
        check_labels(y, x.shape[0], self.config.classes)
        epochs = check_positive_int(epochs, "epochs")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TrainerConfigError(f"rng must be a numpy Generator or None, got {rng!r}")
        n = x.shape[0]
        bs = self.config.batch_size
        steps = 0
        for _ in range(epochs):
            order = np.arange(n) if rng is None else rng.permutation(n)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                train_step(
                    params,
                    x[idx],
                    y[idx],
                    self.config,
                    self.feedback,
                    layer=self.layer,
                    buffers=self._buffers,
                )
                steps += 1
        return TrainStats(samples=n * epochs, steps=steps, state_bytes=self.state_bytes)


def mcu_state_bytes(config: TifedConfig) -> int:
    """Bytes of training state beyond the weights, at the firmware's buffer widths."""
    classes = config.classes
    bs = config.batch_size
    hidden = config.sizes[1:-1]
    feedback = 2 * classes * sum(hidden)  # int16
    acts = 2 * bs * sum(config.sizes[1:])  # int16 outputs of every layer
    grad_inv = 1 * bs * sum(config.sizes[1:])  # uint8
    err = 2 * bs * classes  # int16 error (output delta reuses it)
    deltas = 4 * bs * max(hidden, default=0)  # int32 hidden delta, one layer at a time
    return feedback + acts + grad_inv + err + deltas


def _check_feedback(config: TifedConfig, feedback: list[npt.NDArray[np.int32]]) -> None:
    hidden = config.sizes[1:-1]
    if len(feedback) != len(hidden):
        raise ValueError(f"need {len(hidden)} feedback matrices, got {len(feedback)}")
    for h, b in zip(hidden, feedback, strict=True):
        if not isinstance(b, np.ndarray) or b.dtype.kind not in "iu":
            raise ValueError("feedback matrices must be integer numpy arrays")
        if b.shape != (config.classes, h):
            raise ValueError(f"feedback matrix has shape {b.shape}, expected {(config.classes, h)}")
        r = feedback_radius(config.classes, h)
        if b.size and (int(b.min()) < -r or int(b.max()) >= r):
            raise ValueError(f"feedback entries must lie in [{-r}, {r})")
