"""One numpy array to and from a ``Tensor`` record (raw little-endian bytes, C order)."""

from __future__ import annotations

import numpy as np

from eddl.proto.v1 import common_pb2

__all__ = ["ALLOWED_DTYPES", "TensorError", "array_from_tensor", "check_dtype", "tensor_from_array"]

# Only plain numeric dtypes travel; object or structured dtypes would let a peer smuggle
# arbitrary bytes into numpy.
ALLOWED_DTYPES = frozenset(
    {"float32", "float64", "int8", "uint8", "int16", "int32", "int64", "uint32"}
)


class TensorError(ValueError):
    """A tensor record is malformed: unknown dtype, bad shape, or a size that does not match."""


def check_dtype(name: str, dtype: str) -> np.dtype[np.generic]:
    if dtype not in ALLOWED_DTYPES:
        raise TensorError(
            f"tensor {name!r}: dtype {dtype!r} not allowed; use one of {sorted(ALLOWED_DTYPES)}"
        )
    return np.dtype(dtype).newbyteorder("<")


def expected_nbytes(name: str, dtype: np.dtype[np.generic], shape: tuple[int, ...]) -> int:
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor {name!r}: negative dimension in shape {list(shape)}")
    count = 1
    for d in shape:
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
    shape = tuple(int(d) for d in tensor.shape)
    want = expected_nbytes(tensor.name, dtype, shape)
    if len(tensor.data) != want:
        raise TensorError(
            f"tensor {tensor.name!r}: {len(tensor.data)} bytes, shape {list(shape)} "
            f"of {tensor.dtype} needs {want}"
        )
    arr = np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(tensor.dtype)
    if finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise TensorError(f"tensor {tensor.name!r} holds NaN or Inf")
    return arr
