"""fedasync-folds: a group update counts its own step sqrt(m) times (at most max_gain); a
device's own update is FedAsync's exactly; declared folds and the rule's settings are bounded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eddl.learn.aggregation import (
    MAX_FOLDS,
    AggregationError,
    ClientUpdate,
    FedAsync,
    FoldedFedAsync,
    make_rule,
)
from eddl.learn.params import Params


def model(value: float) -> Params:
    return {"W0": np.full((2, 3), value, np.float32), "b0": np.full(3, value, np.float32)}


BASES = {0: model(0.0), 1: model(0.5)}


def rule(**kwargs: object) -> FoldedFedAsync:
    built = make_rule("fedasync-folds", base_lookup=BASES.get, **kwargs)
    assert isinstance(built, FoldedFedAsync)
    return built


def expected(x: float, x_in: float, x_b: float, s: int, g: float, alpha: float = 0.6) -> float:
    a = alpha / math.sqrt(1 + s)
    return x + a * (x_in - x) + a * (g - 1) * (x_in - x_b)


def test_a_devices_own_update_is_fedasync_exactly() -> None:
    update = ClientUpdate(model(2.0), num_samples=100, base_version=0)
    got = rule().submit(model(0.5), update, 1)
    want = FedAsync().submit(model(0.5), update, 1)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


@pytest.mark.parametrize(("folds", "gain"), [(4, 2.0), (16, 4.0), (64, 4.0), (MAX_FOLDS, 4.0)])
def test_a_group_update_takes_its_own_step_sqrt_m_times_at_most_max_gain(
    folds: int, gain: float
) -> None:
    # base 0 (x_b = 0), the model at version 1 (x = 0.5): staleness 1
    update = ClientUpdate(model(2.0), num_samples=4096, base_version=0, folds=folds)
    got = rule().submit(model(0.5), update, 1)
    assert rule().gain(folds) == pytest.approx(gain)
    np.testing.assert_allclose(got["W0"], expected(0.5, 2.0, 0.0, 1, gain), rtol=1e-6)
    assert got["W0"].dtype == np.float32


def test_max_gain_bounds_the_step_and_is_reported() -> None:
    capped = rule(max_gain=2.0, alpha=0.5)
    update = ClientUpdate(model(1.0), num_samples=64, base_version=1, folds=64)
    got = capped.submit(model(0.5), update, 1)  # staleness 0, x_b = x = 0.5
    np.testing.assert_allclose(got["b0"], expected(0.5, 1.0, 0.5, 0, 2.0, alpha=0.5))
    described = capped.describe()
    assert described["name"] == "fedasync-folds" and described["max_gain"] == 2.0
    again = make_rule(**described, base_lookup=BASES.get)  # type: ignore[arg-type]
    assert again.describe() == described


def test_a_group_update_whose_base_is_gone_is_refused_and_changes_nothing() -> None:
    current = model(0.5)
    update = ClientUpdate(model(2.0), num_samples=64, base_version=0, folds=16)
    lookup_nothing = FoldedFedAsync(base_lookup=lambda v: None)
    with pytest.raises(AggregationError, match="base model version 0 is not available"):
        lookup_nothing.submit(current, update, 3)
    np.testing.assert_array_equal(current["W0"], model(0.5)["W0"])
    wrong_shape = FoldedFedAsync(base_lookup=lambda v: {"W0": np.zeros((3, 3), np.float32)})
    with pytest.raises(AggregationError):
        wrong_shape.submit(current, update, 3)


@pytest.mark.parametrize("max_gain", [0.5, 0.0, 64.5, math.nan, "4", True])
def test_max_gain_out_of_bounds_is_refused(max_gain: object) -> None:
    with pytest.raises(AggregationError, match="max_gain"):
        rule(max_gain=max_gain)


def test_the_rule_needs_its_base_lookup() -> None:
    with pytest.raises(AggregationError, match="base_lookup"):
        make_rule("fedasync-folds")
    with pytest.raises(AggregationError, match="base_lookup"):
        FoldedFedAsync(base_lookup=42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("folds", "samples", "match"),
    [
        (0, 10, "folds must be 1"),
        (MAX_FOLDS + 1, 10_000, "folds must be 1"),
        (11, 10, "at most num_samples"),
        (True, 10, "folds must be an int"),
        (2.0, 10, "folds must be an int"),
    ],
)
def test_declared_folds_are_bounded(folds: object, samples: int, match: str) -> None:
    with pytest.raises(AggregationError, match=match):
        ClientUpdate(model(1.0), num_samples=samples, base_version=0, folds=folds)  # type: ignore[arg-type]
