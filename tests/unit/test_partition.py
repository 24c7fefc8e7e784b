from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.data import PartitionError, parse_partition, partition, partition_dirichlet, partition_iid


@given(n=st.integers(1, 500), clients=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=50, deadline=None)
def test_iid_covers_every_index_once_with_balanced_sizes(n: int, clients: int, seed: int) -> None:
    if n < clients:
        with pytest.raises(PartitionError):
            partition_iid(n, clients, seed)
        return
    parts = partition_iid(n, clients, seed)
    assert len(parts) == clients
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_seeded() -> None:
    a, b, c = partition_iid(100, 4, 7), partition_iid(100, 4, 7), partition_iid(100, 4, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_covers_every_index_once_and_is_seeded() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition_dirichlet(labels, 8, 0.5, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    again = partition_dirichlet(labels, 8, 0.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(parts, again, strict=True))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10), 200)

    def skew(alpha: float) -> float:
        parts = partition_dirichlet(labels, 5, alpha, seed=11)
        # Mean over clients of the share of their largest class.
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))

    assert skew(0.1) > skew(100.0) + 0.2


def test_parse_partition() -> None:
    assert parse_partition("iid") == ("iid", None)
    assert parse_partition("dirichlet:0.3") == ("dirichlet", 0.3)
    for bad in ("dirichlet", "dirichlet:x", "dirichlet:-1", "dirichlet:nan", "zipf:2"):
        with pytest.raises(PartitionError):
            parse_partition(bad)


def test_partition_dispatch_and_impossible_requests() -> None:
    labels = np.repeat(np.arange(3), 4)
    assert len(partition("iid", labels, 3, 0)) == 3
    with pytest.raises(PartitionError):
        partition_dirichlet(labels, 20, 1.0, seed=0)
    with pytest.raises(PartitionError):
        partition_iid(5, 0, 0)
