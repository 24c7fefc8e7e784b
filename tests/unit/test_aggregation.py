"""Aggregation rules: identities, weights, exact integer means, staleness, FedBuff's cadence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.learn.aggregation import (
    AggregationError,
    AsyncRule,
    ClientUpdate,
    Constant,
    EDDLMix,
    FedAsync,
    FedAvg,
    FedBuff,
    Hinge,
    IntMean,
    Polynomial,
    Staleness,
    SyncRule,
    make_rule,
)
from eddl.learn.params import Params

SHAPES = {"W0": (4, 3), "b0": (3,), "W1": (3, 2), "b1": (2,)}


def random_model(rng: np.random.Generator, dtype: str, scale: float = 100.0) -> Params:
    if np.dtype(dtype).kind == "f":
        return {n: (rng.standard_normal(s) * scale).astype(dtype) for n, s in SHAPES.items()}
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -int(scale)), min(info.max, int(scale))
    return {n: rng.integers(lo, hi + 1, size=s).astype(dtype) for n, s in SHAPES.items()}


def assert_same(a: Params, b: Params) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def no_lookup(version: int) -> None:
    return None


# --- every rule: averaging identical models changes nothing -------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float32", "float64", "int32", "int8"]),
    counts=st.lists(st.integers(1, 10_000), min_size=1, max_size=6),
)
@settings(max_examples=40, deadline=None)
def test_sync_rules_return_the_model_all_clients_agree_on(
    seed: int, dtype: str, counts: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    global_params = random_model(rng, dtype)
    agreed = random_model(rng, dtype)
    updates = [ClientUpdate({k: v.copy() for k, v in agreed.items()}, n, 3) for n in counts]
    rules: list[SyncRule] = [FedAvg()]
    if np.dtype(dtype).kind == "i":
        rules.append(IntMean())
    for rule in rules:
        assert_same(rule.aggregate(global_params, updates, 5), agreed)


@given(
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from(["float32", "float64", "int32", "int8"]),
    staleness=st.integers(0, 50),
    alpha=st.floats(0.01, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_async_rules_keep_the_model_when_updates_equal_their_base(
    seed: int, dtype: str, staleness: int, alpha: float
) -> None:
    rng = np.random.default_rng(seed)
    version = 60
    old = random_model(rng, dtype)
    current = random_model(rng, dtype)
    bases = {version - staleness: old if staleness else current}
    same_as_global = ClientUpdate({k: v.copy() for k, v in current.items()}, 7, version - staleness)
    for rule in (FedAsync(alpha=alpha, staleness=Hinge(a=2.0, b=3)), EDDLMix()):
        assert_same(rule.submit(current, same_as_global, version) or {}, current)
    # FedBuff works on deltas: clients that trained nothing send back their base model.
    fedbuff = FedBuff(base_lookup=bases.get, buffer_size=3)
    untrained = ClientUpdate(
        {k: v.copy() for k, v in bases[version - staleness].items()}, 7, version - staleness
    )
    assert fedbuff.submit(current, untrained, version) is None
    assert fedbuff.submit(current, untrained, version) is None
    assert_same(fedbuff.submit(current, untrained, version) or {}, current)


# --- FedAvg weights by samples ---------------------------------------------------------------


def test_fedavg_weights_by_samples_hand_computed() -> None:
    g = {"W0": np.zeros((1, 2), np.float32), "b0": np.zeros(2, np.float32)}
    a = ClientUpdate({"W0": np.array([[1.0, 2.0]], np.float32), "b0": np.ones(2, np.float32)}, 1, 0)
    b = ClientUpdate(
        {"W0": np.array([[5.0, -2.0]], np.float32), "b0": np.ones(2, np.float32)}, 3, 0
    )
    out = FedAvg().aggregate(g, [a, b], 0)
    # (1*1 + 3*5)/4 = 4, (1*2 + 3*-2)/4 = -1
    np.testing.assert_array_equal(out["W0"], np.array([[4.0, -1.0]], np.float32))
    np.testing.assert_array_equal(out["b0"], np.ones(2, np.float32))
    assert out["W0"].dtype == np.float32


@given(
    seed=st.integers(0, 2**32 - 1),
    counts=st.lists(st.integers(1, 100_000), min_size=1, max_size=8),
)
@settings(max_examples=40, deadline=None)
def test_fedavg_matches_weighted_mean_formula(seed: int, counts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    g32 = random_model(rng, "float32")
    models = [random_model(rng, "float32") for _ in counts]
    out = FedAvg().aggregate(
        g32, [ClientUpdate(m, n, 0) for m, n in zip(models, counts, strict=True)], 0
    )
    total = sum(counts)
    for name in SHAPES:
        expected = (
            np.asarray(
                sum(n * m[name].astype(np.float64) for m, n in zip(models, counts, strict=True))
            )
            / total
        )
        np.testing.assert_allclose(out[name], expected.astype(np.float32), rtol=1e-6, atol=1e-4)

    # Integers: the exact weighted mean truncated toward zero, checked with Python integers.
    gi = random_model(rng, "int32", scale=2**31 - 1)
    int_models = [random_model(rng, "int32", scale=2**31 - 1) for _ in counts]
    out_i = FedAvg().aggregate(
        gi, [ClientUpdate(m, n, 0) for m, n in zip(int_models, counts, strict=True)], 0
    )
    for name in SHAPES:
        flat = [m[name].ravel().tolist() for m in int_models]
        for j, got in enumerate(out_i[name].ravel().tolist()):
            s = sum(n * col[j] for n, col in zip(counts, flat, strict=True))
            assert got == (abs(s) // total) * (1 if s >= 0 else -1)


# --- the integer mean ------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    clients=st.integers(1, 9),
    scale=st.sampled_from([3, 1000, 2**20, 2**31 - 1]),
)
@settings(max_examples=60, deadline=None)
def test_intmean_truncates_like_numpy_mean_astype_int(seed: int, clients: int, scale: int) -> None:
    rng = np.random.default_rng(seed)
    g = random_model(rng, "int32", scale)
    models = [random_model(rng, "int32", scale) for _ in range(clients)]
    counts = rng.integers(1, 1000, size=clients).tolist()  # ignored: the mean is unweighted
    out = IntMean().aggregate(
        g, [ClientUpdate(m, n, 0) for m, n in zip(models, counts, strict=True)], 0
    )
    for name in SHAPES:
        stack = np.stack([m[name] for m in models])
        expected = np.mean(stack, axis=0).astype(int).astype(np.int32)
        np.testing.assert_array_equal(out[name], expected)
        assert out[name].dtype == np.int32


@given(
    values=st.lists(
        st.lists(st.integers(-(2**63), 2**63 - 1), min_size=3, max_size=3),
        min_size=1,
        max_size=7,
    )
)
@settings(max_examples=60, deadline=None)
def test_intmean_is_exact_for_int64_sums_float64_cannot_hold(values: list[list[int]]) -> None:
    g = {"b0": np.zeros(3, np.int64)}
    updates = [ClientUpdate({"b0": np.array(v, np.int64)}, 1, 0) for v in values]
    out = IntMean().aggregate(g, updates, 0)["b0"].tolist()
    n = len(values)
    for j in range(3):
        s = sum(v[j] for v in values)
        assert out[j] == (abs(s) // n) * (1 if s >= 0 else -1)


def test_intmean_exact_where_the_float_reference_is_not() -> None:
    big = 2**62 + 1  # float64 rounds this to 2**62, so a float mean loses the +1
    g = {"b0": np.zeros(1, np.int64)}
    ups = [ClientUpdate({"b0": np.array([v], np.int64)}, 1, 0) for v in (big, big, big + 2)]
    assert IntMean().aggregate(g, ups, 0)["b0"].tolist() == [big]  # (3*big + 2) // 3
    assert int(np.mean(np.stack([u.params["b0"] for u in ups]), axis=0).astype(int)[0]) != big


def test_intmean_single_layer_groups_average_their_own_layer() -> None:
    g = {
        "W0": np.full((2, 2), 9, np.int32),
        "b0": np.zeros(2, np.int32),
        "W1": np.ones((2, 1), np.int32),
    }
    group0 = [
        ClientUpdate({"W0": np.full((2, 2), 3, np.int32), "b0": np.array([1, -1], np.int32)}, 5, 0),
        ClientUpdate({"W0": np.full((2, 2), 4, np.int32), "b0": np.array([2, -2], np.int32)}, 5, 0),
    ]
    group1 = [ClientUpdate({"W1": np.full((2, 1), -7, np.int32)}, 5, 0)]
    out = IntMean().aggregate(g, group0 + group1, 0)
    np.testing.assert_array_equal(out["W0"], np.full((2, 2), 3, np.int32))  # 3.5 -> 3
    np.testing.assert_array_equal(out["b0"], np.array([1, -1], np.int32))  # -1.5 -> -1
    np.testing.assert_array_equal(out["W1"], np.full((2, 1), -7, np.int32))
    # A round in which only layer 1 was trained: layer 0 keeps its value, in a new array.
    out2 = IntMean().aggregate(g, group1, 0)
    np.testing.assert_array_equal(out2["W0"], g["W0"])
    assert not np.shares_memory(out2["W0"], g["W0"])


def test_intmean_refuses_float_models() -> None:
    g = {"b0": np.zeros(2, np.float32)}
    with pytest.raises(AggregationError, match="fedavg"):
        IntMean().aggregate(g, [ClientUpdate({"b0": np.ones(2, np.float32)}, 1, 0)], 0)


# --- staleness functions ---------------------------------------------------------------------

staleness_functions = st.one_of(
    st.just(Constant()),
    st.builds(Polynomial, a=st.floats(0.01, 10.0)),
    st.builds(Hinge, a=st.floats(0.01, 1000.0), b=st.integers(0, 20)),
)


@given(fn=staleness_functions, s1=st.integers(0, 10**6), s2=st.integers(0, 10**6))
@settings(max_examples=200, deadline=None)
def test_staleness_weights_fall_monotonically(fn: Staleness, s1: int, s2: int) -> None:
    lo, hi = min(s1, s2), max(s1, s2)
    assert fn(0) == 1.0
    assert 0.0 < fn(hi) <= fn(lo) <= 1.0


@given(a=st.floats(0.01, 10.0), s1=st.integers(0, 1000), gap=st.integers(1, 1000))
@settings(max_examples=100, deadline=None)
def test_polynomial_staleness_strictly_falls(a: float, s1: int, gap: int) -> None:
    assert Polynomial(a=a)(s1 + gap) < Polynomial(a=a)(s1)


def test_staleness_formulas_hand_computed() -> None:
    assert Polynomial(a=0.5)(3) == pytest.approx(0.5)  # 1/sqrt(4)
    assert Hinge(a=10.0, b=4)(4) == 1.0
    assert Hinge(a=10.0, b=4)(6) == pytest.approx(1 / 21)
    assert Constant()(10**9) == 1.0
    with pytest.raises(AggregationError):
        Polynomial()(-1)


# --- FedAsync and EDDL's mix -----------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    alpha=st.floats(0.01, 1.0),
    fn=staleness_functions,
    staleness=st.integers(0, 100),
)
@settings(max_examples=50, deadline=None)
def test_fedasync_mixes_by_staleness_scaled_alpha(
    seed: int, alpha: float, fn: Staleness, staleness: int
) -> None:
    rng = np.random.default_rng(seed)
    x, x_new = random_model(rng, "float64"), random_model(rng, "float64")
    rule = FedAsync(alpha=alpha, staleness=fn)
    out = rule.submit(x, ClientUpdate(x_new, 3, 100 - staleness), 100)
    a_s = alpha * fn(staleness)
    for name in SHAPES:
        # Two ways of writing the same mix differ by rounding: relative to the inputs' size, not
        # to the result's (a mix that cancels to near zero has no relative accuracy).
        scale = np.maximum(np.abs(x[name]), np.abs(x_new[name]))
        expected = (1 - a_s) * x[name] + a_s * x_new[name]
        assert np.all(np.abs(out[name] - expected) <= 1e-12 * scale)
    assert rule.pending() == 0
    assert rule.flush(x) is None


@given(seed=st.integers(0, 2**32 - 1), staleness=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_eddl_mix_is_the_truncating_mean_of_two_models(seed: int, staleness: int) -> None:
    rng = np.random.default_rng(seed)
    g, new = random_model(rng, "int32", 2**31 - 1), random_model(rng, "int32", 2**31 - 1)
    out = EDDLMix().submit(g, ClientUpdate(new, 1, 1000 - staleness), 1000)
    for name in SHAPES:
        expected = np.mean(np.stack([g[name], new[name]]), axis=0).astype(int).astype(np.int32)
        np.testing.assert_array_equal(out[name], expected)
    gf, newf = random_model(rng, "float32"), random_model(rng, "float32")
    outf = EDDLMix().submit(gf, ClientUpdate(newf, 1, 0), staleness)
    for name in SHAPES:
        np.testing.assert_array_equal(outf[name], ((gf[name] + newf[name]) / 2).astype(np.float32))


def test_fedasync_on_int_models_truncates_toward_zero() -> None:
    g = {"b0": np.array([0, 0, 10, -10], np.int32)}
    new = {"b0": np.array([5, -5, 0, 0], np.int32)}
    out = FedAsync(alpha=0.3, staleness=Constant()).submit(g, ClientUpdate(new, 1, 0), 0)
    # 1.5 -> 1, -1.5 -> -1, 7 -> 7, -7 -> -7
    np.testing.assert_array_equal(out["b0"], np.array([1, -1, 7, -7], np.int32))


# --- FedBuff -----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 5),
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 500)), min_size=1, max_size=14),
    server_lr=st.floats(0.1, 2.0),
    by_samples=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_fedbuff_emits_every_k_updates_and_follows_the_formula(
    seed: int, k: int, plan: list[tuple[int, int]], server_lr: float, by_samples: bool
) -> None:
    """Drive FedBuff like the leader does: each emission makes a new version."""
    rng = np.random.default_rng(seed)
    versions: dict[int, Params] = {0: random_model(rng, "float64")}
    version = 0
    rule = FedBuff(
        base_lookup=versions.get, buffer_size=k, server_lr=server_lr, weight_by_samples=by_samples
    )
    buffered: list[tuple[float, Params]] = []
    for i, (lag, samples) in enumerate(plan):
        base_version = max(0, version - lag)
        params = random_model(rng, "float64")
        out = rule.submit(versions[version], ClientUpdate(params, samples, base_version), version)
        s = version - base_version
        c = samples if by_samples else 1
        scaled = {n: (1 + s) ** -0.5 * (params[n] - versions[base_version][n]) for n in SHAPES}
        buffered.append((c, scaled))
        if (i + 1) % k:
            assert out is None
            assert rule.pending() == len(buffered)
            continue
        assert out is not None
        assert rule.pending() == 0
        # The paper's mean of staleness-scaled deltas: S(s) is not normalised away.
        total = sum(c for c, _ in buffered)
        for name in SHAPES:
            step = sum(c * d[name] for c, d in buffered) / total
            expected = versions[version][name] + server_lr * step
            np.testing.assert_allclose(out[name], expected, rtol=1e-10, atol=1e-10)
        buffered.clear()
        version += 1
        versions[version] = out


def test_fedbuff_flush_applies_a_partial_buffer() -> None:
    g = {"b0": np.zeros(2, np.float32)}
    rule = FedBuff(base_lookup=no_lookup, buffer_size=4)
    assert rule.flush(g) is None
    rule.submit(g, ClientUpdate({"b0": np.array([1.0, 2.0], np.float32)}, 1, 0), 0)
    rule.submit(g, ClientUpdate({"b0": np.array([3.0, 4.0], np.float32)}, 1, 0), 0)
    out = rule.flush(g)
    assert out is not None
    np.testing.assert_array_equal(out["b0"], np.array([2.0, 3.0], np.float32))
    assert rule.pending() == 0
    assert rule.flush(g) is None


def test_fedbuff_int_models_truncate_and_saturate() -> None:
    g = {"b0": np.array([100, -100, 3], np.int8)}
    rule = FedBuff(base_lookup=no_lookup, buffer_size=1, server_lr=10.0)
    up = ClientUpdate({"b0": np.array([110, -110, 3], np.int8)}, 1, 0)
    out = rule.submit(g, up, 0)
    assert out is not None
    np.testing.assert_array_equal(out["b0"], np.array([127, -128, 3], np.int8))
    rule = FedBuff(base_lookup=no_lookup, buffer_size=2, server_lr=1.0)
    rule.submit(g, ClientUpdate({"b0": np.array([101, -100, 3], np.int8)}, 1, 0), 0)
    out = rule.submit(g, ClientUpdate({"b0": np.array([100, -101, 4], np.int8)}, 1, 0), 0)
    assert out is not None  # +0.5, -0.5, +0.5 truncate toward zero
    np.testing.assert_array_equal(out["b0"], np.array([100, -100, 3], np.int8))


def test_fedbuff_float_overflow_is_refused_and_keeps_the_buffer() -> None:
    g = {"b0": np.array([3e38], np.float32)}
    rule = FedBuff(base_lookup=no_lookup, buffer_size=2, server_lr=1000.0)
    first = ClientUpdate({"b0": np.array([3.4e38], np.float32)}, 1, 0)
    assert rule.submit(g, first, 0) is None
    with pytest.raises(AggregationError, match="does not fit"):
        rule.submit(g, first, 0)
    assert rule.pending() == 1
    assert g["b0"][0] == np.float32(3e38)


def test_fedbuff_single_layer_updates_average_per_name() -> None:
    g = {"W0": np.zeros((1, 1), np.int32), "b0": np.zeros(1, np.int32)}
    rule = FedBuff(base_lookup=no_lookup, buffer_size=3, allow_partial=True)
    rule.submit(g, ClientUpdate({"W0": np.array([[8]], np.int32)}, 1, 0), 0)
    rule.submit(g, ClientUpdate({"W0": np.array([[4]], np.int32)}, 1, 0), 0)
    out = rule.submit(g, ClientUpdate({"b0": np.array([-5], np.int32)}, 1, 0), 0)
    assert out is not None
    assert out["W0"].tolist() == [[6]] and out["b0"].tolist() == [-5]


# --- what every rule promises ----------------------------------------------------------------


def every_rule() -> list[SyncRule | AsyncRule]:
    return [
        FedAvg(),
        IntMean(),
        FedAsync(),
        EDDLMix(),
        FedBuff(base_lookup=no_lookup, buffer_size=1),
    ]


@pytest.mark.parametrize("rule", every_rule(), ids=lambda r: r.name)
def test_rules_return_new_arrays_and_leave_inputs_alone(rule: SyncRule | AsyncRule) -> None:
    rng = np.random.default_rng(0)
    g = random_model(rng, "int32")
    new = random_model(rng, "int32")
    g_before = {k: v.copy() for k, v in g.items()}
    new_before = {k: v.copy() for k, v in new.items()}
    up = ClientUpdate(new, 2, 0)
    out = rule.aggregate(g, [up], 0) if isinstance(rule, SyncRule) else rule.submit(g, up, 0)
    assert out is not None
    assert_same(g, g_before)
    assert_same(new, new_before)
    for name in SHAPES:
        assert not np.shares_memory(out[name], g[name])
        assert not np.shares_memory(out[name], new[name])


@pytest.mark.parametrize("rule", every_rule(), ids=lambda r: r.name)
def test_describe_names_the_rule_and_rebuilds_it(rule: SyncRule | AsyncRule) -> None:
    desc = rule.describe()
    assert desc["name"] == rule.name
    params = {k: v for k, v in desc.items() if k != "name"}
    if rule.name == "fedbuff":
        params["base_lookup"] = no_lookup
    rebuilt = make_rule(rule.name, **params)
    assert type(rebuilt) is type(rule)
    assert rebuilt.describe() == desc


def test_fedbuff_update_whose_weight_underflows_changes_nothing() -> None:
    g = {"b0": np.array([1, -1], np.int32)}
    old = {"b0": np.array([0, 0], np.int32)}
    rule = FedBuff(base_lookup={0: old}.get, buffer_size=1, staleness=Polynomial(a=10.0))
    version = 10**40  # (1 + s)^-10 is below the smallest float64
    out = rule.submit(g, ClientUpdate({"b0": np.array([50, 50], np.int32)}, 1, 0), version)
    assert out is not None
    np.testing.assert_array_equal(out["b0"], g["b0"])
