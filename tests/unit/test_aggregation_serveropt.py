"""Server optimizers on FedAvg's mean delta, the async delta rule, and their checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eddl.jobcheck import check_job
from eddl.jobspec import JobSpec, JobSpecError
from eddl.leader.aggregator import Aggregator
from eddl.learn.aggregation import (
    AggregationError,
    AsyncDelta,
    ClientUpdate,
    Constant,
    FedAdam,
    FedAvg,
    FedBuff,
    FedYogi,
    RuleState,
    ServerSGD,
    make_rule,
)
from eddl.learn.params import Params
from eddl.simulate import FederatedConfig, run_federated


def vec(*values: float, dtype: str = "float64") -> Params:
    return {"b0": np.array(values, dtype)}


def up(params: Params, samples: int = 1, base: int = 0) -> ClientUpdate:
    return ClientUpdate(params, samples, base)


def test_server_lr_scales_the_sample_weighted_mean_delta() -> None:
    g = vec(1.0, 2.0)
    # Δ = (1·[2, 0] + 3·[0, 4]) / 4 = [0.5, 3];  θ + 2Δ = [2, 8]
    out = FedAvg(server=ServerSGD(lr=2.0)).aggregate(
        g, [up(vec(3.0, 2.0), 1), up(vec(1.0, 6.0), 3)], 0
    )
    np.testing.assert_array_equal(out["b0"], [2.0, 8.0])


def test_fedavgm_without_momentum_and_unit_rate_equals_fedavg() -> None:
    rng = np.random.default_rng(3)
    g = {"W0": rng.standard_normal((5, 4)).astype(np.float32), "b0": np.zeros(4, np.float32)}
    ups = [
        up({k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in g.items()}, n)
        for n in (3, 8, 1)
    ]
    plain = FedAvg().aggregate(g, ups, 0)
    rule = make_rule("fedavg", server_opt="sgd", server_lr=1.0, server_momentum=0.0)
    for _ in range(2):  # no state: the second round gives the same answer
        via = rule.aggregate(g, ups, 0)
        for name in g:
            assert via[name].dtype == np.float32
            np.testing.assert_allclose(via[name], plain[name], rtol=1e-6, atol=1e-6)
    assert not rule.state().arrays  # nothing to keep without momentum


def test_fedavgm_accumulates_momentum() -> None:
    rule = FedAvg(server=ServerSGD(lr=1.0, momentum=0.5))
    g1 = rule.aggregate(vec(0.0), [up(vec(1.0))], 0)  # m = 1
    assert g1["b0"].tolist() == [1.0]
    g2 = rule.aggregate(g1, [up(vec(2.0))], 1)  # Δ = 1, m = 0.5 + 1
    assert g2["b0"].tolist() == [2.5]
    assert rule.state().steps == 2
    assert rule.state().arrays["m/b0"].tolist() == [1.5]


def test_fedadam_moments_after_two_steps() -> None:
    rule = FedAvg(server=FedAdam(lr=0.1, beta1=0.9, beta2=0.99, tau=0.1))
    g1 = rule.aggregate(vec(0.0), [up(vec(1.0))], 0)  # Δ1 = 1
    m1, v1 = 0.1, 0.99 * 0.01 + 0.01 * 1.0  # v starts at τ²
    assert g1["b0"][0] == pytest.approx(0.1 * m1 / (math.sqrt(v1) + 0.1), rel=1e-12)
    g2 = rule.aggregate(g1, [up({"b0": g1["b0"] - 2.0})], 1)  # Δ2 = -2
    m2, v2 = 0.9 * m1 + 0.1 * -2.0, 0.99 * v1 + 0.01 * 4.0
    state = rule.state()
    assert state.steps == 2
    assert state.arrays["m/b0"][0] == pytest.approx(m2, rel=1e-12)  # -0.11
    assert state.arrays["v/b0"][0] == pytest.approx(v2, rel=1e-12)  # 0.059701
    expected = g1["b0"][0] + 0.1 * m2 / (math.sqrt(v2) + 0.1)
    assert g2["b0"][0] == pytest.approx(expected, rel=1e-12)


def test_fedyogi_moves_v_by_the_sign_of_v_minus_delta_squared() -> None:
    rule = FedAvg(server=FedYogi(lr=0.1, beta1=0.9, beta2=0.99, tau=0.1))
    g1 = rule.aggregate(vec(0.0), [up(vec(1.0))], 0)
    # Δ² = 1 > v = 0.01: v grows by (1 - β2) Δ² = 0.01
    assert rule.state().arrays["v/b0"][0] == pytest.approx(0.02, rel=1e-12)
    rule.aggregate(g1, [up({"b0": g1["b0"] + 0.05})], 1)
    # Δ² = 0.0025 < v = 0.02: v shrinks by (1 - β2) Δ² (Adam would give 0.99·0.02 + 0.01·Δ²)
    assert rule.state().arrays["v/b0"][0] == pytest.approx(0.02 - 0.01 * 0.0025, rel=1e-12)


@pytest.mark.parametrize("opt", ["sgd", "adam", "yogi"])
def test_state_round_trip_gives_identical_next_steps(opt: str) -> None:
    params: dict[str, object] = {"server_opt": opt}
    if opt == "sgd":
        params["server_momentum"] = 0.9
    rng = np.random.default_rng(1)
    g = {"W0": rng.standard_normal((3, 2)).astype(np.float32), "b0": np.zeros(2, np.float32)}
    first = make_rule("fedavg", **params)
    for v in range(3):
        noisy = {k: (a + rng.standard_normal(a.shape)).astype(np.float32) for k, a in g.items()}
        g = first.aggregate(g, [up(noisy, 2, v)], v)
    saved = json.loads(json.dumps(first.state().to_dict()))  # as a checkpoint holds it
    second = make_rule("fedavg", **params)
    second.load_state(RuleState.from_dict(saved))
    nxt = [up({k: a + 0.5 for k, a in g.items()}, 4, 3)]
    a, b = first.aggregate(g, nxt, 3), second.aggregate(g, nxt, 3)
    for name in g:
        np.testing.assert_array_equal(a[name], b[name])
    assert first.state().steps == second.state().steps == 4


def test_refused_steps_change_nothing() -> None:
    rule = FedAvg(server=FedAdam(lr=0.1))
    g = vec(0.0, 0.0, dtype="float32")
    rule.aggregate(g, [up(vec(1.0, 1.0, dtype="float32"))], 0)
    before = rule.state()
    with pytest.raises(AggregationError, match="NaN"):
        rule.aggregate(g, [up(vec(float("nan"), 1.0, dtype="float32"))], 0)
    with pytest.raises(AggregationError, match="Inf"):
        rule.aggregate(g, [up(vec(float("inf"), 1.0, dtype="float32"))], 0)
    # A step whose result overflows float32 is refused and the moments stay as they were.
    huge = FedAvg(server=ServerSGD(lr=1000.0, momentum=0.5))
    big = vec(3e38, dtype="float32")
    with pytest.raises(AggregationError, match="does not fit"):
        huge.aggregate(big, [up(vec(3.4e38, dtype="float32"))], 0)
    assert huge.state().empty
    after = rule.state()
    assert after.steps == before.steps
    for key in before.arrays:
        np.testing.assert_array_equal(after.arrays[key], before.arrays[key])


def test_bad_states_are_refused() -> None:
    rule = FedAvg(server=FedAdam())
    with pytest.raises(AggregationError, match="not one of its moments"):
        rule.load_state(RuleState(1, {"q/b0": np.zeros(2)}))
    rule.load_state(RuleState(1, {"m/b0": np.zeros(3), "v/b0": np.ones(3)}))
    with pytest.raises(AggregationError, match="shape"):
        rule.aggregate(vec(0.0, 0.0), [up(vec(1.0, 1.0))], 0)
    with pytest.raises(AggregationError, match="keeps no state"):
        FedAvg().load_state(RuleState(1, {"m/b0": np.zeros(2)}))
    with pytest.raises(AggregationError, match="NaN or Inf"):
        RuleState(0, {"m/b0": np.array([np.nan])})
    good = RuleState(2, {"m/b0": np.arange(3.0)}).to_dict()
    good["arrays"]["m/b0"]["shape"] = [4]
    with pytest.raises(AggregationError, match="needs 32"):
        RuleState.from_dict(good)
    with pytest.raises(AggregationError, match="steps and arrays"):
        RuleState.from_dict({"steps": 1})


def test_integer_models_keep_the_exact_integer_mean() -> None:
    with pytest.raises(AggregationError, match="exact integer mean"):
        make_rule("intmean", server_lr=2.0)
    g = vec(1, 2, dtype="int32")
    with pytest.raises(AggregationError, match="apply to float models"):
        FedAvg(server=ServerSGD(lr=2.0)).aggregate(g, [up(vec(3, 4, dtype="int32"))], 0)
    spec = JobSpec(job_id="t", algorithm="tifed", rounds=1, sync_params={"server_lr": 2.0})
    with pytest.raises(JobSpecError, match=r"job.sync_params: tifed .* exact integer mean"):
        check_job(spec)
    spec = JobSpec(job_id="t", algorithm="tifed", rounds=1, async_params={"server_lr": 2.0})
    with pytest.raises(JobSpecError, match=r"job.async_params.server_lr: tifed"):
        check_job(spec)
    with pytest.raises(AggregationError, match="exact integer mean"):
        run_federated(FederatedConfig(algo="tifed", rounds=1, sync_params={"server_opt": "adam"}))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"server_opt": "rmsprop"}, "unknown server_opt 'rmsprop'"),
        ({"server_opt": "adam", "server_momentum": 0.9}, "takes no"),
        ({"server_beta1": 0.9}, "takes no"),
        ({"server_momentum": 1.0}, "server_momentum must be in"),
        ({"server_lr": 0.0}, "server_lr must be in"),
        ({"server_lr": 1e9}, "server_lr must be in"),
        ({"server_opt": "yogi", "server_tau": 0.0}, "server_tau must be in"),
        ({"server_opt": "adam", "server_beta2": 1.0}, "server_beta2 must be in"),
        ({"server_lr": "2"}, "server_lr must be a number"),
        ({"allow_partial": True}, "unknown key"),
    ],
)
def test_job_validation_bounds_server_options(params: dict[str, object], message: str) -> None:
    spec = JobSpec(job_id="t", algorithm="sgd", rounds=1, sync_params=params)
    with pytest.raises(JobSpecError, match=f"job.sync_params: .*{message}"):
        check_job(spec)


def test_a_job_file_table_reaches_the_leader_rule() -> None:
    spec = JobSpec.from_mapping(
        {"rounds": 1, "sync_params": {"server_opt": "adam", "server_lr": 0.02}}
    )
    checked = check_job(spec)
    assert JobSpec.from_mapping(spec.to_dict()).sync_params == spec.sync_params
    agg = Aggregator(checked.initial_params, sync_params=spec.sync_params)
    assert agg.describe()["rule"]["server_opt"] == "adam"
    assert agg.describe()["rule"]["server_lr"] == 0.02
    plain = Aggregator(vec(0.0), sync_params={"server_lr": 2.0})
    plain.add("a", vec(1.0), 1, 0)
    produced = plain.close_round()
    assert produced is not None and produced.params["b0"].tolist() == [2.0]


def test_async_delta_applies_the_staleness_weighted_delta_to_the_current_model() -> None:
    versions = {0: vec(0.0), 2: vec(1.0)}
    rule = make_rule("async-delta", base_lookup=versions.get, server_lr=0.5)
    assert isinstance(rule, AsyncDelta)
    out = rule.submit(versions[2], up(vec(4.0), base=0), 2)  # s = 2, S = 1/sqrt(3)
    assert out is not None and rule.pending() == 0
    assert out["b0"][0] == pytest.approx(1.0 + 0.5 * 4.0 / math.sqrt(3), rel=1e-12)
    rebuilt = make_rule(**rule.describe(), base_lookup=versions.get)
    assert rebuilt.describe() == rule.describe()
    agg = Aggregator(vec(0.0), mode="async", async_rule="async-delta")
    agg.add("a", vec(2.0), 1, 0)
    new = agg.add("b", vec(3.0), 1, 0)  # delta 3 against version 0, staleness 1
    assert new is not None
    assert new.params["b0"][0] == pytest.approx(2.0 + 3.0 / math.sqrt(2), rel=1e-12)


def test_fedbuff_divides_staleness_scaled_deltas_by_k_as_in_the_paper() -> None:
    base = vec(0.0)
    rule = FedBuff(base_lookup={0: base}.get, buffer_size=2, server_lr=2.0)
    current = vec(10.0)
    assert rule.submit(current, up(vec(2.0), base=0), 3) is None  # S(3) = 1/2
    out = rule.submit(current, up(vec(4.0), base=0), 3)
    assert out is not None  # 10 + 2 · (1 + 2) / 2
    assert out["b0"].tolist() == [13.0]
    plain = FedBuff(base_lookup={0: base}.get, buffer_size=1, staleness=Constant())
    out = plain.submit(current, up(vec(4.0), base=0), 3)
    assert out is not None and out["b0"].tolist() == [14.0]


def test_simulation_takes_server_options_and_stops_at_the_target() -> None:
    cfg = FederatedConfig(
        algo="sgd",
        dataset="digits",
        clients=2,
        rounds=30,
        buffer=64,
        hyper={"lr": 0.05, "batch_size": 16},
        sync_params={"server_opt": "sgd", "server_lr": 1.5, "server_momentum": 0.3},
        target_accuracy=0.5,
    )
    result = run_federated(cfg)
    assert result.aggregation["server_momentum"] == 0.3
    assert result.samples_to_target is not None
    assert result.history[-1].accuracy >= 0.5
    assert result.samples_to_target == result.history[-1].samples
    assert len(result.history) < 30
