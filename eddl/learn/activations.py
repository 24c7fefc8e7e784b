"""Elementwise activations, and their derivatives taken from the layer *outputs*.

Every function writes into a caller-supplied ``out`` array (which may be the input itself), so
the training loops can run on preallocated buffers without temporaries. Arrays are one sample
``(k,)`` or a batch of rows ``(n, k)``.

Derivatives are expressed through the output ``y = f(z)`` rather than the pre-activation ``z``
(tanh: ``1 - y²``, sigmoid: ``y(1 - y)``, relu: ``y > 0``, linear: ``1``): this is what lets
L-SGD drop the pre-activations. Softmax has no elementwise derivative; it is only allowed as the
output layer under cross-entropy, where the loss and activation derivatives fold into ``y - t``
(see :mod:`eddl.learn.losses`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "ELEMENTWISE",
    "activate",
    "derivative_from_output",
    "scale_by_derivative",
]

ACTIVATIONS = ("tanh", "sigmoid", "relu", "softmax", "linear")
"""Names an :class:`~eddl.learn.model.MLPSpec` may use."""

ELEMENTWISE = ("tanh", "sigmoid", "relu", "linear")
"""Activations with an elementwise derivative (every one but softmax)."""


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown activation {name!r}; expected one of {list(ACTIVATIONS)}")


def activate(name: str, z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``f(z)`` into ``out`` (``out`` may be ``z``) and return it.

    Softmax normalises along the last axis.
    """
    if name == "tanh":
        np.tanh(z, out=out)
    elif name == "sigmoid":
        # 0.5·(1 + tanh(z/2)) equals 1/(1 + e^-z) but never overflows, so large |z| needs no
        # warning suppression and saturates cleanly to 0 or 1.
        np.multiply(z, 0.5, out=out)
        np.tanh(out, out=out)
        np.multiply(out, 0.5, out=out)
        np.add(out, 0.5, out=out)
    elif name == "relu":
        np.maximum(z, 0.0, out=out)
    elif name == "linear":
        if out is not z:
            np.copyto(out, z)
    elif name == "softmax":
        # Shifting by the row maximum keeps exp() in range without changing the result.
        if z.ndim == 1:
            np.subtract(z, z.max(), out=out)
            np.exp(out, out=out)
            np.divide(out, out.sum(), out=out)
        else:
            np.subtract(z, z.max(axis=-1, keepdims=True), out=out)
            np.exp(out, out=out)
            np.divide(out, out.sum(axis=-1, keepdims=True), out=out)
    else:
        raise _unknown(name)
    return out


def derivative_from_output(name: str, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``f'(z)`` expressed through the output ``y = f(z)`` into ``out``; ``y`` is kept."""
    if name == "tanh":
        np.multiply(y, y, out=out)
        np.subtract(1.0, out, out=out)
    elif name == "sigmoid":
        np.subtract(1.0, y, out=out)
        np.multiply(out, y, out=out)
    elif name == "relu":
        np.greater(y, 0.0, out=out)
    elif name == "linear":
        out.fill(1.0)
    elif name == "softmax":
        raise ValueError("softmax has no elementwise derivative; it is fused with the ce loss")
    else:
        raise _unknown(name)
    return out


def scale_by_derivative(name: str, y: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Multiply ``delta`` in place by ``f'(z)`` taken from the output ``y``, consuming ``y``.

    ``y`` is used as the scratch space (its contents are destroyed), which is how L-SGD gets the
    derivative without any buffer of its own: the outputs are not needed once the layer above
    has been updated.
    """
    if name == "tanh":
        np.multiply(y, y, out=y)
        np.subtract(1.0, y, out=y)
        np.multiply(delta, y, out=delta)
    elif name == "sigmoid":
        # delta·y·(1 - y), multiplied in two steps so y can be overwritten by (1 - y) between.
        np.multiply(delta, y, out=delta)
        np.subtract(1.0, y, out=y)
        np.multiply(delta, y, out=delta)
    elif name == "relu":
        # relu outputs are >= 0, so sign() is exactly the 0/1 mask y > 0.
        np.sign(y, out=y)
        np.multiply(delta, y, out=delta)
    elif name == "linear":
        pass
    elif name == "softmax":
        raise ValueError("softmax has no elementwise derivative; it is fused with the ce loss")
    else:
        raise _unknown(name)
    return delta
