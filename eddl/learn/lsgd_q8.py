"""L-SGD-q8: L-SGD on int8 fixed-point weights, integer only, for fine-tuning a trained model.

Public API:

* :class:`LSGDQ8Trainer` — per-sample fused backward+update (L-SGD), optionally one layer only.
* :func:`lowbias32`, :func:`stochastic_shift` — the counter-based rounding of the updates.
* re-exported from :mod:`eddl.learn.q8model`, the int8 model itself: :class:`Q8Format`,
  :func:`quantize` / :func:`dequantize`, :data:`TANH_TABLE`, :data:`SIGMOID_TABLE`,
  :func:`forward`, :func:`predict`, :func:`accuracy`, :func:`check_spec`, the format constants.

The formats of inputs, activations, weights, biases, deltas and derivatives are listed in
:mod:`eddl.learn.q8model` (``docs/integer-kernels.md`` has every buffer's width and range).
The learning rate is ``2^-lr_shift``; the weight and bias updates are *stochastically*
rounded to the int8 grid (unbiased), with random bits from a counter-based hash, so the C
side reproduces them from ``(seed, counter)``. Round-to-nearest would drop almost every
update smaller than half a step of int8, which is why int8 weights cannot learn otherwise.

Supported models: hidden layers ``tanh`` or ``sigmoid``, output ``sigmoid`` with the ``bce``
loss (the paper's 784-40-32-10 tanh/tanh/sigmoid).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .fixedpoint import INT8_MAX, INT8_MIN, check_labels, check_pixels, saturate, shift_round
from .model import MLPSpec
from .params import Params
from .q8model import (
    ACT_FRAC,
    DELTA_FRAC,
    DERIV_FRAC,
    I64,
    MAX_FRAC,
    SIGMOID_TABLE,
    TABLE_INPUT_FRAC,
    TANH_TABLE,
    Q8Error,
    Q8Format,
    _check_model,
    _input,
    _layer,
    accuracy,
    check_spec,
    dequantize,
    forward,
    predict,
    quantize,
    zeros_like_spec,
)
from .trainer import Trainer, TrainerConfigError, TrainStats, check_positive_int

__all__ = [
    "ACT_FRAC",
    "DELTA_FRAC",
    "DERIV_FRAC",
    "MAX_FRAC",
    "SIGMOID_TABLE",
    "TABLE_INPUT_FRAC",
    "TANH_TABLE",
    "LSGDQ8Trainer",
    "Q8Error",
    "Q8Format",
    "accuracy",
    "check_spec",
    "dequantize",
    "forward",
    "lowbias32",
    "predict",
    "quantize",
    "stochastic_shift",
    "zeros_like_spec",
]

_ONE = 1 << ACT_FRAC  # 1.0 in Q0.7 (the target of the true class)
_MASK32 = 0xFFFFFFFF


def lowbias32(v: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """The 32-bit integer hash: ``v ^= v>>16; v *= 0x7feb352d; v ^= v>>15; v *= 0x846ca68b;
    v ^= v>>16`` (all arithmetic modulo 2^32)."""
    v = np.asarray(v, dtype=np.uint32)
    v = v ^ (v >> np.uint32(16))
    v = v * np.uint32(0x7FEB352D)
    v = v ^ (v >> np.uint32(15))
    v = v * np.uint32(0x846CA68B)
    out: npt.NDArray[np.uint32] = v ^ (v >> np.uint32(16))
    return out


def stochastic_shift(u: I64, s: int, key: int, counter: int) -> tuple[I64, int]:
    """``u / 2^s`` rounded down or up at random, unbiased; returns ``(result, next counter)``.

    Element ``e`` (row-major) draws ``r = lowbias32(((counter + e) mod 2^32) ^ key)`` and rounds
    up when ``r >> (32 − s)`` is below the remainder ``u − 2^s·floor(u / 2^s)``.
    """
    if not 1 <= s <= 32:
        raise Q8Error(f"rounding shift must be in 1..32, got {s}")
    flat = np.asarray(u, dtype=np.int64).ravel()
    n = flat.size
    ctr = (np.arange(n, dtype=np.uint64) + np.uint64(counter)) & np.uint64(_MASK32)
    r = lowbias32(ctr.astype(np.uint32) ^ np.uint32(key))
    threshold = (r >> np.uint32(32 - s)).astype(np.int64)
    q = flat >> np.int64(s)
    rem = flat - (q << np.int64(s))
    out = (q + (threshold < rem)).reshape(np.shape(u))
    return out, (counter + n) & _MASK32


def _derivative(act: str, y: I64) -> I64:
    """f'(z) in Q0.14 from the stored Q0.7 output y."""
    if act == "tanh":
        return (1 << (2 * ACT_FRAC)) - y * y
    return y * (_ONE - y)


