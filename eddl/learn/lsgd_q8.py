"""L-SGD-q8: L-SGD on int8 fixed-point weights, integer only, for fine-tuning a trained model.

Public API:

* :class:`Q8Format` — the per-layer power-of-two scales of weights and biases.
* :func:`quantize` / :func:`dequantize` — float32 model ↔ int8 model and its format.
* :data:`TANH_TABLE`, :data:`SIGMOID_TABLE` — the 256-byte activation tables the firmware uses.
* :func:`forward`, :func:`predict`, :func:`accuracy` — integer inference on uint8 pixels.
* :func:`lowbias32`, :func:`stochastic_shift` — the counter-based rounding of the updates.
* :class:`LSGDQ8Trainer` — per-sample fused backward+update (L-SGD), optionally one layer only.

Formats (``docs/integer-kernels.md`` has every buffer's width and range):

* input ``x = p >> 1`` for a pixel ``p``: Q0.7 in 0..127 (≈ ``p / 255`` of the float model);
* activations int8 Q0.7 (value ``a / 128``) read from a table indexed by the pre-activation
  rounded to Q2.5 (tanh, range ±4) or Q3.4 (sigmoid, range ±8);
* weights of layer l int8 with ``fw_l`` fractional bits (value ``w / 2^fw_l``), biases int8
  with ``fb_l`` fractional bits; accumulators int32; deltas int32 with 15 fractional bits;
  activation derivatives from the stored outputs with 14 fractional bits;
* rescaling shifts round to nearest, ties away from zero, and saturate;
* the learning rate is ``2^-lr_shift``; the weight and bias updates are *stochastically*
  rounded to the int8 grid (unbiased), with random bits from a counter-based hash, so the C
  side reproduces them from ``(seed, counter)``. Round-to-nearest would drop almost every
  update smaller than half a step of int8, which is why int8 weights cannot learn otherwise.

Supported models: hidden layers ``tanh`` or ``sigmoid``, output ``sigmoid`` with the ``bce``
loss (the paper's 784-40-32-10 tanh/tanh/sigmoid).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .fixedpoint import INT8_MAX, INT8_MIN, check_labels, check_pixels, saturate, shift_round
from .model import MLPSpec
from .params import Params, check_like
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

I64 = npt.NDArray[np.int64]

ACT_FRAC = 7  # activations and inputs: Q0.7
DELTA_FRAC = 15  # deltas: int32 with 15 fractional bits
DERIV_FRAC = 14  # activation derivative 1 − y² or y(1 − y) from a Q0.7 output: Q0.14
MAX_FRAC = 14  # largest fractional-bit count of a weight or bias format
MAX_WIDTH = 1024  # keeps every int64 intermediate in range (see docs/integer-kernels.md)
TABLE_INPUT_FRAC = {"tanh": 5, "sigmoid": 4}

# table[i + 128] = round_half_away(f(i / 2^TABLE_INPUT_FRAC[f]) · 128), clamped to int8
# (tanh to −127..127, sigmoid to 0..127), for i in −128..127. Shipped as bytes so every build
# uses exactly these values; tests check them against the formula.
TANH_TABLE: npt.NDArray[np.int8] = np.frombuffer(
    bytes.fromhex(
        "8181818181818181818181818181818181818181818181818181818181818181"
        "8181818181818181818181818181828282828282828282838383838384848484"
        "8585858686868787888888898a8a8b8b8c8d8e8f8f90919293959697989a9b9d"
        "9fa0a2a4a6a8aaacafb1b4b6b9bcbfc2c5c8cbcfd2d6d9dde1e4e8ecf0f4f8fc"
        "0004080c1014181c1f23272a2e3135383b3e4144474a4c4f515456585a5c5e60"
        "6163656668696a6b6d6e6f707171727374757576767778787879797a7a7a7b7b"
        "7b7c7c7c7c7d7d7d7d7d7e7e7e7e7e7e7e7e7e7f7f7f7f7f7f7f7f7f7f7f7f7f"
        "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f"
    ),
    dtype=np.int8,
)
SIGMOID_TABLE: npt.NDArray[np.int8] = np.frombuffer(
    bytes.fromhex(
        "0000000000000000000000000000000000000000000000000000000000000000"
        "0000000000000000010101010101010101010101010101010101020202020202"
        "0202030303030304040404040505050606060707080809090a0a0b0c0c0d0e0e"
        "0f1011121314151617191a1b1d1e1f2122242627292b2d2e30323436383a3c3e"
        "40424446484a4c4e5052535557595a5c5e5f616263656667696a6b6c6d6e6f70"
        "7172727374747576767777787879797a7a7a7b7b7b7c7c7c7c7c7d7d7d7d7d7e"
        "7e7e7e7e7e7e7e7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f"
        "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f"
    ),
    dtype=np.int8,
)
_TABLES = {"tanh": TANH_TABLE.astype(np.int64), "sigmoid": SIGMOID_TABLE.astype(np.int64)}
_ONE = 1 << ACT_FRAC  # 1.0 in Q0.7 (the target of the true class)
_MASK32 = 0xFFFFFFFF


class Q8Error(ValueError):
    """A model, format or option that L-SGD-q8 cannot use."""


@dataclass(frozen=True)
class Q8Format:
    """Fractional bits per layer: weight ``w`` means ``w / 2^weight_frac[l]``, bias likewise."""

    weight_frac: tuple[int, ...]
    bias_frac: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.weight_frac) != len(self.bias_frac) or not self.weight_frac:
            raise Q8Error("weight_frac and bias_frac need one entry per layer")
        for fw, fb in zip(self.weight_frac, self.bias_frac, strict=True):
            for f in (fw, fb):
                if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f <= MAX_FRAC:
                    raise Q8Error(f"fractional bits must be ints in 0..{MAX_FRAC}, got {f!r}")
            # The bias is aligned to the accumulator by a left shift, never a right one.
            if fb > fw + ACT_FRAC:
                raise Q8Error(f"bias_frac {fb} exceeds weight_frac + {ACT_FRAC} = {fw + ACT_FRAC}")

    @property
    def num_layers(self) -> int:
        return len(self.weight_frac)


def check_spec(spec: MLPSpec) -> None:
    """Raise :class:`Q8Error` unless ``spec`` is a model L-SGD-q8 can run."""
    if not isinstance(spec, MLPSpec):
        raise Q8Error(f"spec must be an MLPSpec, got {type(spec).__name__}")
    if spec.activations[-1] != "sigmoid" or spec.loss != "bce":
        raise Q8Error("L-SGD-q8 needs a sigmoid output layer with the bce loss")
    for act in spec.activations[:-1]:
        if act not in TABLE_INPUT_FRAC:
            raise Q8Error(f"hidden activation {act!r} has no table; use tanh or sigmoid")
    if max(spec.sizes) > MAX_WIDTH:
        raise Q8Error(f"layer widths above {MAX_WIDTH} are not supported: {spec.sizes}")


def zeros_like_spec(spec: MLPSpec) -> Params:
    """int8 zeros of the spec's parameter shapes (the reference for validation)."""
    return {name: np.zeros(shape, dtype=np.int8) for name, shape in spec.param_shapes().items()}


