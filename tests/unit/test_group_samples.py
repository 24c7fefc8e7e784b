"""GroupSamples: rows fetched upward once, served in the order asked, bounded, checked."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.leader.groupsamples import GroupSamples, GroupSamplesError

X = np.arange(100 * 4, dtype=np.float32).reshape(100, 4)
Y = np.arange(100, dtype=np.int64) % 10


class Upstream:
    """The sub-leader's leader: serves rows of X, Y and counts what it was asked."""

    def __init__(self, short: bool = False) -> None:
        self.asked: list[list[int]] = []
        self.short = short

    async def __call__(
        self, job_id: str, dataset: str, indexes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        self.asked.append([int(i) for i in indexes])
        if self.short:
            return X[indexes[:-1]], Y[indexes[:-1]]
        return X[indexes], Y[indexes]


async def test_rows_are_served_in_order_and_fetched_once() -> None:
    up = Upstream()
    samples = GroupSamples(up)
    x, y = await samples.get("j", "digits", np.array([5, 3, 5, 9]))
    np.testing.assert_array_equal(x, X[[5, 3, 5, 9]])
    np.testing.assert_array_equal(y, Y[[5, 3, 5, 9]])
    assert up.asked == [[5, 3, 9]]
    x, _ = await samples.get("j", "digits", np.array([9, 3, 7]))
    np.testing.assert_array_equal(x, X[[9, 3, 7]])
    assert up.asked == [[5, 3, 9], [7]]
    assert (samples.fetched, samples.served, samples.held) == (4, 7, 4)


async def test_another_job_starts_afresh() -> None:
    up = Upstream()
    samples = GroupSamples(up)
    await samples.get("j1", "digits", np.array([1, 2]))
    await samples.get("j2", "digits", np.array([1, 2]))
    assert up.asked == [[1, 2], [1, 2]]


async def test_rows_past_the_byte_bound_are_served_but_not_kept() -> None:
    up = Upstream()
    row = X[0].nbytes + Y[0].nbytes
    samples = GroupSamples(up, max_bytes=2 * row)
    x, _ = await samples.get("j", "digits", np.array([1, 2, 3]))
    np.testing.assert_array_equal(x, X[[1, 2, 3]])
    assert samples.held == 2
    await samples.get("j", "digits", np.array([1, 2, 3]))
    assert up.asked == [[1, 2, 3], [3]]


async def test_a_short_answer_is_refused_and_nothing_is_kept() -> None:
    samples = GroupSamples(Upstream(short=True))
    with pytest.raises(GroupSamplesError, match="for 3 indexes"):
        await samples.get("j", "digits", np.array([1, 2, 3]))
    assert (samples.held, samples.fetched, samples.served) == (0, 0, 0)


async def test_rows_of_another_shape_are_refused() -> None:
    async def odd(job_id: str, dataset: str, indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(indexes), 3), dtype=np.float32), Y[indexes]

    up = Upstream()
    samples = GroupSamples(up)
    await samples.get("j", "digits", np.array([1]))
    samples._fetch = odd
    with pytest.raises(GroupSamplesError, match="shapes"):
        await samples.get("j", "digits", np.array([2]))
    assert samples.held == 1