class LSGDQ8Trainer(Trainer):
    """Per-sample L-SGD on an int8 model: fused backward sweep, in-place stochastic updates.

    ``lr_shift`` sets the learning rate ``2^-lr_shift``; ``seed`` keys the rounding hash and
    ``counter`` is where its stream starts (it advances by one per weight or bias updated and
    is kept between :meth:`train` calls; read it from :attr:`counter` to resume elsewhere).
    ``layer`` restricts the updates to one layer (the sweep still runs down to it).
    """

    name = "lsgd-q8"

    def __init__(
        self,
        spec: MLPSpec,
        fmt: Q8Format,
        *,
        lr_shift: int = 7,
        seed: int = 0,
        counter: int = 0,
        layer: int | None = None,
    ) -> None:
        check_spec(spec)
        if not isinstance(fmt, Q8Format) or fmt.num_layers != spec.num_layers:
            raise Q8Error(f"format must be a Q8Format with {spec.num_layers} layers")
        if isinstance(lr_shift, bool) or not isinstance(lr_shift, int) or not 0 <= lr_shift <= 10:
            raise TrainerConfigError(f"lr_shift must be an int in 0..10, got {lr_shift!r}")
        for what, v in (("seed", seed), ("counter", counter)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MASK32:
                raise TrainerConfigError(f"{what} must be an int in 0..2^32-1, got {v!r}")
        if layer is not None and (
            isinstance(layer, bool)
            or not isinstance(layer, int)
            or not 0 <= layer < spec.num_layers
        ):
            raise TrainerConfigError(f"layer must be None or in 0..{spec.num_layers - 1}")
        super().__init__(spec, 2.0**-lr_shift)
        self.fmt = fmt
        self.lr_shift = lr_shift
        self.seed = seed
        self.layer = layer
        self._key = int(lowbias32(np.array([seed], dtype=np.uint32))[0])
        self._counter = counter
        widest = max(spec.sizes[1:])
        # The buffers the firmware holds, at its widths: two int32 delta vectors and one int8
        # output vector per layer.
        self._ping = np.zeros(widest, dtype=np.int32)
        self._pong = np.zeros(widest, dtype=np.int32)
        self._outs = [np.zeros(k, dtype=np.int8) for k in spec.sizes[1:]]

    @property
    def counter(self) -> int:
        return self._counter

    @property
    def state_bytes(self) -> int:
        """Two int32 delta buffers of the widest layer, int8 outputs, the uint32 counter."""
        held: list[np.ndarray] = [self._ping, self._pong, *self._outs]
        return int(sum(b.nbytes for b in held)) + 4

    def updated_names(self) -> list[str]:
        layers = range(self.spec.num_layers) if self.layer is None else (self.layer,)
        return [n for i in layers for n in (f"W{i}", f"b{i}")]

    def train(
        self,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> TrainStats:
        """Train the int8 ``params`` in place, one sample at a time (see the module docstring)."""
        _check_model(self.spec, self.fmt, params)
        check_pixels(x, self.spec.sizes[0])
        check_labels(y, x.shape[0], self.spec.num_classes)
        epochs = check_positive_int(epochs, "epochs")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TrainerConfigError(f"rng must be a numpy Generator or None, got {rng!r}")
        n = x.shape[0]
        xq = _input(x)
        labels = y.astype(np.int64)
        for _ in range(epochs):
            order = range(n) if rng is None else rng.permutation(n).tolist()
            for k in order:
                self._sample(params, xq[k], int(labels[k]))
        return TrainStats(samples=n * epochs, steps=n * epochs, state_bytes=self.state_bytes)

    def _sample(self, params: Params, a0: I64, label: int) -> None:
        spec, fmt = self.spec, self.fmt
        last = spec.num_layers - 1
        lowest = 0 if self.layer is None else self.layer
        acts: list[I64] = [a0]
        for i, act in enumerate(spec.activations):
            _, out = _layer(
                acts[-1],
                params[f"W{i}"],
                params[f"b{i}"],
                fmt.weight_frac[i],
                fmt.bias_frac[i],
                act,
            )
            self._outs[i][...] = out
            acts.append(out)
        # sigmoid + bce: δ = y − t, from Q0.7 to the delta format.
        target = np.zeros_like(acts[-1])
        target[label] = _ONE
        delta = (acts[-1] - target) << (DELTA_FRAC - ACT_FRAC)
        buffers = (self._ping, self._pong)
        buffers[0][: delta.size] = delta
        for i in range(last, lowest - 1, -1):
            w_name, b_name = f"W{i}", f"b{i}"
            fw, fb = fmt.weight_frac[i], fmt.bias_frac[i]
            w = params[w_name]
            if i > lowest:
                s = w.astype(np.int64) @ delta  # with W_i before its update
            if self.layer is None or i == self.layer:
                shift_w = ACT_FRAC + DELTA_FRAC + self.lr_shift - fw
                dw, self._counter = stochastic_shift(
                    acts[i][:, None] * delta[None, :], shift_w, self._key, self._counter
                )
                w[...] = saturate(w.astype(np.int64) - dw, INT8_MIN, INT8_MAX)
                b = params[b_name]
                db, self._counter = stochastic_shift(
                    delta, DELTA_FRAC + self.lr_shift - fb, self._key, self._counter
                )
                b[...] = saturate(b.astype(np.int64) - db, INT8_MIN, INT8_MAX)
            if i > lowest:
                deriv = _derivative(spec.activations[i - 1], acts[i])
                delta = saturate(shift_round(s * deriv, fw + DERIV_FRAC), -(2**31), 2**31 - 1)
                buffers[(last - i + 1) % 2][: delta.size] = delta