def _frac_for(max_abs: float) -> int:
    """Most fractional bits such that ``round(max_abs · 2^f) <= 127``."""
    f = 0
    while f < MAX_FRAC and np.floor(max_abs * 2.0 ** (f + 1) + 0.5) <= INT8_MAX:
        f += 1
    return f


def _round_half_away(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return out


def quantize(spec: MLPSpec, params: Mapping[str, np.ndarray]) -> tuple[Params, Q8Format]:
    """int8 copy of a float32 model and the format chosen from its largest magnitudes.

    Per layer, ``fw`` (``fb``) is the largest count of fractional bits (at most 14) for which the
    largest |weight| (|bias|) still rounds into 127; ``fb`` is capped at ``fw + 7``. Values are
    ``round_half_away(v · 2^f)`` saturated to −128..127. This is a host-side step: it is the
    only place where floats meet L-SGD-q8.
    """
    check_spec(spec)
    reference = {n: np.zeros(s, dtype=np.float32) for n, s in spec.param_shapes().items()}
    check_like(reference, params, what="params")
    fws, fbs = [], []
    out: Params = {}
    for i in range(spec.num_layers):
        w = params[f"W{i}"].astype(np.float64)
        b = params[f"b{i}"].astype(np.float64)
        fw = _frac_for(float(np.abs(w).max()))
        fb = min(_frac_for(float(np.abs(b).max())), fw + ACT_FRAC)
        fws.append(fw)
        fbs.append(fb)
        out[f"W{i}"] = np.clip(_round_half_away(w * 2.0**fw), INT8_MIN, INT8_MAX).astype(np.int8)
        out[f"b{i}"] = np.clip(_round_half_away(b * 2.0**fb), INT8_MIN, INT8_MAX).astype(np.int8)
    return out, Q8Format(tuple(fws), tuple(fbs))


def dequantize(params: Mapping[str, np.ndarray], fmt: Q8Format) -> Params:
    """float32 values of an int8 model: ``w / 2^fw``, ``b / 2^fb``."""
    out: Params = {}
    for i in range(fmt.num_layers):
        out[f"W{i}"] = (params[f"W{i}"].astype(np.float64) / 2.0 ** fmt.weight_frac[i]).astype(
            np.float32
        )
        out[f"b{i}"] = (params[f"b{i}"].astype(np.float64) / 2.0 ** fmt.bias_frac[i]).astype(
            np.float32
        )
    return out


def _check_model(spec: MLPSpec, fmt: Q8Format, params: Mapping[str, np.ndarray]) -> None:
    check_spec(spec)
    if not isinstance(fmt, Q8Format) or fmt.num_layers != spec.num_layers:
        raise Q8Error(f"format must be a Q8Format with {spec.num_layers} layers, got {fmt!r}")
    check_like(zeros_like_spec(spec), params, what="params")


def _input(x: npt.NDArray[np.integer]) -> I64:
    """Pixels 0..255 to Q0.7 (0..127)."""
    return x.astype(np.int64) >> 1


def _layer(
    a: I64, w: npt.NDArray[np.int8], b: npt.NDArray[np.int8], fw: int, fb: int, act: str
) -> tuple[I64, I64]:
    """``(accumulator, output)`` of one layer for one sample or a batch of rows."""
    acc = a @ w.astype(np.int64) + (b.astype(np.int64) << (fw + ACT_FRAC - fb))
    idx = saturate(shift_round(acc, fw + ACT_FRAC - TABLE_INPUT_FRAC[act]), INT8_MIN, INT8_MAX)
    return acc, _TABLES[act][idx + 128]


def forward(
    spec: MLPSpec, fmt: Q8Format, params: Mapping[str, np.ndarray], x: npt.NDArray[np.integer]
) -> list[I64]:
    """Outputs (Q0.7 values) of every layer for uint8 pixel rows ``x``."""
    _check_model(spec, fmt, params)
    check_pixels(x, spec.sizes[0])
    return _forward(spec, fmt, params, _input(x))[1]


def _forward(
    spec: MLPSpec, fmt: Q8Format, params: Mapping[str, np.ndarray], a: I64
) -> tuple[I64, list[I64]]:
    outs = []
    acc = a
    for i, act in enumerate(spec.activations):
        acc, a = _layer(
            a, params[f"W{i}"], params[f"b{i}"], fmt.weight_frac[i], fmt.bias_frac[i], act
        )
        outs.append(a)
    return acc, outs


def predict(
    spec: MLPSpec, fmt: Q8Format, params: Mapping[str, np.ndarray], x: npt.NDArray[np.integer]
) -> I64:
    """Class per row: argmax of the output layer's int32 accumulator (ties → lowest index).

    The sigmoid is monotone, so this is the argmax of the output without the ties its int8
    saturation would create.
    """
    _check_model(spec, fmt, params)
    check_pixels(x, spec.sizes[0])
    acc, _ = _forward(spec, fmt, params, _input(x))
    pred: I64 = np.argmax(acc, axis=1).astype(np.int64)
    return pred


def accuracy(
    spec: MLPSpec,
    fmt: Q8Format,
    params: Mapping[str, np.ndarray],
    x: npt.NDArray[np.integer],
    y: npt.NDArray[np.integer],
) -> float:
    check_pixels(x, spec.sizes[0])
    check_labels(y, x.shape[0], spec.num_classes)
    return float(np.mean(predict(spec, fmt, params, x) == y))


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
