"""Validation and numeric helpers shared by the rules.

Validation first, arithmetic second: each rule calls :func:`check_round` or
:func:`check_single` on everything it was given before it computes or stores anything.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import SupportsIndex, cast

import numpy as np

from eddl.learn.aggregation.base import (
    AggregationError,
    ClientUpdate,
    _is_int,
    check_update_fields,
)
from eddl.learn.params import Params, ParamsError, check_like

__all__ = [
    "cast_back",
    "check_bool",
    "check_global",
    "check_positive_int",
    "check_real",
    "check_round",
    "check_single",
    "check_version",
    "int_weighted_mean",
]


def check_version(version: object) -> int:
    if not _is_int(version):
        raise AggregationError(f"version must be an int, got {type(version).__name__}")
    v = operator.index(cast(SupportsIndex, version))
    if v < 0:
        raise AggregationError(f"version must be >= 0, got {v}")
    return v


def check_global(global_params: object) -> None:
    """The global model must be a non-empty mapping of numeric numpy arrays."""
    if not isinstance(global_params, Mapping) or not global_params:
        raise AggregationError("global params must be a non-empty mapping of names to arrays")
    for name, arr in global_params.items():
        if not isinstance(arr, np.ndarray):
            raise AggregationError(f"global params: {name} is {type(arr).__name__}, not an array")
        if arr.dtype.kind not in "iuf":
            raise AggregationError(
                f"global params: {name} has dtype {arr.dtype}; rules aggregate ints and floats"
            )


def check_single(
    global_params: Params, update: object, version: int, *, allow_partial: bool, what: str
) -> int:
    """Validate one update against the global model; return its staleness."""
    checked = check_update_fields(update)
    staleness = version - checked.base_version
    if staleness < 0:
        raise AggregationError(
            f"{what}: based on version {checked.base_version}, newer than the global "
            f"model's version {version} (negative staleness)"
        )
    try:
        check_like(global_params, checked.params, subset=allow_partial, what=what)
    except ParamsError as exc:
        raise AggregationError(str(exc)) from exc
    return staleness


def check_round(
    global_params: Params,
    updates: Sequence[ClientUpdate],
    version: object,
    *,
    allow_partial: bool,
) -> list[int]:
    """Validate the global model, the version and every update; return the stalenesses."""
    v = check_version(version)
    check_global(global_params)
    if isinstance(updates, ClientUpdate) or not isinstance(updates, Sequence):
        raise AggregationError("updates must be a sequence of ClientUpdate")
    if not updates:
        raise AggregationError("a round needs at least one update")
    return [
        check_single(global_params, u, v, allow_partial=allow_partial, what=f"update {i}")
        for i, u in enumerate(updates)
    ]


def cast_back(values: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Cast a float64 result back to a parameter's dtype.

    Floats are rounded to the nearest representable value; a result that does not fit (an
    overflow to Inf) is refused. Integers are truncated toward zero (TIFeD's ``astype(int)``)
    and saturate at the dtype's range, as fixed-point arithmetic does.
    """
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            out = values.astype(dtype)
        if not np.isfinite(out).all():
            raise AggregationError(f"{name}: aggregated value does not fit in {dtype}")
        return out
    info = np.iinfo(dtype)
    lo = np.float64(info.min)
    hi = np.float64(info.max)
    if int(hi) > info.max:
        # 64-bit maxima round up in float64; step below so the cast cannot wrap around.
        hi = np.nextafter(hi, np.float64(0))
    ints: np.ndarray = np.clip(np.trunc(values), lo, hi).astype(dtype)
    return ints


def int_weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[int]) -> np.ndarray:
    """``trunc(sum(w * x) / sum(w))`` computed exactly in integers, in the arrays' dtype.

    The float64 reference ``np.mean(stack, axis=0).astype(int)`` agrees with this whenever the
    float sum is exact; this stays exact where it is not (int64 values, huge counts): sums go
    to int64 when they provably fit and to Python integers otherwise.
    """
    dtype = arrays[0].dtype
    total_weight = sum(int(w) for w in weights)
    info = np.iinfo(dtype)
    bound = total_weight * max(abs(int(info.min)), int(info.max))
    if bound > np.iinfo(np.int64).max:
        # Python integers: slow but exact for any size (int64/uint64 models, huge weights).
        acc_obj = np.zeros(arrays[0].shape, dtype=object)
        for arr, w in zip(arrays, weights, strict=True):
            acc_obj = acc_obj + arr.astype(object) * int(w)
        q_obj = np.abs(acc_obj) // total_weight
        return np.asarray(np.where(acc_obj < 0, -q_obj, q_obj)).astype(dtype)
    acc = np.zeros(arrays[0].shape, dtype=np.int64)
    for arr, w in zip(arrays, weights, strict=True):
        if int(w) == 1:
            np.add(acc, arr, out=acc)
        else:
            np.add(acc, arr.astype(np.int64) * np.int64(w), out=acc)
    negative = acc < 0
    np.abs(acc, out=acc)
    np.floor_divide(acc, total_weight, out=acc)  # floor of a non-negative value: truncation
    np.negative(acc, out=acc, where=negative)
    return acc.astype(dtype)


def check_real(value: object, what: str, *, low: float, high: float, low_open: bool) -> float:
    """A finite real number in ``(low, high]`` (or ``[low, high]``)."""
    if not isinstance(value, int | float | np.integer | np.floating) or isinstance(
        value, bool | np.bool_
    ):
        raise AggregationError(f"{what} must be a number, got {type(value).__name__}")
    x = float(value)
    if not math.isfinite(x):
        raise AggregationError(f"{what} must be finite, got {x}")
    below = x <= low if low_open else x < low
    if below or x > high:
        bracket = "(" if low_open else "["
        raise AggregationError(f"{what} must be in {bracket}{low}, {high}], got {x}")
    return x


def check_positive_int(value: object, what: str, *, minimum: int) -> int:
    if not _is_int(value):
        raise AggregationError(f"{what} must be an int, got {type(value).__name__}")
    n = operator.index(cast(SupportsIndex, value))
    if n < minimum:
        raise AggregationError(f"{what} must be >= {minimum}, got {n}")
    return n


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise AggregationError(f"{what} must be true or false, got {value!r}")
    return value
