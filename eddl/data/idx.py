"""Reader for the IDX format of MNIST (gzip-compressed or raw).

IDX: a 4-byte magic (two zero bytes, a type code, the number of dimensions), then each dimension
as a big-endian uint32, then the data in C order. MNIST uses type 0x08 (unsigned byte).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

__all__ = ["IdxError", "file_md5", "read_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IdxError(ValueError):
    """An IDX file is malformed or truncated."""


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: corrupt gzip stream: {exc}") from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array of its declared shape."""
    p = Path(path)
    data = _read_bytes(p)
    if len(data) < 4:
        raise IdxError(f"{p}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{p}: bad IDX magic {data[:4].hex()}")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise IdxError(f"{p}: unknown IDX type code 0x{code:02x}")
    if ndim == 0:
        raise IdxError(f"{p}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{p}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header
    if body != expected:
        raise IdxError(f"{p}: IDX body has {body} bytes, shape {shape} needs {expected}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)
