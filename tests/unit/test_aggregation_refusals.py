"""Bad updates are refused with AggregationError and change nothing: global model or buffer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.learn.aggregation import (
    AggregationError,
    AsyncRule,
    ClientUpdate,
    EDDLMix,
    FedAsync,
    FedAvg,
    FedBuff,
    IntMean,
    SyncRule,
)
from eddl.learn.params import Params, ParamsError

VERSION = 10
SHAPES = {"W0": (3, 2), "b0": (2,), "W1": (2, 2), "b1": (2,)}


def model(rng: np.random.Generator, dtype: str) -> Params:
    if np.dtype(dtype).kind == "f":
        return {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    return {n: rng.integers(-50, 50, size=s).astype(dtype) for n, s in SHAPES.items()}


def copy(p: Params) -> Params:
    return {k: v.copy() for k, v in p.items()}


def assert_same(a: Params, b: Params) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


def forced(params: Params, num_samples: int, base_version: int) -> ClientUpdate:
    """An update that skipped ClientUpdate's own checks (frozen dataclasses can be forced)."""
    up = ClientUpdate(params, 1, 0)
    object.__setattr__(up, "num_samples", num_samples)
    object.__setattr__(up, "base_version", base_version)
    return up


def corrupt(kind: str, good: Params) -> ClientUpdate:
    p = copy(good)
    float_model = good["W0"].dtype.kind == "f"
    if kind == "nan":
        if not float_model:
            p["W0"] = p["W0"].astype(np.float32)  # an int model cannot hold NaN: wrong dtype
        p["W0"][0, 0] = np.nan
    elif kind == "inf":
        if not float_model:
            p["b1"] = p["b1"].astype(np.float64)
        p["b1"][-1] = -np.inf
    elif kind == "unknown-name":
        p["W9"] = np.zeros((2, 2), good["W0"].dtype)
    elif kind == "missing-name":
        del p["b1"]
    elif kind == "wrong-shape":
        p["W1"] = np.zeros((2, 3), good["W1"].dtype)
    elif kind == "wrong-dtype":
        p["b0"] = p["b0"].astype(np.float16 if not float_model else np.int32)
    elif kind == "not-an-array":
        p["b0"] = p["b0"].tolist()
    elif kind == "zero-samples":
        return forced(p, 0, VERSION)
    elif kind == "negative-staleness":
        return ClientUpdate(p, 5, VERSION + 1)
    elif kind == "unknown-base":
        return ClientUpdate(p, 5, VERSION - 3)  # FedBuff's lookup knows only VERSION - 1
    else:
        raise AssertionError(kind)
    return ClientUpdate(p, 5, VERSION)


KINDS = [
    "nan",
    "inf",
    "unknown-name",
    "missing-name",
    "wrong-shape",
    "wrong-dtype",
    "not-an-array",
    "zero-samples",
    "negative-staleness",
]

RULES: dict[str, Callable[[dict[int, Params]], SyncRule | AsyncRule]] = {
    "fedavg": lambda versions: FedAvg(),
    "intmean": lambda versions: IntMean(allow_partial=False),
    "fedasync": lambda versions: FedAsync(alpha=0.7),
    "eddl-mix": lambda versions: EDDLMix(),
    "fedbuff": lambda versions: FedBuff(base_lookup=versions.get, buffer_size=3),
}


@given(
    seed=st.integers(0, 2**32 - 1),
    rule_name=st.sampled_from(sorted(RULES)),
    kind=st.sampled_from([*KINDS, "unknown-base"]),
    dtype=st.sampled_from(["float32", "int32"]),
    position=st.integers(0, 2),
)
@settings(max_examples=150, deadline=None)
def test_bad_update_is_refused_and_changes_nothing(
    seed: int, rule_name: str, kind: str, dtype: str, position: int
) -> None:
    if rule_name == "intmean" and dtype == "float32":
        dtype = "int32"
    rng = np.random.default_rng(seed)
    versions = {VERSION - 1: model(rng, dtype)}
    g = model(rng, dtype)
    g_before = copy(g)
    goods = [ClientUpdate(model(rng, dtype), 4, VERSION - 1) for _ in range(3)]
    bad = corrupt(kind, model(rng, dtype))
    rule, twin = RULES[rule_name](versions), RULES[rule_name](versions)

    if isinstance(rule, SyncRule):
        assert isinstance(twin, SyncRule)
        if kind == "unknown-base":
            return  # sync rules need no base model
        round_ = list(goods)
        round_.insert(position, bad)  # one bad update anywhere refuses the whole round
        with pytest.raises(AggregationError):
            rule.aggregate(g, round_, VERSION)
        assert_same(g, g_before)
        assert_same(rule.aggregate(g, goods, VERSION), twin.aggregate(g, goods, VERSION))
        return

    assert isinstance(rule, AsyncRule) and isinstance(twin, AsyncRule)
    if kind == "unknown-base" and rule_name != "fedbuff":
        return  # FedAsync needs no base model
    # Buffer some good updates, have the bad one refused, and continue: the refused update
    # must leave no trace, so the rule behaves exactly like a twin that never saw it.
    outs, twin_outs = [], []
    for i, good in enumerate(goods):
        if i == position:
            pending = rule.pending()
            with pytest.raises(AggregationError):
                rule.submit(g, bad, VERSION)
            assert rule.pending() == pending
            assert_same(g, g_before)
        outs.append(rule.submit(g, good, VERSION))
        twin_outs.append(twin.submit(g, good, VERSION))
    for out, twin_out in zip(outs, twin_outs, strict=True):
        assert (out is None) == (twin_out is None)
        if out is not None and twin_out is not None:
            assert_same(out, twin_out)
    assert rule.pending() == twin.pending()
    assert_same(g, g_before)


