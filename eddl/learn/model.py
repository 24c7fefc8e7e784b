"""Multi-layer perceptrons: the spec, parameter init, forward pass, prediction and validation.

A model is an :class:`MLPSpec` (layer sizes, one activation per layer, a loss) plus a
:data:`~eddl.learn.params.Params` mapping holding float32 ``W{i}`` ``(in, out)`` and ``b{i}``
``(out,)``. Labels are class indexes; the output layer has one unit per class and the loss sees
one-hot targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from eddl.learn.activations import ACTIVATIONS, activate
from eddl.learn.losses import FUSED, LOSSES, loss_value
from eddl.learn.params import Params, check_like

__all__ = [
    "DataError",
    "MLPSpec",
    "SpecError",
    "accuracy",
    "check_labels",
    "check_params",
    "check_x",
    "evaluate_loss",
    "forward",
    "init_params",
    "predict",
    "targets",
]

_SPEC_KEYS = ("sizes", "activations", "loss")


class SpecError(ValueError):
    """A model spec is malformed (sizes, activation or loss names, or their combination)."""


class DataError(ValueError):
    """Samples or labels do not fit the model (shape, dtype, NaN/Inf, label out of range)."""


@dataclass(frozen=True)
class MLPSpec:
    """A dense network: ``sizes`` = (input, hidden..., output), one activation per layer.

    Lists are accepted for ``sizes`` and ``activations`` and stored as tuples, so specs read
    from TOML or JSON compare and hash like hand-written ones.
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str

    def __post_init__(self) -> None:
        # Typed as object: the fields come from TOML/JSON/users and are checked, not trusted.
        raw_sizes: object = self.sizes
        raw_acts: object = self.activations
        if not isinstance(raw_sizes, tuple | list):
            raise SpecError(f"sizes must be a sequence of ints, got {type(raw_sizes).__name__}")
        if not isinstance(raw_acts, tuple | list):
            raise SpecError(
                f"activations must be a sequence of names, got {type(raw_acts).__name__}"
            )
        items: tuple[object, ...] = tuple(raw_sizes)
        acts = tuple(raw_acts)
        if len(items) < 2:
            raise SpecError(f"sizes needs an input and an output size, got {list(items)}")
        for s in items:
            if isinstance(s, bool) or not isinstance(s, Integral) or int(s) < 1:
                raise SpecError(f"sizes must be positive ints, got {list(items)}")
        sizes = tuple(int(s) for s in items)  # type: ignore[call-overload]
        if sizes[-1] < 2:
            raise SpecError(
                "the output layer needs at least 2 units (labels are class indexes with "
                f"one-hot targets), got {sizes[-1]}"
            )
        if len(acts) != len(sizes) - 1:
            raise SpecError(
                f"{len(sizes) - 1} layer(s) need {len(sizes) - 1} activation(s), got {len(acts)}"
            )
        for a in acts:
            if a not in ACTIVATIONS:
                raise SpecError(f"unknown activation {a!r}; expected one of {list(ACTIVATIONS)}")
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise SpecError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        if "softmax" in acts[:-1]:
            raise SpecError("softmax is only allowed on the output layer")
        if acts[-1] == "softmax" and self.loss != "ce":
            raise SpecError(f"a softmax output needs the ce loss, not {self.loss!r}")
        # The log-losses are only defined on outputs in (0, 1) that sum as their loss assumes.
        needed = FUSED.get(self.loss)
        if needed is not None and acts[-1] != needed:
            raise SpecError(f"the {self.loss} loss needs a {needed} output, not {acts[-1]!r}")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "activations", acts)

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{"W0": (in, h1), "b0": (h1,), ...}`` in layer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.num_layers):
            shapes[f"W{i}"] = (self.sizes[i], self.sizes[i + 1])
            shapes[f"b{i}"] = (self.sizes[i + 1],)
        return shapes

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes().values())

    def to_dict(self) -> dict[str, object]:
        return {"sizes": list(self.sizes), "activations": list(self.activations), "loss": self.loss}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> MLPSpec:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`SpecError`."""
        if not isinstance(d, Mapping):
            raise SpecError(f"a model spec must be a mapping, got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in _SPEC_KEYS)
        if unknown:
            raise SpecError(f"unknown model spec key(s) {unknown}; expected {list(_SPEC_KEYS)}")
        missing = [k for k in _SPEC_KEYS if k not in d]
        if missing:
            raise SpecError(f"model spec misses key(s) {missing}")
        return cls(d["sizes"], d["activations"], d["loss"])  # type: ignore[arg-type]


def init_params(spec: MLPSpec, seed: int) -> Params:
    """Glorot/Xavier *uniform* weights, zero biases, float32; the same seed gives the same values.

    ``W{i} ~ U(-r, r)`` with ``r = sqrt(6 / (fan_in + fan_out))``, drawn layer by layer from one
    PCG64 stream seeded with ``seed``.
    """
    rng = np.random.default_rng(seed)
    params: Params = {}
    for i in range(spec.num_layers):
        fan_in, fan_out = spec.sizes[i], spec.sizes[i + 1]
        r = np.sqrt(6.0 / (fan_in + fan_out))
        params[f"W{i}"] = rng.uniform(-r, r, size=(fan_in, fan_out)).astype(np.float32)
        params[f"b{i}"] = np.zeros(fan_out, dtype=np.float32)
    return params


def check_params(spec: MLPSpec, params: Mapping[str, np.ndarray], what: str = "params") -> None:
    """Raise :class:`~eddl.learn.params.ParamsError` unless ``params`` are float32 of the
    spec's names and shapes, all finite."""
    # Zero-stride views carry shape and dtype for check_like without allocating the weights.
    zero = np.zeros((), dtype=np.float32)
    reference = {name: np.broadcast_to(zero, shape) for name, shape in spec.param_shapes().items()}
    check_like(reference, params, what=what)


