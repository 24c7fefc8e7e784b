"""Named parameter arrays and their validation.

A model's parameters are a ``Params`` mapping from names to numpy arrays, in layer order:
``"W0"`` of shape ``(in, out)``, ``"b0"`` of shape ``(out,)``, ``"W1"``, ``"b1"``, ... Float
algorithms hold float32, TIFeD holds int32, L-SGD-q8 holds int8.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["Params", "ParamsError", "check_like", "clone", "nbytes", "param_names"]

Params = dict[str, np.ndarray]


class ParamsError(ValueError):
    """Parameters do not match what was expected (names, shapes, dtypes, finiteness)."""


def param_names(num_layers: int) -> list[str]:
    """``["W0", "b0", ..., "W{n-1}", "b{n-1}"]`` for ``num_layers`` dense layers."""
    return [n for i in range(num_layers) for n in (f"W{i}", f"b{i}")]


def clone(params: Mapping[str, np.ndarray]) -> Params:
    """Deep copy, preserving order and dtypes."""
    return {k: np.array(v, copy=True) for k, v in params.items()}


def nbytes(params: Mapping[str, np.ndarray]) -> int:
    return int(sum(v.nbytes for v in params.values()))


def check_like(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    subset: bool = False,
    what: str = "update",
) -> None:
    """Raise :class:`ParamsError` unless ``candidate`` matches ``reference``.

    Names must be equal (or a non-empty subset of the reference's when ``subset``), and each
    array must have the reference's shape and dtype and hold only finite values.
    """
    ref_names = set(reference)
    names = set(candidate)
    unknown = sorted(names - ref_names)
    if unknown:
        raise ParamsError(f"{what}: unknown parameter name(s) {unknown}")
    if subset:
        if not names:
            raise ParamsError(f"{what}: holds no parameters")
    else:
        missing = sorted(ref_names - names)
        if missing:
            raise ParamsError(f"{what}: missing parameter(s) {missing}")
    for name in candidate:
        ref = reference[name]
        arr = candidate[name]
        if not isinstance(arr, np.ndarray):
            raise ParamsError(f"{what}: {name} is {type(arr).__name__}, not a numpy array")
        if arr.dtype != ref.dtype:
            raise ParamsError(f"{what}: {name} has dtype {arr.dtype}, expected {ref.dtype}")
        if arr.shape != ref.shape:
            raise ParamsError(f"{what}: {name} has shape {arr.shape}, expected {ref.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ParamsError(f"{what}: {name} holds NaN or Inf")
