"""Integer helpers shared by the integer-only trainers (TIFeD, L-SGD-q8).

Everything here is exact integer arithmetic on numpy int64 arrays, so that a C port computing
the same expressions with the widths stated in ``docs/integer-kernels.md`` is bit-exact.

Division rule: :func:`floor_div` rounds toward −∞ (numpy ``//``). C's ``/`` truncates toward
zero, so the C side must use ``q = a / b; if ((a % b) != 0 && ((a < 0) != (b < 0))) q -= 1;``
(all divisors in EDDL's kernels are positive, so this reduces to ``if (a < 0 && a % b) q--``).
For a positive power-of-two divisor ``2^k`` this equals an arithmetic right shift ``a >> k``.

Rounding rule of the fixed-point format: :func:`shift_round` divides by ``2^k`` rounding to
nearest with ties away from zero: ``sign(a) · ((|a| + 2^(k−1)) >> k)``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .model import DataError

__all__ = [
    "INT8_MAX",
    "INT8_MIN",
    "INT32_MAX",
    "INT32_MIN",
    "IntegerInputError",
    "check_labels",
    "check_pixels",
    "exact_matmul",
    "floor_div",
    "saturate",
    "shift_round",
]

INT8_MIN = -128
INT8_MAX = 127
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

I64 = npt.NDArray[np.int64]


_F64_EXACT = 2**53  # every integer of smaller magnitude is exact in float64


def exact_matmul(a: npt.NDArray[np.integer], b: npt.NDArray[np.integer]) -> I64:
    """``a @ b`` of integer matrices, exactly, as int64.

    numpy multiplies integer matrices without BLAS, one slow loop. When every partial sum is
    bounded by ``max|a| · max|b| · inner < 2^53``, float64 BLAS computes each product and sum
    exactly (integers below 2^53 are representable and the bound holds for every partial sum,
    whatever the order), so the result is converted back unchanged. Otherwise the int64 loop
    runs. The result is the same integers either way.
    """
    inner = a.shape[-1]
    if a.size == 0 or b.size == 0:
        return np.asarray(a, dtype=np.int64) @ np.asarray(b, dtype=np.int64)
    bound = int(np.abs(a).max()) * int(np.abs(b).max()) * inner
    if bound < _F64_EXACT:
        out: I64 = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
        return out
    return np.asarray(a, dtype=np.int64) @ np.asarray(b, dtype=np.int64)


class IntegerInputError(DataError):
    """Samples or labels handed to an integer trainer are unusable (dtype, shape, range)."""


def floor_div(a: npt.NDArray[np.integer] | int, b: int) -> I64:
    """``a // b`` rounded toward −∞, as int64 (``b`` must be positive)."""
    if b <= 0:
        raise ValueError(f"divisor must be positive, got {b}")
    return np.floor_divide(np.asarray(a, dtype=np.int64), np.int64(b))


def shift_round(a: npt.NDArray[np.integer], k: int) -> I64:
    """``a / 2^k`` rounded to nearest, ties away from zero, as int64 (``k >= 0``)."""
    if k < 0:
        raise ValueError(f"shift must be >= 0, got {k}")
    a64 = np.asarray(a, dtype=np.int64)
    if k == 0:
        return a64.copy()
    half = np.int64(1) << np.int64(k - 1)
    mag = (np.abs(a64) + half) >> np.int64(k)
    return np.where(a64 < 0, -mag, mag)


def saturate(a: npt.NDArray[np.integer], lo: int, hi: int) -> I64:
    """Clamp to ``[lo, hi]`` (saturating arithmetic), as int64."""
    return np.clip(np.asarray(a, dtype=np.int64), lo, hi)


def check_pixels(x: object, width: int) -> npt.NDArray[np.integer]:
    """Validate a batch of pixel rows: integer dtype, shape ``(n, width)``, ``n >= 1``, 0..255."""
    if not isinstance(x, np.ndarray):
        raise IntegerInputError(f"samples must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind not in "iu":
        raise IntegerInputError(f"samples must be integer pixels (uint8), got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != width:
        raise IntegerInputError(f"samples must have shape (n, {width}), got {x.shape}")
    if x.shape[0] == 0:
        raise IntegerInputError("no samples given")
    if x.dtype != np.uint8 and (int(x.min()) < 0 or int(x.max()) > 255):
        raise IntegerInputError(
            f"pixels must lie in 0..255, got range {int(x.min())}..{int(x.max())}"
        )
    return x


def check_labels(y: object, n: int, classes: int) -> npt.NDArray[np.integer]:
    """Validate labels: integer dtype, shape ``(n,)``, values in ``0..classes-1``."""
    if not isinstance(y, np.ndarray):
        raise IntegerInputError(f"labels must be a numpy array, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise IntegerInputError(f"labels must be integers, got dtype {y.dtype}")
    if y.shape != (n,):
        raise IntegerInputError(f"labels must have shape ({n},), got {y.shape}")
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise IntegerInputError(
            f"labels must lie in 0..{classes - 1}, got range {int(y.min())}..{int(y.max())}"
        )
    return y
