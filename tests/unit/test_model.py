"""MLP spec validation and (de)serialisation, Glorot init, forward pass, prediction, checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from eddl.learn import model
from eddl.learn.losses import loss_value
from eddl.learn.model import (
    DataError,
    MLPSpec,
    SpecError,
    accuracy,
    check_labels,
    check_x,
    evaluate_loss,
    forward,
    init_params,
    predict,
    targets,
)
from eddl.learn.params import ParamsError, clone

PAPER = MLPSpec((784, 40, 32, 10), ("tanh", "tanh", "sigmoid"), "bce")
SMALL = MLPSpec((6, 5, 3), ("relu", "softmax"), "ce")


def test_public_names() -> None:
    assert set(model.__all__) == {
        "DataError",
        "MLPSpec",
        "SpecError",
        "accuracy",
        "check_labels",
        "check_params",
        "check_x",
        "evaluate_loss",
        "forward",
        "init_params",
        "predict",
        "targets",
    }
    assert issubclass(SpecError, ValueError)
    assert issubclass(DataError, ValueError)


def test_paper_topology_shapes_and_counts() -> None:
    assert PAPER.num_layers == 3
    assert PAPER.num_classes == 10
    assert PAPER.param_shapes() == {
        "W0": (784, 40),
        "b0": (40,),
        "W1": (40, 32),
        "b1": (32,),
        "W2": (32, 10),
        "b2": (10,),
    }
    assert list(PAPER.param_shapes()) == ["W0", "b0", "W1", "b1", "W2", "b2"]
    assert PAPER.num_params == 784 * 40 + 40 + 40 * 32 + 32 + 32 * 10 + 10


def test_lists_are_stored_as_tuples_so_specs_compare_and_hash() -> None:
    spec = MLPSpec([784, 40, 32, 10], ["tanh", "tanh", "sigmoid"], "bce")  # type: ignore[arg-type]
    assert spec == PAPER
    assert hash(spec) == hash(PAPER)
    assert isinstance(spec.sizes, tuple)
    assert isinstance(spec.activations, tuple)


def test_numpy_integer_sizes_are_accepted_as_ints() -> None:
    spec = MLPSpec(tuple(np.array([4, 3, 2])), ("tanh", "softmax"), "ce")
    assert spec.sizes == (4, 3, 2)
    assert all(type(s) is int for s in spec.sizes)


@pytest.mark.parametrize(
    ("sizes", "acts", "loss", "message"),
    [
        ((10,), (), "mse", "input and an output"),
        ((), (), "mse", "input and an output"),
        ((10, 0, 2), ("tanh", "sigmoid"), "bce", "positive"),
        ((10, -3, 2), ("tanh", "sigmoid"), "bce", "positive"),
        ((10, 2.5, 2), ("tanh", "sigmoid"), "bce", "positive"),
        ((10, True, 2), ("tanh", "sigmoid"), "bce", "positive"),
        ((10, 1), ("sigmoid",), "bce", "at least 2 units"),
        ((10, 4, 2), ("tanh",), "bce", "2 activation"),
        ((10, 4, 2), ("tanh", "tanh", "sigmoid"), "bce", "2 activation"),
        ((10, 4, 2), ("gelu", "sigmoid"), "bce", "unknown activation 'gelu'"),
        ((10, 4, 2), ("tanh", "sigmoid"), "hinge", "unknown loss 'hinge'"),
        ((10, 4, 2), ("softmax", "softmax"), "ce", "only allowed on the output"),
        ((10, 4, 2), ("tanh", "softmax"), "mse", "softmax output needs the ce"),
        ((10, 4, 2), ("tanh", "softmax"), "bce", "softmax output needs the ce"),
        ((10, 4, 2), ("tanh", "tanh"), "bce", "bce loss needs a sigmoid"),
        ((10, 4, 2), ("tanh", "sigmoid"), "ce", "ce loss needs a softmax"),
        ("784", ("tanh",), "mse", "sequence of ints"),
        ((10, 2), "linear", "mse", "sequence of names"),
    ],
)
def test_bad_specs_are_refused(sizes: Any, acts: Any, loss: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        MLPSpec(sizes, acts, loss)


def test_dict_round_trip() -> None:
    d = PAPER.to_dict()
    assert d == {
        "sizes": [784, 40, 32, 10],
        "activations": ["tanh", "tanh", "sigmoid"],
        "loss": "bce",
    }
    assert MLPSpec.from_dict(d) == PAPER


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"sizes": [3, 2], "activations": ["softmax"], "loss": "ce", "lr": 1}, "unknown.*'lr'"),
        ({"sizes": [3, 2], "activations": ["softmax"]}, "misses.*'loss'"),
        ({"sizes": [3, 2], "activations": ["softmax"], "loss": 3}, "unknown loss"),
        ([("sizes", [3, 2])], "must be a mapping"),
    ],
)
def test_from_dict_is_strict(d: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        MLPSpec.from_dict(d)


def test_init_is_deterministic_float32_glorot_uniform_with_zero_biases() -> None:
    a = init_params(PAPER, seed=7)
    b = init_params(PAPER, seed=7)
    c = init_params(PAPER, seed=8)
    assert list(a) == list(PAPER.param_shapes())
    for name, shape in PAPER.param_shapes().items():
        assert a[name].dtype == np.float32
        assert a[name].shape == shape
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["W0"], c["W0"])
    for i in range(PAPER.num_layers):
        fan_in, fan_out = PAPER.sizes[i], PAPER.sizes[i + 1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = a[f"W{i}"]
        assert np.abs(w).max() <= limit
        # U(-r, r) has variance r²/3 = 2/(fan_in + fan_out): Glorot's target.
        assert w.var() == pytest.approx(2.0 / (fan_in + fan_out), rel=0.25)
        np.testing.assert_array_equal(a[f"b{i}"], 0.0)


def _reference_forward(spec: MLPSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    a = x.astype(np.float64)
    for i, act in enumerate(spec.activations):
        z = a @ params[f"W{i}"].astype(np.float64) + params[f"b{i}"]
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
    return a


@pytest.mark.parametrize("spec", [PAPER, SMALL])
def test_forward_matches_a_float64_reference(spec: MLPSpec) -> None:
    params = init_params(spec, seed=1)
    params["b0"] += np.float32(0.1)
    x = np.random.default_rng(2).random((9, spec.sizes[0]), dtype=np.float32)
    outs = forward(spec, params, x)
    assert [o.shape for o in outs] == [(9, k) for k in spec.sizes[1:]]
    assert all(o.dtype == np.float32 for o in outs)
    np.testing.assert_allclose(outs[-1], _reference_forward(spec, params, x), rtol=1e-5, atol=1e-6)


def test_forward_leaves_params_and_x_untouched() -> None:
    params = init_params(SMALL, seed=1)
    before = clone(params)
    x = np.random.default_rng(2).random((4, 6), dtype=np.float32)
    x_before = x.copy()
    forward(SMALL, params, x)
    for name in params:
        np.testing.assert_array_equal(params[name], before[name])
    np.testing.assert_array_equal(x, x_before)


def test_predict_accuracy_and_loss_agree_with_the_outputs() -> None:
    params = init_params(SMALL, seed=3)
    x = np.random.default_rng(4).random((20, 6), dtype=np.float32)
    out = forward(SMALL, params, x)[-1]
    pred = predict(SMALL, params, x)
    assert pred.dtype == np.int64
    np.testing.assert_array_equal(pred, out.argmax(axis=1))
    y = pred.copy()
    y[:5] = (y[:5] + 1) % 3
    assert accuracy(SMALL, params, x, y) == pytest.approx(0.75)
    assert evaluate_loss(SMALL, params, x, y) == pytest.approx(
        loss_value("ce", out, targets(SMALL, y))
    )


def test_targets_are_one_hot_float32() -> None:
    t = targets(SMALL, np.array([2, 0, 1, 2]))
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(DataError, match="labels must lie in"):
        targets(SMALL, np.array([3]))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ([[0.0] * 6], "numpy array"),
        (np.zeros((2, 6), dtype=np.float64), "float32"),
        (np.zeros((2, 6), dtype=np.uint8), "float32"),
        (np.zeros((2, 5), dtype=np.float32), r"shape \(n, 6\)"),
        (np.zeros(6, dtype=np.float32), r"shape \(n, 6\)"),
        (np.zeros((0, 6), dtype=np.float32), "no samples"),
        (np.array([[0, 0, np.nan, 0, 0, 0]], dtype=np.float32), "NaN or Inf"),
        (np.array([[0, 0, np.inf, 0, 0, 0]], dtype=np.float32), "NaN or Inf"),
    ],
)
def test_bad_samples_are_refused(x: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_x(SMALL, x)
    with pytest.raises(DataError, match=message):
        forward(SMALL, init_params(SMALL, 0), x)


@pytest.mark.parametrize(
    ("y", "message"),
    [
        ([0, 1], "numpy array"),
        (np.array([0.0, 1.0]), "integer class labels"),
        (np.array([[0, 1]]), "1-D"),
        (np.array([0, 1, 2]), "3 labels for 2 samples"),
        (np.array([0, -1]), r"\[0, 3\)"),
        (np.array([0, 3]), r"\[0, 3\)"),
    ],
)
def test_bad_labels_are_refused(y: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_labels(SMALL, y, n=2)
    x = np.zeros((2, 6), dtype=np.float32)
    with pytest.raises(DataError, match=message):
        accuracy(SMALL, init_params(SMALL, 0), x, y)


def test_unsigned_labels_are_accepted() -> None:
    assert check_labels(SMALL, np.array([0, 2], dtype=np.uint8), n=2).dtype == np.uint8


def test_params_that_do_not_fit_the_spec_are_refused() -> None:
    x = np.zeros((1, 6), dtype=np.float32)
    good = init_params(SMALL, 0)
    cases: list[tuple[dict[str, np.ndarray], str]] = [
        ({k: v for k, v in good.items() if k != "b1"}, "missing"),
        ({**good, "W9": good["W0"]}, "unknown"),
        ({**good, "W0": good["W0"].astype(np.float64)}, "dtype"),
        ({**good, "W0": good["W0"].T.copy()}, "shape"),
        ({**good, "b0": np.full(5, np.nan, dtype=np.float32)}, "NaN or Inf"),
    ]
    for params, message in cases:
        with pytest.raises(ParamsError, match=message):
            forward(SMALL, params, x)
