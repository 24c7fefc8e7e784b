"""Reptile's outer update, its ε schedule, and the ``reptile`` aggregation rule."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.learn.aggregation import AggregationError, ClientUpdate, make_rule
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.metamodel import Classifier
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.model import MLPSpec
from eddl.learn.params import clone
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.reptile import MetaLrSchedule, ReptileError, reptile_update
from eddl.learn.tinymetafed import device_round

SPEC = MLPSpec((6, 8, 3), ("tanh", "sigmoid"), "bce")


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((12, 6), dtype=np.float32), rng.integers(0, 3, 12)


def test_one_device_with_eps_one_equals_plain_fine_tuning() -> None:
    model = Classifier(SPEC)
    theta = model.init_params(3)
    x, y = _data()
    opts = MetaOptions.from_hyper("reptile", {"lr": 0.1, "meta_lr": 1.0, "meta_lr_final": 1.0})
    update = device_round(model, LayerSplit(2), theta, x, y, opts, seed=5)
    new = reptile_update(theta, [update.delta], [update.samples], 1.0)
    tuned = clone(theta)
    LSGDTrainer(SPEC, 0.1).train(tuned, x, y)
    # The delta travels as float32 (φ − θ rounded once), so θ + δ is φ to one rounding.
    for name in tuned:
        np.testing.assert_allclose(new[name], tuned[name], rtol=1e-6, atol=1e-7)


def test_update_is_sample_weighted_and_leaves_theta_unchanged() -> None:
    theta = {"w": np.zeros(2, dtype=np.float32)}
    d1 = {"w": np.array([1.0, 0.0], dtype=np.float32)}
    d2 = {"w": np.array([0.0, 4.0], dtype=np.float32)}
    new = reptile_update(theta, [d1, d2], [3, 1], 0.5)
    np.testing.assert_allclose(new["w"], [0.5 * 0.75, 0.5 * 1.0])
    assert not theta["w"].any()


def test_a_name_nobody_sent_keeps_its_value() -> None:
    theta = {"a": np.ones(2, dtype=np.float32), "b": np.ones(3, dtype=np.float32)}
    new = reptile_update(theta, [{"a": np.ones(2, dtype=np.float32)}], [1], 1.0)
    np.testing.assert_array_equal(new["b"], theta["b"])
    np.testing.assert_array_equal(new["a"], [2.0, 2.0])


@pytest.mark.parametrize(
    ("deltas", "weights", "eps"),
    [
        ([], [], 1.0),
        ([{"a": np.ones(2, dtype=np.float32)}], [0], 1.0),
        ([{"a": np.ones(2, dtype=np.float32)}], [1], 0.0),
        ([{"a": np.ones(2, dtype=np.float32)}], [1], 1.5),
        ([{"a": np.ones(3, dtype=np.float32)}], [1], 1.0),
        ([{"zz": np.ones(2, dtype=np.float32)}], [1], 1.0),
        ([{"a": np.array([np.nan, 0], dtype=np.float32)}], [1], 1.0),
    ],
)
def test_bad_rounds_are_refused(deltas: list, weights: list, eps: float) -> None:
    with pytest.raises(ReptileError):
        reptile_update({"a": np.zeros(2, dtype=np.float32)}, deltas, weights, eps)


def test_schedule_decays_linearly_and_stays_positive() -> None:
    s = MetaLrSchedule(1.0, 0.0, 4)
    assert [s.at(r) for r in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert MetaLrSchedule(0.3, 0.3, 5).at(4) == pytest.approx(0.3)
    with pytest.raises(ReptileError):
        s.at(4)
    for bad in ((0.0, 0.0, 1), (0.5, 0.6, 1), (1.0, 0.0, 0), (1.2, 0.0, 1)):
        with pytest.raises(ReptileError):
            MetaLrSchedule(*bad)


def test_reptile_rule_steps_toward_the_clients() -> None:
    rule = make_rule("reptile", meta_lr=0.5)
    theta = {"w": np.zeros(2, dtype=np.float32)}
    ups = [ClientUpdate({"w": np.array([2.0, 2.0], dtype=np.float32)}, 1, 0)]
    np.testing.assert_allclose(rule.aggregate(theta, ups, 0)["w"], [1.0, 1.0])
    with pytest.raises(AggregationError):
        make_rule("reptile", meta_lr=2.0)


def test_reptile_rule_with_a_schedule_steps_by_the_round_it_closes() -> None:
    rule = make_rule("reptile", schedule=MetaLrSchedule(1.0, 0.0, 4))
    theta = {"w": np.zeros(1, dtype=np.float32)}
    ups = [ClientUpdate({"w": np.array([4.0], dtype=np.float32)}, 1, 0)]
    steps = [float(rule.aggregate(theta, ups, v)["w"][0]) for v in (0, 1, 3, 9)]
    assert steps == [4.0, 3.0, 1.0, 1.0]  # ε 1, 0.75, 0.25, then the last round's
    assert rule.describe()["rounds"] == 4
    with pytest.raises(AggregationError, match="MetaLrSchedule"):
        make_rule("reptile", schedule=0.5)
