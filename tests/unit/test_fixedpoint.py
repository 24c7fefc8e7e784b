from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eddl.learn.fixedpoint import exact_matmul


@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 5)),
    bits=st.integers(1, 62),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_exact_matmul_equals_the_int64_product(
    shape: tuple[int, int, int], bits: int, data: st.DataObject
) -> None:
    n, k, m = shape
    lim = 2 ** (bits // 2)
    elems = st.integers(-lim, lim)
    a = data.draw(hnp.arrays(np.int64, (n, k), elements=elems))
    b = data.draw(hnp.arrays(np.int64, (k, m), elements=elems))
    out = exact_matmul(a, b)
    assert out.dtype == np.int64
    assert np.array_equal(out, a @ b)


def test_large_operands_take_the_exact_integer_path() -> None:
    # (2^28 + 1)(2^28 + 3) needs 57 bits: float64 would round it, so the int64 loop must run.
    a = np.full((1, 4), 2**28 + 1, dtype=np.int64)
    b = np.full((4, 1), 2**28 + 3, dtype=np.int64)
    assert exact_matmul(a, b)[0, 0] == 4 * (2**28 + 1) * (2**28 + 3)
    assert float(2**28 + 1) * float(2**28 + 3) != (2**28 + 1) * (2**28 + 3)


def test_empty_operands() -> None:
    assert exact_matmul(np.zeros((0, 3), np.int32), np.zeros((3, 2), np.int32)).shape == (0, 2)
