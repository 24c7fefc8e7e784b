"""A device's int8 top-P replies (``eddl.mcu.topp.int8_record``) become wire records only when
they hold what the selection promised: every corruption is refused and nothing is built."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from eddl.mcu.protocol import ProtocolError
from eddl.mcu.topp import int8_record
from eddl.net.sparse import decode_sparse, encode_sparse

SHAPE = (4, 5)


def _reply(indexes: list[int], values: list[int], scale: float = 0.25) -> bytes:
    body = struct.pack("<f", scale)
    for i, q in zip(indexes, values, strict=True):
        body += struct.pack("<Ib", i, q)
    return body


def test_a_good_reply_is_the_record_encode_sparse_makes() -> None:
    values = np.array([0.5, -31.75, 0.25], np.float32)
    want = encode_sparse("W0", SHAPE, np.array([1, 7, 19]), values, value_dtype="int8")
    q = list(np.frombuffer(want.values, np.int8))
    got = int8_record(
        "W0", SHAPE, 3, [_reply([1, 7], q[:2], want.scale), _reply([19], q[2:], want.scale)]
    )
    assert got.SerializeToString() == want.SerializeToString()
    np.testing.assert_array_equal(decode_sparse(got).indices, [1, 7, 19])


def test_nothing_kept_is_an_empty_record_with_scale_one() -> None:
    got = int8_record("b0", (5,), 0, [_reply([], [], 1.0)])
    assert got.count == 0 and got.scale == 1.0 and got.values == b""


@pytest.mark.parametrize(
    ("count", "replies", "why"),
    [
        (21, [_reply([0], [1])], "21 entries kept of a tensor of 20"),  # count over the tensor
        (2, [_reply([0], [1])], "1 records"),  # fewer records than the selection kept
        (1, [_reply([0, 3], [1, 2])], "2 records"),  # more
        (2, [_reply([3, 20], [1, 2])], "not strictly increasing inside 20"),  # out of range
        (2, [_reply([3, 3], [1, 2])], "not strictly increasing"),  # duplicate index
        (2, [_reply([3], [1]), _reply([1], [2])], "not strictly increasing"),  # out of order
        (2, [_reply([3], [1], 0.25), _reply([5], [2], 0.5)], "under 2 scales"),
        (1, [_reply([3], [1], 0.0)], "finite scale > 0"),
        (1, [_reply([3], [1], float("nan"))], "finite scale > 0"),
        (1, [_reply([3], [1])[:-1]], "reply of 8 bytes"),  # a truncated record
        (1, [b"\x00\x00"], "reply of 2 bytes"),  # not even a scale
    ],
)
def test_a_corrupted_reply_is_refused(count: int, replies: list[bytes], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        int8_record("W0", SHAPE, count, replies)
