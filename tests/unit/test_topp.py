"""Top-P% selection of an update's largest entries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from eddl.learn.topp import SparseDelta, TopPError, densify, kept_entries, top_p, top_p_feedback

_floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (3, 4), elements=_floats), arrays(np.float32, (5,), elements=_floats))
def test_p_100_equals_dense(w: np.ndarray, b: np.ndarray) -> None:
    delta = {"W0": w, "b0": b}
    dense = densify(top_p(delta, 100.0))
    for name in delta:
        np.testing.assert_array_equal(dense[name], delta[name])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (40,), elements=_floats), st.floats(1.0, 100.0))
def test_kept_entries_are_the_largest(v: np.ndarray, p: float) -> None:
    sel = top_p({"a": v[:25].reshape(5, 5), "b": v[25:]}, p)
    kept = sum(s.indices.size for s in sel.values())
    assert kept == kept_entries(40, p)
    values = np.concatenate([np.abs(s.values) for s in sel.values()])
    mask = np.ones(40, dtype=bool)
    mask[sel["a"].indices] = False
    mask[25 + sel["b"].indices] = False
    dropped = np.abs(v[mask])
    if dropped.size:
        assert values.min() >= dropped.max()


def test_ten_percent_of_a_thousand_is_a_hundred() -> None:
    assert kept_entries(1000, 10.0) == 100
    assert kept_entries(3, 0.001) == 1


@pytest.mark.parametrize("p", [0.0, -1.0, 100.5, float("nan")])
def test_bad_percentages_are_refused(p: float) -> None:
    with pytest.raises(TopPError):
        top_p({"a": np.ones(3, dtype=np.float32)}, p)


def test_sparse_delta_refuses_bad_indices() -> None:
    vals = np.ones(2, dtype=np.float32)
    with pytest.raises(TopPError):
        SparseDelta((3,), np.array([0, 3]), vals)
    with pytest.raises(TopPError):
        SparseDelta((3,), np.array([1, 1]), vals)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (30,), elements=_floats), arrays(np.float32, (30,), elements=_floats))
def test_feedback_sends_or_keeps_every_entry(d: np.ndarray, r: np.ndarray) -> None:
    sel, kept = top_p_feedback({"a": d}, {"a": r}, 10.0)
    assert sel["a"].indices.size == kept_entries(30, 10.0)
    total = (d + r).astype(np.float32)
    np.testing.assert_array_equal(densify(sel)["a"] + kept["a"], total)
    assert not kept["a"][sel["a"].indices].any()
    np.testing.assert_array_equal(sel["a"].values, total[sel["a"].indices])


def test_feedback_sends_a_kept_entry_once_it_is_large() -> None:
    first, kept = top_p_feedback({"a": np.array([5.0, 3.0, 0.0, 0.0], np.float32)}, None, 25.0)
    assert first["a"].indices.tolist() == [0]
    assert kept["a"].tolist() == [0.0, 3.0, 0.0, 0.0]
    second, kept = top_p_feedback({"a": np.array([1.0, 0.5, 0.0, 0.0], np.float32)}, kept, 25.0)
    assert second["a"].indices.tolist() == [1] and second["a"].values.tolist() == [3.5]
    assert kept["a"].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_feedback_at_p_100_keeps_nothing() -> None:
    delta = {"W0": np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5}
    sel, kept = top_p_feedback(delta, {"W0": np.ones((2, 3), np.float32)}, 100.0)
    np.testing.assert_array_equal(densify(sel)["W0"], delta["W0"] + 1.0)
    assert not kept["W0"].any()


@pytest.mark.parametrize(
    "residual",
    [{"b0": np.zeros(3, np.float32)}, {"W0": np.zeros(4, np.float32)}],
)
def test_feedback_refuses_a_residual_that_does_not_fit(residual: dict[str, np.ndarray]) -> None:
    before = {n: a.copy() for n, a in residual.items()}
    with pytest.raises(TopPError, match="residual"):
        top_p_feedback({"W0": np.ones(3, np.float32)}, residual, 50.0)
    for n, a in residual.items():
        np.testing.assert_array_equal(a, before[n])