def test_error_is_a_params_error_and_a_value_error() -> None:
    assert issubclass(AggregationError, ParamsError)
    assert issubclass(AggregationError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0}, "num_samples must be > 0"),
        ({"num_samples": -3}, "num_samples must be > 0"),
        ({"num_samples": True}, "num_samples must be an int"),
        ({"num_samples": 2.0}, "num_samples must be an int"),
        ({"base_version": -1}, "base_version must be >= 0"),
        ({"base_version": "3"}, "base_version must be an int"),
        ({"params": [("b0", np.zeros(2))]}, "mapping"),
    ],
)
def test_client_update_refuses_bad_fields(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"params": {"b0": np.zeros(2)}, "num_samples": 1, "base_version": 0}
    fields.update(kwargs)
    with pytest.raises(AggregationError, match=message):
        ClientUpdate(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", [FedAvg(), IntMean()], ids=lambda r: r.name)
def test_sync_rules_refuse_empty_rounds_and_bad_versions(rule: SyncRule) -> None:
    g = {"b0": np.zeros(2, np.int32)}
    up = ClientUpdate({"b0": np.ones(2, np.int32)}, 1, 0)
    with pytest.raises(AggregationError, match="at least one"):
        rule.aggregate(g, [], 0)
    with pytest.raises(AggregationError, match="sequence"):
        rule.aggregate(g, up, 0)  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="version"):
        rule.aggregate(g, [up], -1)
    with pytest.raises(AggregationError, match="version"):
        rule.aggregate(g, [up], 1.5)  # type: ignore[arg-type]
    with pytest.raises(AggregationError, match="non-empty"):
        rule.aggregate({}, [up], 0)
    with pytest.raises(AggregationError, match="dtype"):
        rule.aggregate({"b0": np.zeros(2, np.bool_)}, [up], 0)


def test_partial_updates_are_refused_unless_the_rule_allows_them() -> None:
    g = {"W0": np.zeros((1, 2), np.int32), "b0": np.zeros(2, np.int32)}
    only_w = ClientUpdate({"W0": np.ones((1, 2), np.int32)}, 1, 0)
    with pytest.raises(AggregationError, match="missing"):
        FedAvg().aggregate(g, [only_w], 0)
    assert FedAvg(allow_partial=True).aggregate(g, [only_w], 0)["W0"].tolist() == [[1, 1]]
    with pytest.raises(AggregationError, match="holds no parameters"):
        IntMean().aggregate(g, [ClientUpdate({}, 1, 0)], 0)


def test_fedbuff_refuses_unknown_or_malformed_base_models() -> None:
    g = {"b0": np.zeros(2, np.float32)}

    def raising_lookup(version: int) -> Params:
        raise KeyError(version)

    def wrong_lookup(version: int) -> Params:
        return {"b0": np.zeros(3, np.float32)}

    up = ClientUpdate({"b0": np.ones(2, np.float32)}, 1, 4)
    for lookup, message in [
        (raising_lookup, "version 4 is not available"),
        (lambda v: None, "version 4 is not available"),
        (wrong_lookup, "base model version 4: b0 has shape"),
    ]:
        rule = FedBuff(base_lookup=lookup, buffer_size=2)
        with pytest.raises(AggregationError, match=message):
            rule.submit(g, up, 5)
        assert rule.pending() == 0


def test_fedbuff_flush_refuses_a_model_of_another_shape() -> None:
    g = {"b0": np.zeros(2, np.float32)}
    rule = FedBuff(base_lookup=lambda v: None, buffer_size=2)
    rule.submit(g, ClientUpdate({"b0": np.ones(2, np.float32)}, 1, 0), 0)
    with pytest.raises(AggregationError, match="shape"):
        rule.flush({"b0": np.zeros(3, np.float32)})
    with pytest.raises(AggregationError, match="not in the global model"):
        rule.flush({"W0": np.zeros(2, np.float32)})
    assert rule.pending() == 1
