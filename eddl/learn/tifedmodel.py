"""TIFeD's integer model: its configuration, the DFA feedback matrices, pocket tanh, inference.

Public API:

* :class:`TifedConfig` — layer sizes, ``lr_inv``, mini-batch size, feedback seed, target scale.
* :func:`init_params` — all weights and biases zero, int32 (``"W0"`` is ``(in, out)``).
* :func:`feedback_radius`, :func:`feedback_matrices` — the fixed random DFA matrices ``B``.
* :func:`pocket_tanh` — the piecewise-linear activation and its per-element ``gradInv``.
* :func:`forward`, :func:`predict`, :func:`accuracy` — inference on uint8 pixels.

Training (:func:`~eddl.learn.tifed.train_step`, :class:`~eddl.learn.tifed.TifedTrainer`) is in
:mod:`eddl.learn.tifed`, which re-exports these names. Arithmetic is integer only and every
division rounds toward −∞, as there (docs/architecture.md#tifed, ``docs/integer-kernels.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .fixedpoint import INT32_MAX, check_labels, check_pixels, exact_matmul, floor_div
from .params import Params, check_like
from .trainer import TrainerConfigError

__all__ = [
    "GRAD_INV",
    "Forward",
    "TifedConfig",
    "accuracy",
    "feedback_matrices",
    "feedback_radius",
    "forward",
    "init_params",
    "pocket_tanh",
    "predict",
]


I64 = npt.NDArray[np.int64]

# Inverse slopes of the seven pocket-tanh pieces, from v < −127 up to v ≥ 128.
GRAD_INV = (128, 8, 2, 1, 2, 8, 128)
# Lower bounds of pieces 1..6 (piece 0 is v < −127).
_JOINTS = (-127, -74, -31, 32, 75, 128)
# Largest |output| of pocket tanh and of the error against a one-hot target in 0..127.
_ACT_MAX = 128
_FEEDBACK_SCALE = 12 * 32767
_MAX_WIDTH = 1 << 20


@dataclass(frozen=True)
class TifedConfig:
    """A TIFeD network and its training hyper-parameters.

    ``sizes`` lists layer widths from input to output (paper: 784-200-10). ``lr_inv`` is the
    inverse learning rate (paper: 2048, 4096 or 8192). ``target`` is the one-hot scale of the
    target (16). ``act_shift`` is ``k`` in ``v = z // (2^k · fan_in)`` (8).
    """

    sizes: tuple[int, ...] = (784, 200, 10)
    lr_inv: int = 2048
    batch_size: int = 25
    feedback_seed: int = 0
    target: int = 16
    act_shift: int = 8

    def __post_init__(self) -> None:
        raw: object = self.sizes
        if not isinstance(raw, tuple | list) or len(raw) < 2:
            raise TrainerConfigError(f"sizes needs an input and an output width, got {raw!r}")
        # Lists (from TOML or JSON) are stored as tuples so configs compare and hash alike.
        object.__setattr__(self, "sizes", tuple(raw))
        for s in self.sizes:
            if not _is_int(s) or not 1 <= s <= _MAX_WIDTH:
                raise TrainerConfigError(f"layer widths must be ints in 1..{_MAX_WIDTH}: {raw}")
        if self.sizes[-1] < 2:
            raise TrainerConfigError("the output layer needs at least 2 classes")
        for name, low, high in (
            ("lr_inv", 1, INT32_MAX),
            ("batch_size", 1, 1 << 16),
            ("feedback_seed", 0, 2**63 - 1),
            ("target", 1, 127),
            ("act_shift", 0, 16),
        ):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise TrainerConfigError(f"{name} must be an int in {low}..{high}, got {value!r}")
        # The hidden error e·B must fit the int32 buffer the firmware keeps for it.
        classes = self.sizes[-1]
        for h in self.sizes[1:-1]:
            bound = classes * (_ACT_MAX + self.target) * feedback_radius(classes, h)
            if bound > INT32_MAX:
                raise TrainerConfigError(f"e·B could reach {bound}, beyond int32")

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def classes(self) -> int:
        return self.sizes[-1]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Forward(NamedTuple):
    """``acts[0]`` is the centred input, ``acts[l + 1]`` the output of layer l (−127..128).

    ``grad_inv[l]`` holds layer l's per-element inverse slope (one of :data:`GRAD_INV`).
    """

    acts: list[I64]
    grad_inv: list[I64]


def init_params(config: TifedConfig) -> Params:
    """Zero weights and biases (TIFeD starts from 0), int32."""
    params: Params = {}
    for i, (n_in, n_out) in enumerate(zip(config.sizes[:-1], config.sizes[1:], strict=True)):
        params[f"W{i}"] = np.zeros((n_in, n_out), dtype=np.int32)
        params[f"b{i}"] = np.zeros((n_out,), dtype=np.int32)
    return params


def feedback_radius(classes: int, hidden: int) -> int:
    """``r = isqrt(12·32767 // (classes + hidden))``: B is drawn from ``[−r, r)``.

    ``in`` and ``out`` of the formula are B's own dimensions: the output width (the error's
    length) and the hidden width it feeds.
    """
    return max(1, math.isqrt(_FEEDBACK_SCALE // (classes + hidden)))


def feedback_matrices(config: TifedConfig) -> list[npt.NDArray[np.int32]]:
    """One fixed matrix ``B_l`` (classes × width of hidden layer l) per hidden layer.

    Drawn in layer order from one generator:
    ``np.random.default_rng(feedback_seed).integers(-r, r, size=(classes, hidden), dtype=np.int64)``
    then cast to int32. The firmware receives B from the host rather than regenerating it.
    """
    rng = np.random.default_rng(config.feedback_seed)
    out: list[npt.NDArray[np.int32]] = []
    for h in config.sizes[1:-1]:
        r = feedback_radius(config.classes, h)
        out.append(rng.integers(-r, r, size=(config.classes, h), dtype=np.int64).astype(np.int32))
    return out


def pocket_tanh(z: npt.NDArray[np.integer], fan_in: int, act_shift: int = 8) -> tuple[I64, I64]:
    """Pocket tanh of pre-activations ``z``: ``(y, grad_inv)``, both int64, y in −127..128.

    ``v = z // (2^act_shift · fan_in)`` (floor), then the seven pieces listed in
    docs/architecture.md#tifed.
    """
    v = floor_div(z, (1 << act_shift) * fan_in)
    conditions = [
        v < _JOINTS[0],
        v < _JOINTS[1],
        v < _JOINTS[2],
        v < _JOINTS[3],
        v < _JOINTS[4],
        v < _JOINTS[5],
    ]
    pieces = [
        np.full_like(v, -127),
        floor_div(v, 4) - 88,
        v - 32,
        2 * v,
        v + 32,
        floor_div(v, 4) + 88,
    ]
    y = np.select(conditions, pieces, default=128).astype(np.int64)
    g = np.select(conditions, [np.int64(s) for s in GRAD_INV[:6]], default=GRAD_INV[6])
    return y, g.astype(np.int64)


def _centre(x: npt.NDArray[np.integer]) -> I64:
    """Pixels 0..255 to the int8 range −128..127."""
    return x.astype(np.int64) - 128


def _forward_centred(params: Params, a0: I64, config: TifedConfig) -> Forward:
    acts = [a0]
    grads: list[I64] = []
    for i in range(config.num_layers):
        z = exact_matmul(acts[-1], params[f"W{i}"]) + params[f"b{i}"].astype(np.int64)
        y, g = pocket_tanh(z, config.sizes[i], config.act_shift)
        acts.append(y)
        grads.append(g)
    return Forward(acts, grads)


def forward(params: Params, x: npt.NDArray[np.integer], config: TifedConfig) -> Forward:
    """Full forward pass on uint8 pixel rows ``x`` of shape ``(n, sizes[0])``."""
    check_like(init_params(config), params, what="params")
    check_pixels(x, config.sizes[0])
    return _forward_centred(params, _centre(x), config)


def predict(params: Params, x: npt.NDArray[np.integer], config: TifedConfig) -> I64:
    """Predicted class per row: the first index of the largest output (ties → lowest index)."""
    out = forward(params, x, config).acts[-1]
    pred: I64 = np.argmax(out, axis=1).astype(np.int64)
    return pred


def accuracy(
    params: Params, x: npt.NDArray[np.integer], y: npt.NDArray[np.integer], config: TifedConfig
) -> float:
    """Fraction of rows whose prediction equals the label."""
    check_pixels(x, config.sizes[0])
    check_labels(y, x.shape[0], config.classes)
    return float(np.mean(predict(params, x, config) == y))
