"""Losses: values, derivatives and the output delta, checked against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.learn import losses
from eddl.learn.activations import activate
from eddl.learn.losses import EPS, LOSSES, loss_grad, loss_value, output_delta


def _one_hot(labels: list[int], k: int) -> np.ndarray:
    t = np.zeros((len(labels), k))
    t[np.arange(len(labels)), labels] = 1.0
    return t


def test_public_names() -> None:
    assert set(losses.__all__) == {
        "EPS",
        "FUSED",
        "LOSSES",
        "loss_grad",
        "loss_value",
        "output_delta",
    }


def test_known_values() -> None:
    y = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    t = _one_hot([0, 2], 3)
    ce = -(np.log(0.7) + np.log(0.8)) / 2
    assert loss_value("ce", y, t) == pytest.approx(ce)
    mse = 0.5 * (0.09 + 0.04 + 0.01 + 0.01 + 0.01 + 0.04) / 2
    assert loss_value("mse", y, t) == pytest.approx(mse)
    bce = -(np.log(0.7) + np.log(0.8) + np.log(0.9) + np.log(0.8) + np.log(0.9) + np.log(0.9)) / 2
    assert loss_value("bce", y, t) == pytest.approx(bce)


@pytest.mark.parametrize("name", LOSSES)
def test_a_perfect_prediction_costs_almost_nothing(name: str) -> None:
    t = _one_hot([1, 0], 2)
    assert loss_value(name, t, t) < 1e-5


def test_single_sample_equals_a_batch_of_one() -> None:
    y = np.array([0.3, 0.7])
    t = np.array([0.0, 1.0])
    for name in LOSSES:
        assert loss_value(name, y, t) == loss_value(name, y[None], t[None])


def test_saturated_outputs_give_a_finite_loss() -> None:
    y = np.array([[0.0, 1.0]], dtype=np.float32)
    t = np.array([[1.0, 0.0]], dtype=np.float32)
    for name in ("bce", "ce"):
        value = loss_value(name, y, t)
        assert np.isfinite(value)
        assert value > 10
    assert np.isfinite(loss_grad("bce", y, t)).all()
    assert EPS > 0


@pytest.mark.parametrize("name", LOSSES)
def test_loss_grad_matches_finite_differences(name: str) -> None:
    rng = np.random.default_rng(11)
    y = rng.uniform(0.05, 0.95, size=(1, 5))
    if name == "ce":
        y /= y.sum()
    t = _one_hot([3], 5)
    h = 1e-6
    numeric = np.empty_like(y)
    for j in range(y.shape[1]):
        up, down = y.copy(), y.copy()
        up[0, j] += h
        down[0, j] -= h
        numeric[0, j] = (loss_value(name, up, t) - loss_value(name, down, t)) / (2 * h)
    np.testing.assert_allclose(loss_grad(name, y, t), numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("name", "activation"),
    [
        ("bce", "sigmoid"),
        ("ce", "softmax"),
        ("mse", "tanh"),
        ("mse", "sigmoid"),
        ("mse", "linear"),
        ("mse", "relu"),
    ],
)
def test_output_delta_is_the_derivative_wrt_pre_activations(name: str, activation: str) -> None:
    rng = np.random.default_rng(12)
    z = rng.normal(0, 1, size=(1, 4))
    z[np.abs(z) < 1e-3] = 0.5  # relu kink
    t = _one_hot([2], 4)

    def loss_at(zz: np.ndarray) -> float:
        return loss_value(name, activate(activation, zz, np.empty_like(zz)), t)

    h = 1e-6
    numeric = np.empty_like(z)
    for j in range(z.shape[1]):
        up, down = z.copy(), z.copy()
        up[0, j] += h
        down[0, j] -= h
        numeric[0, j] = (loss_at(up) - loss_at(down)) / (2 * h)
    y = activate(activation, z, np.empty_like(z))
    got = output_delta(name, activation, y, t, np.empty_like(y))
    np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-8)


def test_output_delta_refuses_a_log_loss_on_the_wrong_activation() -> None:
    y = np.full((1, 3), 0.3)
    t = _one_hot([0], 3)
    with pytest.raises(ValueError, match=r"bce.*sigmoid"):
        output_delta("bce", "tanh", y, t, np.empty_like(y))
    with pytest.raises(ValueError, match=r"ce.*softmax"):
        output_delta("ce", "sigmoid", y, t, np.empty_like(y))


def test_unknown_loss_and_shape_mismatch_are_refused() -> None:
    y = np.full((1, 3), 0.3)
    t = _one_hot([0], 3)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        loss_value("hinge", y, t)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        loss_grad("hinge", y, t)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        output_delta("hinge", "linear", y, t, np.empty_like(y))
    with pytest.raises(ValueError, match="differ in shape"):
        loss_value("mse", y, t[:, :2])
    with pytest.raises(ValueError, match="differ in shape"):
        loss_grad("mse", y, t[:, :2])
