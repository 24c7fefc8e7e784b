"""One numpy array to and from a ``Tensor`` record (raw little-endian bytes, C order)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eddl.proto.v1 import common_pb2

__all__ = [
    "ALLOWED_DTYPES",
    "MAX_ELEMENTS",
    "MAX_NDIM",
    "TensorError",
    "array_from_tensor",
    "check_dtype",
    "check_shape",
    "short",
    "tensor_from_array",
]

# Only plain numeric dtypes travel; object or structured dtypes would let a peer smuggle
# arbitrary bytes into numpy.
ALLOWED_DTYPES = frozenset(
    {"float32", "float64", "int8", "uint8", "int16", "int32", "int64", "uint32"}
)


# Bounds on what a peer may declare for one tensor, checked before numpy sees the shape: more
# dimensions than any EDDL model uses, and an element count (zero dimensions left out, as numpy
# counts them when it checks a shape) far above any model and far below numpy's own limit.
MAX_NDIM = 8
MAX_ELEMENTS = 1 << 31
# Error texts quote peer-supplied names and values at most this long.
_QUOTE_CHARS = 40
# A whole error text is cut to this many characters: a peer must not choose its length.
MAX_ERROR_CHARS = 400


def short(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters, for error texts that quote a peer."""
    text = repr(value)
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 3] + "..."


class TensorError(ValueError):
    """A tensor record is malformed: unknown dtype, bad shape, or a size that does not match."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        super().__init__(message)


def check_dtype(name: str, dtype: str) -> np.dtype[np.generic]:
    if dtype not in ALLOWED_DTYPES:
        raise TensorError(
            f"tensor {short(name)}: dtype {short(dtype)} not allowed; "
            f"use one of {sorted(ALLOWED_DTYPES)}"
        )
    return np.dtype(dtype).newbyteorder("<")


def check_shape(
    name: str,
    shape: Sequence[int],
    *,
    max_ndim: int = MAX_NDIM,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[int, ...]:
    """``shape`` as a tuple, refused when it has too many dimensions, a negative one, or more
    than ``max_elements`` elements (zero dimensions left out, so numpy accepts every shape
    that passes). The number of dimensions is checked before any of them is read."""
    if len(shape) > max_ndim:
        raise TensorError(f"tensor {short(name)}: {len(shape)} dimensions, at most {max_ndim}")
    count = 1
    for d in shape:
        if d < 0:
            raise TensorError(f"tensor {short(name)}: negative dimension {d}")
        count *= max(int(d), 1)
        if count > max_elements:
            raise TensorError(f"tensor {short(name)}: more than {max_elements} elements")
    return tuple(int(d) for d in shape)


def expected_nbytes(name: str, dtype: np.dtype[np.generic], shape: tuple[int, ...]) -> int:
    count = 1
    for d in check_shape(name, shape):
        count *= d
    return count * dtype.itemsize


def tensor_from_array(name: str, array: np.ndarray) -> common_pb2.Tensor:
    dtype = str(array.dtype)
    check_dtype(name, dtype)
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False)
    return common_pb2.Tensor(name=name, dtype=dtype, shape=list(array.shape), data=data.tobytes())


def array_from_tensor(tensor: common_pb2.Tensor, *, finite: bool = True) -> np.ndarray:
    """Decode ``tensor``; refuse a size mismatch and, for floats when ``finite``, NaN/Inf."""
    dtype = check_dtype(tensor.name, tensor.dtype)
    shape = check_shape(tensor.name, tensor.shape)
    want = expected_nbytes(tensor.name, dtype, shape)
    data = tensor.data  # each read of a bytes field copies it: read it once
    if len(data) != want:
        raise TensorError(
            f"tensor {short(tensor.name)}: {len(data)} bytes, shape {list(shape)} "
            f"of {tensor.dtype} needs {want}"
        )
    arr = np.frombuffer(data, dtype=dtype).reshape(shape).astype(tensor.dtype)
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise TensorError(f"tensor {short(tensor.name)} holds NaN or Inf")
    return arr