def check_x(spec: MLPSpec, x: object) -> np.ndarray:
    """Return ``x`` if it is a finite float32 ``(n, sizes[0])`` array with n >= 1."""
    if not isinstance(x, np.ndarray):
        raise DataError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise DataError(f"x must be float32, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != spec.sizes[0]:
        raise DataError(f"x must have shape (n, {spec.sizes[0]}), got {x.shape}")
    if x.shape[0] == 0:
        raise DataError("x holds no samples")
    # min/max propagate NaN and expose ±Inf without the (n, in) boolean temporary that
    # isfinite() would allocate for a whole training set.
    if not (np.isfinite(x.min()) and np.isfinite(x.max())):
        raise DataError("x holds NaN or Inf")
    return x


def check_labels(spec: MLPSpec, y: object, n: int | None = None) -> np.ndarray:
    """Return ``y`` if it is a 1-D integer array of class indexes (and of length ``n``)."""
    if not isinstance(y, np.ndarray):
        raise DataError(f"y must be a numpy array, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise DataError(f"y must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise DataError(f"y must be 1-D, got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise DataError(f"y has {y.shape[0]} labels for {n} samples")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise DataError(
            f"labels must lie in [0, {spec.num_classes}), got [{int(y.min())}, {int(y.max())}]"
        )
    return y


def targets(spec: MLPSpec, y: np.ndarray) -> np.ndarray:
    """One-hot float32 targets ``(n, num_classes)`` for integer labels ``y``."""
    check_labels(spec, y)
    t = np.zeros((y.shape[0], spec.num_classes), dtype=np.float32)
    t[np.arange(y.shape[0]), y] = 1.0
    return t


def forward(spec: MLPSpec, params: Params, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of every layer (``num_layers`` float32 arrays, the last one the prediction)."""
    check_params(spec, params)
    check_x(spec, x)
    outs: list[np.ndarray] = []
    a = x
    for i, act in enumerate(spec.activations):
        z = a @ params[f"W{i}"]
        z += params[f"b{i}"]
        a = activate(act, z, out=z)
        outs.append(a)
    return outs


def predict(spec: MLPSpec, params: Params, x: np.ndarray) -> np.ndarray:
    """Class indexes (int64) of the largest output unit."""
    labels: np.ndarray = np.argmax(forward(spec, params, x)[-1], axis=1).astype(np.int64)
    return labels


def accuracy(spec: MLPSpec, params: Params, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the label."""
    check_labels(spec, y, n=x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else None)
    pred = predict(spec, params, x)
    return float(np.mean(pred == y))


def evaluate_loss(spec: MLPSpec, params: Params, x: np.ndarray, y: np.ndarray) -> float:
    """Mean loss of the model on ``(x, y)`` (see :mod:`eddl.learn.losses` for conventions)."""
    check_labels(spec, y, n=x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else None)
    return loss_value(spec.loss, forward(spec, params, x)[-1], targets(spec, y))
