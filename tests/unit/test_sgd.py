"""SGD (Algorithm 1): gradients against finite differences, batching, shuffling, state, and
the Trainer contract's input validation (checked here for both float trainers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from eddl.learn import sgd
from eddl.learn.lsgd import LSGDTrainer
from eddl.learn.model import DataError, MLPSpec, accuracy, evaluate_loss, init_params
from eddl.learn.params import ParamsError, clone
from eddl.learn.sgd import SGDTrainer
from eddl.learn.trainer import DivergedError, Trainer, TrainerConfigError, TrainStats

COMBOS = [
    MLPSpec((5, 4, 3), ("tanh", "sigmoid"), "bce"),
    MLPSpec((5, 4, 3, 3), ("sigmoid", "relu", "softmax"), "ce"),
    MLPSpec((5, 6, 4, 3), ("relu", "tanh", "linear"), "mse"),
    MLPSpec((5, 3), ("tanh",), "mse"),
]


def _data(spec: MLPSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, spec.sizes[0]), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, size=n)
    return x, y


def _loss64(spec: MLPSpec, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """The mean training loss, computed independently of eddl in float64."""
    a = x.astype(np.float64)
    for i, act in enumerate(spec.activations):
        z = a @ params[f"W{i}"] + params[f"b{i}"]
        if act == "tanh":
            a = np.tanh(z)
        elif act == "sigmoid":
            a = 1 / (1 + np.exp(-z))
        elif act == "relu":
            a = np.maximum(z, 0)
        elif act == "linear":
            a = z
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            a = e / e.sum(axis=1, keepdims=True)
    t = np.eye(spec.num_classes)[y]
    if spec.loss == "mse":
        per = 0.5 * ((a - t) ** 2).sum(axis=1)
    elif spec.loss == "bce":
        per = -(t * np.log(a) + (1 - t) * np.log(1 - a)).sum(axis=1)
    else:
        per = -(t * np.log(a)).sum(axis=1)
    return float(per.mean())


def test_public_names() -> None:
    assert sgd.__all__ == ["SGDTrainer"]
    assert SGDTrainer.name == "sgd"
    assert issubclass(SGDTrainer, Trainer)


@pytest.mark.parametrize("spec", COMBOS, ids=lambda s: "-".join(s.activations) + "/" + s.loss)
@pytest.mark.parametrize("batch", [1, 4])
def test_one_step_follows_the_finite_difference_gradient(spec: MLPSpec, batch: int) -> None:
    x, y = _data(spec, batch, seed=batch)
    params = init_params(spec, seed=5)
    for name in params:  # nonzero biases, so their gradients are exercised off the origin
        if name.startswith("b"):
            params[name] += np.float32(0.05)
    start = {k: v.astype(np.float64) for k, v in params.items()}
    # With lr = 1 one step moves every parameter by exactly minus its gradient.
    SGDTrainer(spec, lr=1.0, batch_size=batch).train(params, x, y)
    h = 1e-6
    for name, value in start.items():
        numeric = np.empty_like(value)
        for idx in np.ndindex(value.shape):
            up = dict(start)
            down = dict(start)
            up[name] = value.copy()
            up[name][idx] += h
            down[name] = value.copy()
            down[name][idx] -= h
            numeric[idx] = (_loss64(spec, up, x, y) - _loss64(spec, down, x, y)) / (2 * h)
        step = start[name] - params[name]
        np.testing.assert_allclose(step, numeric, rtol=2e-3, atol=2e-6, err_msg=name)


def test_a_short_last_batch_is_its_own_step() -> None:
    spec = COMBOS[1]
    x, y = _data(spec, 5)
    whole = init_params(spec, seed=1)
    by_hand = clone(whole)
    trainer = SGDTrainer(spec, lr=0.3, batch_size=2)
    stats = trainer.train(whole, x, y)
    assert stats == TrainStats(samples=5, steps=3, state_bytes=trainer.state_bytes)
    for start, stop in [(0, 2), (2, 4), (4, 5)]:
        SGDTrainer(spec, lr=0.3, batch_size=2).train(by_hand, x[start:stop], y[start:stop])
    for name in whole:
        np.testing.assert_allclose(whole[name], by_hand[name], rtol=1e-6, atol=1e-7)


def test_rng_shuffles_each_epoch_like_training_on_permuted_data() -> None:
    spec = COMBOS[0]
    x, y = _data(spec, 12)
    shuffled = init_params(spec, seed=2)
    by_hand = clone(shuffled)
    in_order = clone(shuffled)
    SGDTrainer(spec, 0.2, batch_size=3).train(
        shuffled, x, y, epochs=2, rng=np.random.default_rng(9)
    )
    perm_rng = np.random.default_rng(9)
    for _ in range(2):
        perm = perm_rng.permutation(12)
        SGDTrainer(spec, 0.2, batch_size=3).train(by_hand, x[perm], y[perm])
    SGDTrainer(spec, 0.2, batch_size=3).train(in_order, x, y, epochs=2)
    for name in shuffled:
        np.testing.assert_allclose(shuffled[name], by_hand[name], rtol=1e-6, atol=1e-7)
    assert not np.allclose(shuffled["W0"], in_order["W0"])


def test_epochs_repeat_the_pass_and_are_counted() -> None:
    spec = COMBOS[2]
    x, y = _data(spec, 7)
    twice = init_params(spec, seed=3)
    stepwise = clone(twice)
    stats = SGDTrainer(spec, 0.1, batch_size=3).train(twice, x, y, epochs=2)
    assert (stats.samples, stats.steps) == (14, 6)
    trainer = SGDTrainer(spec, 0.1, batch_size=3)
    trainer.train(stepwise, x, y)
    trainer.train(stepwise, x, y)
    for name in twice:
        np.testing.assert_array_equal(twice[name], stepwise[name])


def test_trains_in_place() -> None:
    spec = COMBOS[0]
    x, y = _data(spec, 4)
    params = init_params(spec, seed=0)
    w0 = params["W0"]
    before = w0.copy()
    SGDTrainer(spec, 0.5).train(params, x, y)
    assert params["W0"] is w0
    assert not np.array_equal(w0, before)


def test_state_bytes_is_the_sum_of_the_buffers_and_grows_with_the_batch() -> None:
    spec = MLPSpec((784, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")
    one = SGDTrainer(spec, 0.01, batch_size=1).state_bytes
    many = SGDTrainer(spec, 0.01, batch_size=32).state_bytes
    grads = spec.num_params * 4
    per_row = (3 * (40 + 32 + 10) + 784) * 4 + 8  # pre-acts, outputs, deltas, batch x, row index
    assert one == grads + per_row
    assert many == grads + 32 * per_row


def test_learns_a_separable_toy_problem() -> None:
    rng = np.random.default_rng(0)
    centers = rng.random((3, 8)) * 2
    y = rng.integers(0, 3, size=300)
    x = (centers[y] + rng.normal(0, 0.15, size=(300, 8))).astype(np.float32)
    spec = MLPSpec((8, 16, 3), ("tanh", "softmax"), "ce")
    params = init_params(spec, seed=1)
    before = evaluate_loss(spec, params, x, y)
    SGDTrainer(spec, lr=0.5, batch_size=10).train(params, x, y, epochs=20, rng=rng)
    assert evaluate_loss(spec, params, x, y) < 0.25 * before
    assert accuracy(spec, params, x, y) > 0.95


# -- the Trainer contract: bad input raises a typed error and leaves params untouched ---------

SPEC = MLPSpec((4, 5, 3), ("tanh", "sigmoid"), "bce")
TRAINERS: list[Callable[[], Trainer]] = [
    lambda: SGDTrainer(SPEC, 0.1),
    lambda: SGDTrainer(SPEC, 0.1, batch_size=4),
    lambda: LSGDTrainer(SPEC, 0.1),
]
TRAINER_IDS = ["sgd", "sgd-batch4", "lsgd"]


def _nan_in(name: str) -> Callable[[dict[str, np.ndarray]], None]:
    def poison(p: dict[str, np.ndarray]) -> None:
        p[name] = p[name].copy()
        p[name].flat[0] = np.nan

    return poison


GOOD_X = np.random.default_rng(0).random((6, 4), dtype=np.float32)
GOOD_Y = np.array([0, 1, 2, 2, 1, 0])
BAD_INPUTS: list[tuple[str, Any, Any, dict[str, Any], type[Exception], str]] = [
    ("x float64", GOOD_X.astype(np.float64), GOOD_Y, {}, DataError, "float32"),
    ("x wrong width", GOOD_X[:, :3], GOOD_Y, {}, DataError, "shape"),
    ("x 1-D", GOOD_X[0], GOOD_Y[:1], {}, DataError, "shape"),
    ("x empty", GOOD_X[:0], GOOD_Y[:0], {}, DataError, "no samples"),
    ("x list", GOOD_X.tolist(), GOOD_Y, {}, DataError, "numpy array"),
    (
        "x NaN",
        np.where(GOOD_X > 0.9, np.nan, GOOD_X).astype(np.float32),
        GOOD_Y,
        {},
        DataError,
        "NaN",
    ),
    ("y float", GOOD_X, GOOD_Y.astype(np.float32), {}, DataError, "integer"),
    ("y short", GOOD_X, GOOD_Y[:5], {}, DataError, "5 labels for 6"),
    ("y too big", GOOD_X, np.array([0, 1, 2, 3, 1, 0]), {}, DataError, r"\[0, 3\)"),
    ("y negative", GOOD_X, np.array([0, 1, -1, 2, 1, 0]), {}, DataError, r"\[0, 3\)"),
    ("epochs 0", GOOD_X, GOOD_Y, {"epochs": 0}, TrainerConfigError, "epochs"),
    ("epochs float", GOOD_X, GOOD_Y, {"epochs": 1.0}, TrainerConfigError, "epochs"),
    ("rng seed", GOOD_X, GOOD_Y, {"rng": 3}, TrainerConfigError, "Generator"),
]


@pytest.mark.parametrize("make", TRAINERS, ids=TRAINER_IDS)
@pytest.mark.parametrize(
    ("what", "x", "y", "kwargs", "error", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_raises_and_changes_nothing(
    make: Callable[[], Trainer],
    what: str,
    x: Any,
    y: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    params = init_params(SPEC, seed=0)
    before = clone(params)
    trainer = make()
    with pytest.raises(error, match=message):
        trainer.train(params, x, y, **kwargs)
    assert issubclass(error, ValueError)
    for name in before:
        np.testing.assert_array_equal(params[name], before[name])


@pytest.mark.parametrize("make", TRAINERS, ids=TRAINER_IDS)
@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_nan_in("W1"), "NaN or Inf"),
        (_nan_in("b0"), "NaN or Inf"),
        (lambda p: p.update(W0=p["W0"].astype(np.float64)), "dtype"),
        (lambda p: p.update(W0=p["W0"][:3]), "shape"),
        (lambda p: p.pop("b1"), "missing"),
    ],
    ids=["nan-W1", "nan-b0", "dtype", "shape", "missing"],
)
def test_bad_params_raise_and_change_nothing(
    make: Callable[[], Trainer], corrupt: Callable[[dict[str, np.ndarray]], Any], message: str
) -> None:
    params = init_params(SPEC, seed=0)
    corrupt(params)
    before = clone(params)
    with pytest.raises(ParamsError, match=message):
        make().train(params, GOOD_X, GOOD_Y)
    for name in before:
        np.testing.assert_array_equal(params[name], before[name])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SGDTrainer(SPEC, 0.0),
        lambda: SGDTrainer(SPEC, -0.1),
        lambda: SGDTrainer(SPEC, float("nan")),
        lambda: SGDTrainer(SPEC, float("inf")),
        lambda: SGDTrainer(SPEC, "0.1"),  # type: ignore[arg-type]
        lambda: SGDTrainer(SPEC, True),
        lambda: SGDTrainer(SPEC, 0.1, batch_size=0),
        lambda: SGDTrainer(SPEC, 0.1, batch_size=2.0),  # type: ignore[arg-type]
        lambda: SGDTrainer({"sizes": [4, 3]}, 0.1),  # type: ignore[arg-type]
        lambda: LSGDTrainer(SPEC, 0.0),
        lambda: LSGDTrainer(SPEC, float("nan")),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], Trainer]) -> None:
    with pytest.raises(TrainerConfigError):
        make()


@pytest.mark.parametrize("make", [lambda s: SGDTrainer(s, 1e30), lambda s: LSGDTrainer(s, 1e30)])
def test_divergence_is_reported(make: Callable[[MLPSpec], Trainer]) -> None:
    spec = MLPSpec((4, 6, 3), ("linear", "linear"), "mse")
    params = init_params(spec, seed=0)
    x = np.full((8, 4), 1.0, dtype=np.float32)
    with pytest.raises(DivergedError, match="NaN/Inf"):
        make(spec).train(params, x, np.zeros(8, dtype=np.int64), epochs=3)
