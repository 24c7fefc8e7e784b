"""Activations: values, derivatives from outputs (checked by finite differences), in-place use."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from eddl.learn import activations
from eddl.learn.activations import (
    ACTIVATIONS,
    ELEMENTWISE,
    activate,
    derivative_from_output,
    scale_by_derivative,
)


def _reference(name: str, z: np.ndarray) -> Any:
    z = z.astype(np.float64)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "linear":
        return z
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_public_names() -> None:
    assert set(activations.__all__) == {
        "ACTIVATIONS",
        "ELEMENTWISE",
        "activate",
        "derivative_from_output",
        "scale_by_derivative",
    }
    assert set(ELEMENTWISE) == set(ACTIVATIONS) - {"softmax"}


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(7,), (5, 7)])
def test_activate_matches_reference_formula(name: str, shape: tuple[int, ...]) -> None:
    z = np.random.default_rng(3).normal(0, 3, size=shape).astype(np.float32)
    out = np.empty_like(z)
    got = activate(name, z, out)
    assert got is out
    np.testing.assert_allclose(got, _reference(name, z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activate_in_place_equals_out_of_place(name: str) -> None:
    z = np.random.default_rng(4).normal(0, 2, size=(3, 6)).astype(np.float32)
    separate = activate(name, z, np.empty_like(z))
    same = z.copy()
    activate(name, same, same)
    np.testing.assert_array_equal(same, separate)


def test_sigmoid_and_softmax_saturate_without_overflow_warnings() -> None:
    z = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            sig = activate("sigmoid", z, np.empty_like(z))
            soft = activate("softmax", z, np.empty_like(z))
    np.testing.assert_allclose(sig, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)
    assert np.isfinite(soft).all()
    assert soft.sum() == pytest.approx(1.0)
    assert soft[-1] == pytest.approx(1.0)


def test_softmax_rows_are_distributions() -> None:
    z = np.random.default_rng(5).normal(0, 10, size=(6, 4)).astype(np.float32)
    s = activate("softmax", z, np.empty_like(z))
    assert (s >= 0).all()
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_from_output_matches_finite_differences(name: str) -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(0, 1.5, size=40)
    z = z[np.abs(z) > 1e-3]  # keep relu away from its kink
    h = 1e-6
    numeric = (_reference(name, z + h) - _reference(name, z - h)) / (2 * h)
    y = _reference(name, z)
    analytic = derivative_from_output(name, y, np.empty_like(y))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_from_output_keeps_y(name: str) -> None:
    y = activate(name, np.linspace(-2, 2, 9, dtype=np.float32), np.empty(9, np.float32))
    before = y.copy()
    derivative_from_output(name, y, np.empty_like(y))
    np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_scale_by_derivative_multiplies_delta_and_consumes_y(name: str) -> None:
    rng = np.random.default_rng(7)
    y = activate(name, rng.normal(size=12).astype(np.float32), np.empty(12, np.float32))
    delta = rng.normal(size=12).astype(np.float32)
    expected = delta * derivative_from_output(name, y, np.empty_like(y))
    y_scratch = y.copy()
    got = scale_by_derivative(name, y_scratch, delta)
    assert got is delta
    np.testing.assert_allclose(delta, expected, rtol=1e-6, atol=1e-7)


def test_relu_derivative_is_zero_for_inactive_units() -> None:
    y = np.array([0.0, 0.0, 0.5, 3.0], dtype=np.float32)
    delta = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    scale_by_derivative("relu", y, delta)
    np.testing.assert_array_equal(delta, [0.0, 0.0, 3.0, -4.0])


def test_softmax_has_no_elementwise_derivative() -> None:
    y = np.full(3, 1 / 3, dtype=np.float32)
    with pytest.raises(ValueError, match="softmax"):
        derivative_from_output("softmax", y, np.empty_like(y))
    with pytest.raises(ValueError, match="softmax"):
        scale_by_derivative("softmax", y, np.ones_like(y))


@pytest.mark.parametrize(
    "call",
    [
        lambda a: activate("gelu", a, a),
        lambda a: derivative_from_output("gelu", a, a),
        lambda a: scale_by_derivative("gelu", a, a),
    ],
)
def test_unknown_activation_is_refused(call: object) -> None:
    a = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        call(a)  # type: ignore[operator]
