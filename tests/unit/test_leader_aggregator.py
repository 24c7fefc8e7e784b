"""The aggregator: sync rounds with stale folding, async rules, switches, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eddl.leader.aggregator import Aggregator
from eddl.leader.errors import StaleVersionError, UpdateRejectedError


def g(value: float = 0.0) -> dict[str, np.ndarray]:
    return {"W0": np.full((2, 3), value, np.float32), "b0": np.full(3, value, np.float32)}


def snapshot(agg: Aggregator) -> tuple[int, int, int, dict[str, np.ndarray]]:
    return (
        agg.version,
        agg.round_size(),
        agg.pending(),
        {k: v.copy() for k, v in agg.params.items()},
    )


def assert_unchanged(agg: Aggregator, before: tuple[int, int, int, dict[str, np.ndarray]]) -> None:
    after = snapshot(agg)
    assert after[:3] == before[:3]
    for name, arr in before[3].items():
        np.testing.assert_array_equal(after[3][name], arr)


def test_sync_round_is_the_sample_weighted_mean() -> None:
    agg = Aggregator(g(), sync_rule="fedavg")
    assert agg.add("t1", g(1.0), 10, 0) is None
    assert agg.add("t2", g(4.0), 30, 0) is None
    assert agg.round_size() == 2
    new = agg.close_round()
    assert new is not None and new.version == 1 and agg.version == 1 and new.updates == 2
    np.testing.assert_allclose(agg.params["W0"], 3.25)  # (10*1 + 30*4) / 40
    assert agg.close_round() is None


def test_late_update_is_folded_in_with_a_staleness_discount() -> None:
    agg = Aggregator(g(), sync_rule="fedavg")
    agg.add("t1", g(1.0), 10, 0)
    agg.close_round()  # version 1
    agg.add("late", g(10.0), 300, 0)  # trained from version 0: staleness 1
    agg.add("t2", g(2.0), 100, 1)
    agg.close_round()
    w = round(300 / math.sqrt(2))
    np.testing.assert_allclose(agg.params["b0"], (w * 10.0 + 100 * 2.0) / (w + 100), rtol=1e-6)


@pytest.mark.parametrize(
    ("params", "samples", "base", "error", "match"),
    [
        (
            {"W0": np.full((2, 3), np.nan, np.float32), "b0": np.zeros(3, np.float32)},
            5,
            3,
            UpdateRejectedError,
            "NaN",
        ),
        (
            {"W0": np.zeros((3, 2), np.float32), "b0": np.zeros(3, np.float32)},
            5,
            3,
            UpdateRejectedError,
            "shape",
        ),
        (
            {"W0": np.zeros((2, 3), np.float64), "b0": np.zeros(3, np.float32)},
            5,
            3,
            UpdateRejectedError,
            "dtype",
        ),
        ({"W0": np.zeros((2, 3), np.float32)}, 5, 3, UpdateRejectedError, "missing"),
        ({**g(), "W9": np.zeros(1, np.float32)}, 5, 3, UpdateRejectedError, "unknown"),
        (g(), 0, 3, UpdateRejectedError, "num_samples"),
        (g(), True, 3, UpdateRejectedError, "num_samples"),
        (g(), 5, 7, StaleVersionError, "based on version 7"),
        (g(), 5, 0, StaleVersionError, "at most 2"),
    ],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_refused_updates_change_nothing(
    params: dict[str, np.ndarray],
    samples: int,
    base: int,
    error: type[Exception],
    match: str,
    mode: str,
) -> None:
    agg = Aggregator(g(), 3, mode=mode, max_staleness=2)  # type: ignore[arg-type]
    agg.add("ok", g(1.0), 5, 3)
    before = snapshot(agg)
    with pytest.raises(error, match=match):
        agg.add("bad", params, samples, base)
    assert_unchanged(agg, before)


def test_fedbuff_applies_every_k_updates_with_stale_bases() -> None:
    agg = Aggregator(g(), mode="async", async_rule="fedbuff", async_params={"buffer_size": 2})
    assert agg.add("a", g(2.0), 5, 0) is None and agg.pending() == 1
    new = agg.add("b", g(4.0), 7, 0)
    assert new is not None and new.version == 1 and agg.pending() == 0
    assert (new.updates, new.samples) == (2, 12)  # the whole buffer, not the last update
    np.testing.assert_allclose(agg.params["W0"], 3.0)
    # based on version 0 while the model is at 1: its delta is taken against version 0
    assert agg.add("c", g(1.0), 5, 0) is None
    new = agg.add("d", g(3.0), 5, 1)
    assert new is not None
    w_stale, w_fresh = 1 / math.sqrt(2), 1.0
    expect = 3.0 + (w_stale * (1.0 - 0.0) + w_fresh * (3.0 - 3.0)) / 2  # FedBuff: mean over K
    np.testing.assert_allclose(agg.params["b0"], expect, rtol=1e-6)


def test_eddl_mix_halves_at_once() -> None:
    agg = Aggregator(g(), mode="async", async_rule="eddl-mix")
    new = agg.add("a", g(2.0), 5, 0)
    assert new is not None and new.how.startswith("eddl-mix")
    np.testing.assert_allclose(agg.params["W0"], 1.0)


def test_switches_close_the_round_and_flush_the_buffer() -> None:
    agg = Aggregator(g(), mode="sync", async_params={"buffer_size": 3})
    agg.add("a", g(2.0), 5, 0)
    produced = agg.switch("async")
    assert produced is not None and agg.mode == "async" and agg.version == 1
    agg.add("b", g(4.0), 5, 1)
    assert agg.pending() == 1
    produced = agg.switch("sync")
    assert produced is not None and agg.version == 2 and agg.pending() == 0
    assert (produced.updates, produced.samples) == (1, 5)
    np.testing.assert_allclose(agg.params["W0"], 4.0)
    assert agg.switch("sync") is None
    with pytest.raises(ValueError):
        agg.switch("both")  # type: ignore[arg-type]


def test_flush_empties_the_buffer_and_keeps_the_mode() -> None:
    agg = Aggregator(g(), mode="async", async_params={"buffer_size": 3})
    agg.add("a", g(2.0), 5, 0)
    agg.add("b", g(4.0), 7, 0)
    produced = agg.flush()
    assert produced is not None and (produced.updates, produced.samples) == (2, 12)
    assert agg.mode == "async" and agg.version == 1 and agg.pending() == 0
    assert agg.flush() is None  # nothing left
    sync = Aggregator(g(), mode="sync")
    sync.add("c", g(2.0), 5, 0)
    closed = sync.flush()
    assert closed is not None and sync.mode == "sync" and sync.version == 1


def test_integer_single_layer_round_averages_each_layer_over_its_group() -> None:
    base = {
        "W0": np.zeros((2, 2), np.int32),
        "b0": np.zeros(2, np.int32),
        "W1": np.zeros((2, 2), np.int32),
        "b1": np.zeros(2, np.int32),
    }
    agg = Aggregator(base, sync_rule="intmean", partial=True)
    agg.add("a", {"W0": np.full((2, 2), 3, np.int32), "b0": np.full(2, 3, np.int32)}, 5, 0)
    agg.add("b", {"W0": np.full((2, 2), 4, np.int32), "b0": np.full(2, 4, np.int32)}, 5, 0)
    agg.add("c", {"W1": np.full((2, 2), -7, np.int32), "b1": np.full(2, -7, np.int32)}, 5, 0)
    agg.close_round()
    assert agg.params["W0"].dtype == np.int32
    assert int(agg.params["W0"][0, 0]) == 3 and int(agg.params["W1"][0, 0]) == -7


def test_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        Aggregator(g(), sync_rule="median")
    with pytest.raises(ValueError, match="not a synchronous rule"):
        Aggregator(g(), sync_rule="fedasync")
    with pytest.raises(ValueError, match="takes no parameter"):
        Aggregator(g(), async_rule="fedasync", async_params={"buffer_size": 2})
