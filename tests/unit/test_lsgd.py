"""L-SGD: same weights as SGD with batch 1, small fixed state, in-place training, learning."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from eddl.learn import lsgd
from eddl.learn.lsgd import UPDATE_BLOCK_BYTES, LSGDTrainer
from eddl.learn.model import MLPSpec, accuracy, evaluate_loss, init_params
from eddl.learn.params import clone
from eddl.learn.sgd import SGDTrainer
from eddl.learn.trainer import Trainer, TrainStats

PAPER = MLPSpec((784, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")
SPECS = [
    PAPER,
    MLPSpec((12, 9, 5), ("tanh", "sigmoid"), "bce"),
    MLPSpec((12, 16, 7, 4), ("relu", "sigmoid", "softmax"), "ce"),
    MLPSpec((12, 8, 3), ("sigmoid", "softmax"), "ce"),
    MLPSpec((12, 10, 6, 8, 4), ("tanh", "relu", "sigmoid", "linear"), "mse"),
    MLPSpec((12, 5, 6), ("linear", "tanh"), "mse"),
    MLPSpec((12, 3), ("sigmoid",), "bce"),
]


def _ids(spec: MLPSpec) -> str:
    return "-".join(map(str, spec.sizes)) + ":" + ",".join(spec.activations) + "/" + spec.loss


def _data(spec: MLPSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, spec.sizes[0]), dtype=np.float32)
    return x, rng.integers(0, spec.num_classes, size=n)


def test_public_names() -> None:
    assert lsgd.__all__ == ["UPDATE_BLOCK_BYTES", "LSGDTrainer"]
    assert LSGDTrainer.name == "lsgd"
    assert issubclass(LSGDTrainer, Trainer)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_same_weights_as_sgd_with_batch_one(spec: MLPSpec, shuffle: bool) -> None:
    x, y = _data(spec, 50, seed=1)
    reference = init_params(spec, seed=2)
    for name in reference:  # start off the zero biases so every bias path is exercised
        if name.startswith("b"):
            reference[name] += np.float32(0.02)
    light = clone(reference)
    start = clone(reference)
    lr = 0.05
    rng_a = np.random.default_rng(3) if shuffle else None
    rng_b = np.random.default_rng(3) if shuffle else None
    s_ref = SGDTrainer(spec, lr, batch_size=1).train(reference, x, y, epochs=2, rng=rng_a)
    s_light = LSGDTrainer(spec, lr).train(light, x, y, epochs=2, rng=rng_b)
    assert (s_ref.samples, s_ref.steps) == (s_light.samples, s_light.steps) == (100, 100)
    for name in reference:
        assert not np.array_equal(light[name], start[name]), f"{name} was not trained"
        np.testing.assert_allclose(light[name], reference[name], rtol=1e-4, atol=2e-6, err_msg=name)


def test_the_order_matters_so_the_equality_is_not_vacuous() -> None:
    spec = SPECS[1]
    x, y = _data(spec, 50, seed=1)
    a = init_params(spec, seed=2)
    b = clone(a)
    LSGDTrainer(spec, 0.05).train(a, x, y)
    SGDTrainer(spec, 0.05).train(b, x[::-1].copy(), y[::-1].copy())
    assert not np.allclose(a["W0"], b["W0"], rtol=1e-4, atol=2e-6)


def test_state_is_two_delta_buffers_and_one_output_per_layer() -> None:
    trainer = LSGDTrainer(PAPER, 0.01)
    widest = 40
    outputs = 40 + 32 + 10
    assert trainer.state_bytes == (2 * widest + outputs) * 4
    x, y = _data(PAPER, 3, seed=0)
    params = init_params(PAPER, seed=0)
    stats = trainer.train(params, x, y)
    assert stats == TrainStats(samples=3, steps=3, state_bytes=trainer.state_bytes)
    # Training allocates nothing that it keeps: the state is the same after a run.
    assert trainer.state_bytes == (2 * widest + outputs) * 4


def test_state_is_a_small_fraction_of_sgds() -> None:
    light = LSGDTrainer(PAPER, 0.01).state_bytes
    for batch in (1, 32):
        heavy = SGDTrainer(PAPER, 0.01, batch_size=batch).state_bytes
        assert light < 0.03 * heavy


def test_trains_in_place_without_rebinding() -> None:
    spec = SPECS[2]
    x, y = _data(spec, 10, seed=4)
    params = init_params(spec, seed=0)
    arrays = {k: v for k, v in params.items()}
    before = clone(params)
    LSGDTrainer(spec, 0.1).train(params, x, y)
    for name, arr in arrays.items():
        assert params[name] is arr
        assert not np.array_equal(arr, before[name])


def test_non_contiguous_inputs_give_the_same_result() -> None:
    spec = SPECS[1]
    x, y = _data(spec, 20, seed=5)
    a = init_params(spec, seed=1)
    b = clone(a)
    b["W0"] = np.asfortranarray(b["W0"])
    wide = np.zeros((20, 2 * spec.sizes[0]), dtype=np.float32)
    wide[:, ::2] = x
    LSGDTrainer(spec, 0.1).train(a, x, y)
    LSGDTrainer(spec, 0.1).train(b, wide[:, ::2], y)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7)


def test_learns_a_separable_toy_problem() -> None:
    rng = np.random.default_rng(0)
    centers = rng.random((4, 10)) * 2
    y = rng.integers(0, 4, size=400)
    x = (centers[y] + rng.normal(0, 0.15, size=(400, 10))).astype(np.float32)
    spec = MLPSpec((10, 12, 8, 4), ("tanh", "tanh", "sigmoid"), "bce")
    params = init_params(spec, seed=1)
    before = evaluate_loss(spec, params, x, y)
    LSGDTrainer(spec, lr=0.1).train(params, x, y, epochs=10, rng=rng)
    assert evaluate_loss(spec, params, x, y) < 0.25 * before
    assert accuracy(spec, params, x, y) > 0.95


def test_learns_the_shipped_digits_with_the_paper_settings() -> None:
    # The paper's recipe (tanh, tanh, sigmoid, BCE, lr 0.01) on the 8x8 digits shipped with
    # EDDL: three shuffled epochs reach ~95-98% test accuracy depending on the seed.
    from eddl.data import load_dataset

    ds = load_dataset("digits")
    spec = MLPSpec((ds.num_features, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")
    x_train = (ds.x_train / np.float32(255)).astype(np.float32)
    x_test = (ds.x_test / np.float32(255)).astype(np.float32)
    params = init_params(spec, seed=0)
    assert accuracy(spec, params, x_test, ds.y_test) < 0.3
    LSGDTrainer(spec, 0.01).train(
        params, x_train, ds.y_train, epochs=3, rng=np.random.default_rng(0)
    )
    assert accuracy(spec, params, x_test, ds.y_test) > 0.93


def test_the_weight_update_never_materialises_a_whole_weight_matrix() -> None:
    # W0 of the paper's network is 784x40 float32 = 125 KiB; the blocked rank-1 update keeps
    # numpy's temporaries within UPDATE_BLOCK_BYTES (plus small change) at any moment.
    x, y = _data(PAPER, 20, seed=6)
    params = init_params(PAPER, seed=0)
    trainer = LSGDTrainer(PAPER, 0.01)
    tracemalloc.start()
    try:
        trainer.train(params, x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert params["W0"].nbytes > 3 * UPDATE_BLOCK_BYTES
    assert peak < UPDATE_BLOCK_BYTES + 16 * 1024
