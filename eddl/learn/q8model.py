"""The int8 fixed-point model of L-SGD-q8: formats, activation tables, quantization, inference.

Public API:

* :class:`Q8Format` — the per-layer power-of-two scales of weights and biases.
* :func:`quantize` / :func:`dequantize` — float32 model ↔ int8 model and its format.
* :data:`TANH_TABLE`, :data:`SIGMOID_TABLE` — the 256-byte activation tables the firmware uses.
* :func:`forward`, :func:`predict`, :func:`accuracy` — integer inference on uint8 pixels.
* :func:`check_spec`, :func:`zeros_like_spec` — which models L-SGD-q8 runs, and their shapes.

Training (:class:`~eddl.learn.lsgd_q8.LSGDQ8Trainer`, with its stochastic rounding) is in
:mod:`eddl.learn.lsgd_q8`, which re-exports these names.

Formats (``docs/integer-kernels.md`` has every buffer's width and range):

* input ``x = p >> 1`` for a pixel ``p``: Q0.7 in 0..127 (≈ ``p / 255`` of the float model);
* activations int8 Q0.7 (value ``a / 128``) read from a table indexed by the pre-activation
  rounded to Q2.5 (tanh, range ±4) or Q3.4 (sigmoid, range ±8);
* weights of layer l int8 with ``fw_l`` fractional bits (value ``w / 2^fw_l``), biases int8
  with ``fb_l`` fractional bits; accumulators int32; deltas int32 with 15 fractional bits;
  activation derivatives from the stored outputs with 14 fractional bits;
* rescaling shifts round to nearest, ties away from zero, and saturate.

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

__all__ = [
    "ACT_FRAC",
    "DELTA_FRAC",
    "DERIV_FRAC",
    "MAX_FRAC",
    "MAX_WIDTH",
    "SIGMOID_TABLE",
    "TABLE_INPUT_FRAC",
    "TANH_TABLE",
    "Q8Error",
    "Q8Format",
    "accuracy",
    "check_spec",
    "dequantize",
    "forward",
    "predict",
    "quantize",
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
