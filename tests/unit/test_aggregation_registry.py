"""make_rule: names, parameters from config files, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

import eddl.learn.aggregation as aggregation
from eddl.learn.aggregation import (
    RULE_NAMES,
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
    SyncRule,
    make_rule,
    make_staleness,
)
from eddl.learn.params import Params


def lookup(version: int) -> Params | None:
    return None


def test_public_surface_is_explicit() -> None:
    assert set(aggregation.__all__) == {n for n in dir(aggregation) if not n.startswith("_")} - {
        "adaptive",
        "base",
        "checks",
        "fedasync",
        "fedavg",
        "fedbuff",
        "folds",
        "intmean",
        "registry",
        "reptile",
        "robust",
        "serveropt",
        "staleness",
        "state",
    }


def test_every_named_rule_is_built_with_its_defaults() -> None:
    assert RULE_NAMES == (
        "fedavg",
        "intmean",
        "reptile",
        "fedasync",
        "fedbuff",
        "eddl-mix",
        "async-delta",
        "fedasync-folds",
    )
    built = {
        name: make_rule(name, base_lookup=lookup)
        if name in ("fedbuff", "async-delta", "fedasync-folds")
        else make_rule(name)
        for name in RULE_NAMES
    }
    assert isinstance(built["fedavg"], FedAvg) and isinstance(built["fedavg"], SyncRule)
    assert isinstance(built["intmean"], IntMean) and built["intmean"].describe()["allow_partial"]
    assert isinstance(built["fedasync"], FedAsync) and isinstance(built["fedasync"], AsyncRule)
    assert built["fedasync"].describe() == {
        "name": "fedasync",
        "alpha": 0.6,
        "staleness": "polynomial",
        "staleness_a": 0.5,
        "allow_partial": False,
    }
    assert built["fedasync-folds"].describe() == {
        "name": "fedasync-folds",
        "alpha": 0.6,
        "staleness": "polynomial",
        "staleness_a": 0.5,
        "allow_partial": False,
        "max_gain": 4.0,
    }
    assert isinstance(built["eddl-mix"], EDDLMix)
    assert built["eddl-mix"].describe() == {
        "name": "eddl-mix",
        "alpha": 0.5,
        "staleness": "constant",
        "allow_partial": False,
    }
    assert built["fedbuff"].describe() == {
        "name": "fedbuff",
        "buffer_size": 10,
        "server_lr": 1.0,
        "staleness": "polynomial",
        "staleness_a": 0.5,
        "weight_by_samples": False,
        "allow_partial": False,
    }
    assert {r.mode for r in built.values()} == {"sync", "async"}


def test_parameters_from_a_config_table_reach_the_rule() -> None:
    rule = make_rule("fedasync", alpha=0.9, staleness="hinge", staleness_a=5, staleness_b=2)
    assert isinstance(rule, FedAsync)
    assert rule.alpha == 0.9
    assert rule.staleness == Hinge(a=5, b=2)
    assert rule.mixing_weight(3) == pytest.approx(0.9 / 6)
    buff = make_rule(
        "fedbuff",
        base_lookup=lookup,
        buffer_size=3,
        server_lr=0.5,
        staleness="constant",
        weight_by_samples=True,
    )
    assert isinstance(buff, FedBuff)
    assert (buff.buffer_size, buff.server_lr, buff.staleness) == (3, 0.5, Constant())
    poly = make_rule("fedbuff", base_lookup=lookup, staleness_a=2.0)
    assert isinstance(poly, FedBuff) and poly.staleness == Polynomial(a=2.0)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedprox", {}, "unknown aggregation rule 'fedprox'; known: fedavg"),
        ("fedavg", {"alpha": 0.5}, "takes no parameter"),
        ("intmean", {"weights": [1, 2]}, "takes no parameter"),
        ("fedavg", {"allow_partial": "yes"}, "allow_partial must be true or false"),
        ("fedasync", {"alpha": 0.0}, r"alpha must be in \(0.0, 1.0\]"),
        ("fedasync", {"alpha": 1.5}, "alpha must be in"),
        ("fedasync", {"alpha": float("nan")}, "alpha must be finite"),
        ("fedasync", {"alpha": "0.5"}, "alpha must be a number"),
        ("fedasync", {"alpha": True}, "alpha must be a number"),
        ("fedasync", {"staleness": "exponential"}, "unknown staleness function 'exponential'"),
        ("fedasync", {"staleness": "constant", "staleness_a": 1.0}, "constant staleness takes no"),
        ("fedasync", {"staleness_b": 3}, "polynomial staleness takes no staleness_b"),
        ("fedasync", {"staleness": "polynomial", "staleness_a": -1.0}, "polynomial staleness a"),
        ("fedasync", {"staleness_a": 11.0}, r"polynomial staleness a must be in \(0.0, 10.0\]"),
        ("fedasync", {"staleness": "hinge", "staleness_a": 0}, "hinge staleness a must be in"),
        ("fedasync", {"staleness": "hinge", "staleness_b": -1}, "hinge staleness b must be >= 0"),
        (
            "fedasync",
            {"staleness": "hinge", "staleness_b": 1.5},
            "hinge staleness b must be an int",
        ),
        ("fedasync", {"buffer_size": 3}, "takes no parameter"),
        ("fedbuff", {}, "fedbuff needs base_lookup"),
        ("fedbuff", {"base_lookup": {1: None}}, "fedbuff needs base_lookup"),
        ("fedbuff", {"base_lookup": lookup, "buffer_size": 0}, "buffer_size must be >= 1"),
        ("fedbuff", {"base_lookup": lookup, "buffer_size": True}, "buffer_size must be an int"),
        ("fedbuff", {"base_lookup": lookup, "server_lr": -1.0}, "server_lr must be in"),
        ("fedbuff", {"base_lookup": lookup, "weight_by_samples": 1}, "weight_by_samples must be"),
        ("eddl-mix", {"alpha": 0.3}, "eddl-mix has alpha fixed to 0.5"),
        ("eddl-mix", {"staleness": "hinge"}, "eddl-mix has staleness fixed"),
        ("eddl-mix", {"staleness_a": 1.0}, "takes no parameter"),
    ],
)
def test_bad_names_and_parameters_are_refused(
    name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(AggregationError, match=message):
        make_rule(name, **params)


def test_rules_refuse_wrong_staleness_objects() -> None:
    with pytest.raises(AggregationError, match="staleness"):
        make_rule("fedasync", staleness=Constant())  # objects go to the class, names to make_rule
    with pytest.raises(TypeError):
        FedAsync(staleness="hinge")  # type: ignore[arg-type]


def test_make_staleness_defaults() -> None:
    assert make_staleness("polynomial") == Polynomial(a=0.5)
    assert make_staleness("hinge") == Hinge(a=10.0, b=4)
    assert make_staleness("hinge", b=0)(1) == pytest.approx(1 / 11)


def test_eddl_mix_is_fedasync_with_half_and_constant_staleness() -> None:
    mix = make_rule("eddl-mix", alpha=0.5, staleness="constant")
    assert isinstance(mix, FedAsync)
    assert [mix.mixing_weight(s) for s in (0, 1, 100)] == [0.5, 0.5, 0.5]
    g = {"b0": np.array([0.0, 4.0], np.float32)}
    out = mix.submit(g, ClientUpdate({"b0": np.array([2.0, 0.0], np.float32)}, 1, 0), 9)
    assert out is not None and out["b0"].tolist() == [1.0, 2.0]
