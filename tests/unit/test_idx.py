from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from eddl.data import IdxError, read_idx


def _header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


@pytest.mark.parametrize("compress", [False, True])
def test_reads_raw_and_gzip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    blob = _header(0x08, arr.shape) + arr.tobytes()
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(blob) if compress else blob)
    out = read_idx(p)
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


def test_reads_big_endian_int32(tmp_path: Path) -> None:
    arr = np.array([1, -2, 70000], dtype=">i4")
    p = tmp_path / "b.idx"
    p.write_bytes(_header(0x0C, (3,)) + arr.tobytes())
    out = read_idx(p)
    assert out.tolist() == [1, -2, 70000] and out.dtype.byteorder in "=<"


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00", "type code"),
        (b"\x00\x00\x08\x02" + (1).to_bytes(4, "big"), "truncated"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00\x01", "body"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path: Path, blob: bytes, message: str) -> None:
    p = tmp_path / "bad.idx"
    p.write_bytes(blob)
    with pytest.raises(IdxError, match=message):
        read_idx(p)
