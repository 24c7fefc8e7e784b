"""The lsgd-q8 inner loop of a meta job: options, its checks, and the round it computes."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.jobcheck import JobSpecError
from eddl.learn import lsgd_q8
from eddl.learn.metamodel import Classifier, Regressor
from eddl.learn.metaoptions import MetaOptions, MetaOptionsError
from eddl.learn.metaq8 import Q8Round, Q8RoundError, pixels_of
from eddl.learn.model import MLPSpec
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.tinymetafed import device_round
from eddl.metajob import MetaJobConfig, meta_job

SPEC = MLPSpec((6, 8, 5, 3), ("tanh", "tanh", "sigmoid"), "bce")


def _data(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    px = rng.integers(0, 256, size=(n, 6), dtype=np.uint8)
    return px.astype(np.float32) / np.float32(255.0), rng.integers(0, 3, n)


def test_options_bound_the_kernel_and_its_learning_rate() -> None:
    opts = MetaOptions.from_hyper("tinymetafed", {"kernel": "lsgd-q8", "lr": 0.05}, 3)
    assert opts.kernel == "lsgd-q8" and opts.lr_shift == 4  # 2^-4 is the nearest power
    assert MetaOptions.from_hyper("reptile", {}).kernel == "lsgd"
    for hyper, key in (
        ({"kernel": "sgd"}, "hyper.kernel"),
        ({"kernel": "lsgd-q8", "lr": 2.0}, "hyper.lr"),
        ({"kernel": "lsgd-q8", "lr": 1e-4}, "hyper.lr"),
    ):
        with pytest.raises(MetaOptionsError) as err:
            MetaOptions.from_hyper("reptile", hyper)
        assert err.value.key == key


def test_a_q8_job_needs_a_character_task() -> None:
    with pytest.raises(JobSpecError, match=r"job\.hyper\.kernel"):
        meta_job(
            MetaJobConfig.of_wire(
                "tinymetafed", "sine", '{"task": "sine"}', '{"kernel": "lsgd-q8"}'
            )
        )


def test_pixels_are_taken_back_exactly_and_anything_else_is_refused() -> None:
    x, _ = _data()
    np.testing.assert_array_equal(pixels_of(x), np.rint(x * 255.0).astype(np.uint8))
    for bad in (x + np.float32(0.001), x * 2.0, -x):
        with pytest.raises(Q8RoundError):
            pixels_of(bad.astype(np.float32))


def test_the_round_is_the_integer_loop_against_the_quantized_model() -> None:
    model = Classifier(SPEC)
    split = LayerSplit(3, 1)
    theta = split.shared(model.init_params(0))
    x, y = _data()
    opts = MetaOptions.from_hyper("tinymetafed", {"kernel": "lsgd-q8", "lr": 0.125}, 3)
    r = Q8Round(model, split, theta, x, y, opts, seed=5)
    phi = {n: a.copy() for n, a in r.theta_q.items()}
    lsgd_q8.LSGDQ8Trainer(SPEC, r.fmt, lr_shift=3).train(phi, pixels_of(x), y)
    delta = r.delta(r.train())
    assert sorted(delta) == ["W0", "W1", "b0", "b1"]  # the local head is not in it
    moved = 0
    for i in range(2):
        for kind, f in (("W", r.fmt.weight_frac[i]), ("b", r.fmt.bias_frac[i])):
            n = f"{kind}{i}"
            steps = (phi[n].astype(np.int32) - r.theta_q[n].astype(np.int32)).astype(np.float32)
            np.testing.assert_array_equal(delta[n], steps * np.float32(2.0**-f))
            moved += int(np.count_nonzero(steps))
    assert moved > 0
    update = device_round(model, split, theta, x, y, opts, seed=5)
    assert update.steps == len(x) and update.selected is not None
    kept = sum(len(s.values) for s in update.selected.values())
    assert kept == int(np.ceil(0.1 * sum(d.size for d in delta.values())))


def test_a_regressor_has_no_q8_round() -> None:
    model = Regressor((6, 4, 1))
    split = LayerSplit(2, 0)
    opts = MetaOptions.from_hyper("reptile", {"kernel": "lsgd-q8", "lr": 0.125})
    x, _ = _data()
    with pytest.raises(Q8RoundError, match="classifiers"):
        Q8Round(model, split, model.init_params(0), x, np.zeros((12, 1), np.float32), opts, seed=0)
