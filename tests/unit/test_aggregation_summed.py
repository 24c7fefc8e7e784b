"""Summed deltas up to a sample budget: FedAvg's and FedBuff's ``sum_samples``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.jobcheck import check_job
from eddl.jobspec import JobSpec, JobSpecError
from eddl.leader.aggregator import Aggregator
from eddl.leader.runtime import SUM_BATCHES, default_sync_params
from eddl.learn.aggregation import AggregationError, ClientUpdate, FedAvg, FedBuff, make_rule
from eddl.learn.aggregation.fedavg import summed_rate, weighted_float_mean
from eddl.learn.params import Params

MODEL = {"sizes": [64, 16, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}


def vec(*values: float, dtype: str = "float64") -> Params:
    return {"b0": np.array(values, dtype)}


def up(params: Params, samples: int, base: int = 0) -> ClientUpdate:
    return ClientUpdate(params, samples, base)


def test_small_rounds_sum_their_deltas() -> None:
    g = vec(0.0, 0.0)
    # Two tasks of 8 samples (16 <= budget 32): θ + Σ Δ_i = [1, 0] + [0, 2].
    out = FedAvg(sum_samples=32).aggregate(g, [up(vec(1.0, 0.0), 8), up(vec(0.0, 2.0), 8)], 0)
    np.testing.assert_allclose(out["b0"], [1.0, 2.0])


def test_past_the_budget_the_rate_falls_to_the_weighted_mean() -> None:
    g = vec(0.0)
    updates = [up(vec(4.0), 30), up(vec(0.0), 10)]  # weighted mean delta 3
    plain = FedAvg().aggregate(g, updates, 0)
    np.testing.assert_allclose(plain["b0"], [3.0])
    # 40 samples, budget 20: rate clamp(2 * 20 / 40, 1, 2) = 1, the weighted mean.
    np.testing.assert_allclose(FedAvg(sum_samples=20).aggregate(g, updates, 0)["b0"], [3.0])
    # budget 30: rate 1.5.
    np.testing.assert_allclose(FedAvg(sum_samples=30).aggregate(g, updates, 0)["b0"], [4.5])


@pytest.mark.parametrize(
    ("budget", "weights", "rate"),
    [(512, [128, 128, 128, 128], 4.0), (512, [1024, 1024], 1.0), (512, [512, 512], 1.0)],
)
def test_summed_rate(budget: int, weights: list[int], rate: float) -> None:
    assert summed_rate(budget, weights) == pytest.approx(rate)


def test_a_peer_declared_sample_count_cannot_push_the_rate_past_k() -> None:
    g = vec(0.0)
    out = FedAvg(sum_samples=1 << 20).aggregate(g, [up(vec(1.0), 1), up(vec(1.0), 1)], 0)
    np.testing.assert_allclose(out["b0"], [2.0])  # K = 2 at most, whatever the counts say


def test_integer_names_keep_the_exact_mean() -> None:
    g = vec(0, dtype="int32")
    out = FedAvg(sum_samples=64).aggregate(g, [up(vec(3, dtype="int32"), 1)] * 2, 0)
    assert out["b0"].dtype == np.int32 and out["b0"].tolist() == [3]


@pytest.mark.parametrize(
    "params",
    [
        {"sum_samples": -1},
        {"sum_samples": 1.5},
        {"sum_samples": (1 << 20) + 1},
        {"sum_samples": 64, "server_lr": 2.0},
        {"sum_samples": 64, "robust": "median"},
    ],
)
def test_bad_budgets_are_refused(params: dict[str, object]) -> None:
    with pytest.raises(AggregationError):
        make_rule("fedavg", **params)


def test_fedbuff_sums_its_buffer_up_to_the_budget() -> None:
    g = vec(0.0)
    bases = {0: g}
    rule = FedBuff(base_lookup=bases.get, buffer_size=2, sum_samples=64)
    assert rule.submit(g, up(vec(1.0), 16), 0) is None
    out = rule.submit(g, up(vec(2.0), 16), 0)
    assert out is not None
    np.testing.assert_allclose(out["b0"], [3.0])  # summed: 1 + 2 (fresh, S(0) = 1)
    plain = FedBuff(base_lookup=bases.get, buffer_size=2)
    plain.submit(g, up(vec(1.0), 16), 0)
    mean = plain.submit(g, up(vec(2.0), 16), 0)
    assert mean is not None
    np.testing.assert_allclose(mean["b0"], [1.5])
    with pytest.raises(AggregationError):
        FedBuff(base_lookup=bases.get, sum_samples=8, weight_by_samples=True)


def test_a_refused_update_leaves_the_summing_buffer_untouched() -> None:
    g = vec(0.0, 0.0)
    rule = FedBuff(base_lookup={0: g}.get, buffer_size=2, sum_samples=64)
    rule.submit(g, up(vec(1.0, 1.0), 8), 0)
    with pytest.raises(AggregationError):
        rule.submit(g, up(vec(1.0), 8), 0)  # wrong shape
    out = rule.submit(g, up(vec(1.0, 1.0), 8), 0)
    assert out is not None
    np.testing.assert_allclose(out["b0"], [2.0, 2.0])


def test_the_default_float_job_sums_and_its_async_buffer_follows() -> None:
    spec = JobSpec(job_id="j", rounds=2, dataset="digits", algorithm="sgd", model=MODEL)
    params = default_sync_params(spec, "fedavg", 32)
    assert params == {"sum_samples": SUM_BATCHES * 32}
    assert default_sync_params(spec, "intmean", 32) is None  # TIFeD keeps its integer mean
    given = JobSpec(
        job_id="j",
        rounds=2,
        dataset="digits",
        algorithm="sgd",
        model=MODEL,
        sync_params={"sum_samples": 0},
    )
    assert default_sync_params(given, "fedavg", 32) is None  # an explicit choice is kept
    agg = Aggregator(vec(0.0), sync_params=params, mode="async")
    assert agg.async_rule.describe()["sum_samples"] == SUM_BATCHES * 32
    own = Aggregator(vec(0.0), sync_params=params, async_params={"server_lr": 2.0})
    assert "sum_samples" not in own.async_rule.describe()


def test_a_job_may_set_the_budget_and_bad_ones_are_refused_at_submission() -> None:
    ok = JobSpec(
        job_id="j",
        rounds=2,
        dataset="digits",
        algorithm="sgd",
        model=MODEL,
        sync_params={"sum_samples": 256},
    )
    check_job(ok)
    bad = JobSpec(
        job_id="j",
        rounds=2,
        dataset="digits",
        algorithm="sgd",
        model=MODEL,
        sync_params={"sum_samples": -3},
    )
    with pytest.raises(JobSpecError):
        check_job(bad)


@given(
    st.lists(st.integers(1, 500), min_size=1, max_size=5),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_the_weighted_mean_has_the_bits_of_its_written_out_formula(
    weights: list[int], dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((7, 5)).astype(dtype) for _ in weights]
    ref = arrays[0].astype(np.float64)
    acc = np.zeros_like(ref)
    for arr, w in zip(arrays, weights, strict=True):
        acc += float(w) * (arr.astype(np.float64) - ref)
    written_out = ref + acc / float(sum(weights))
    got = weighted_float_mean(arrays, weights)
    assert got.dtype == np.float64 and got.tobytes() == written_out.tobytes()
