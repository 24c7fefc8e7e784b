"""Losses over one-hot targets, their derivatives, and the output-layer delta.

Conventions (shared by every float trainer):

* a loss is the *sum* over output units of one sample, averaged over the samples;
* ``bce`` is binary cross-entropy on sigmoid outputs, ``-Σ t·log y + (1 - t)·log(1 - y)``;
* ``ce`` is categorical cross-entropy on softmax outputs, ``-Σ t·log y``;
* ``mse`` is ``½·Σ (y - t)²`` (the ½ makes its derivative ``y - t``).

Outputs are clipped to ``[EPS, 1 - EPS]`` inside the logarithms so a saturated unit gives a large
but finite loss. Loss values are accumulated in float64.
"""

from __future__ import annotations

import numpy as np

from eddl.learn.activations import derivative_from_output

__all__ = ["EPS", "FUSED", "LOSSES", "loss_grad", "loss_value", "output_delta"]

LOSSES = ("bce", "ce", "mse")
"""Names an :class:`~eddl.learn.model.MLPSpec` may use."""

FUSED = {"bce": "sigmoid", "ce": "softmax"}
"""Output activation each log-loss requires; with it the output delta is exactly ``y - t``."""

EPS = 1e-7


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown loss {name!r}; expected one of {list(LOSSES)}")


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, -1) if a.ndim == 1 else a


def loss_value(name: str, y: np.ndarray, t: np.ndarray) -> float:
    """Mean over samples of the per-sample loss; ``y``, ``t`` are ``(k,)`` or ``(n, k)``."""
    y64 = _rows(np.asarray(y, dtype=np.float64))
    t64 = _rows(np.asarray(t, dtype=np.float64))
    if y64.shape != t64.shape:
        raise ValueError(f"outputs {y64.shape} and targets {t64.shape} differ in shape")
    if name == "mse":
        per_sample = 0.5 * np.square(y64 - t64).sum(axis=1)
    elif name == "bce":
        yc = np.clip(y64, EPS, 1.0 - EPS)
        per_sample = -(t64 * np.log(yc) + (1.0 - t64) * np.log(1.0 - yc)).sum(axis=1)
    elif name == "ce":
        per_sample = -(t64 * np.log(np.clip(y64, EPS, 1.0))).sum(axis=1)
    else:
        raise _unknown(name)
    return float(per_sample.mean())


def loss_grad(name: str, y: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-sample derivative ``∂loss/∂y`` (same shape as ``y``; divide by n for the mean loss).

    The clipping of the log-losses is applied here too, so it matches :func:`loss_value`
    wherever the clip is inactive.
    """
    if y.shape != t.shape:
        raise ValueError(f"outputs {y.shape} and targets {t.shape} differ in shape")
    if name == "mse":
        grad: np.ndarray = np.subtract(y, t)
        return grad
    if name == "bce":
        yc = np.clip(y, EPS, 1.0 - EPS)
        grad = np.divide(yc - t, yc * (1.0 - yc))
        return grad
    if name == "ce":
        grad = np.divide(-t, np.clip(y, EPS, 1.0))
        return grad
    raise _unknown(name)


def output_delta(
    name: str, activation: str, y: np.ndarray, t: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Write the output layer's ``∂loss/∂z`` for each sample into ``out`` and return it.

    ``bce`` with sigmoid and ``ce`` with softmax fold to ``y - t`` exactly (the ``1/(y(1-y))``
    and ``1/y`` factors cancel against the activation derivative); ``mse`` multiplies ``y - t``
    by the activation derivative. Other pairings are refused, as :class:`MLPSpec` refuses them.
    """
    if name in FUSED:
        if FUSED[name] != activation:
            raise ValueError(f"loss {name!r} needs a {FUSED[name]} output, not {activation!r}")
        np.subtract(y, t, out=out)
        return out
    if name == "mse":
        deriv = derivative_from_output(activation, y, np.empty_like(out))
        np.subtract(y, t, out=out)
        np.multiply(out, deriv, out=out)
        return out
    raise _unknown(name)
