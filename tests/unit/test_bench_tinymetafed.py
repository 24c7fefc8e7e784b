"""bench.tinymetafed's grid pick: a point whose training diverges is skipped, not fatal."""

from __future__ import annotations

import pytest

from bench.tinymetafed import GRID, METHODS, Draws, _pick
from eddl.learn.trainer import DivergedError


def _draws() -> Draws:
    return Draws(rounds=4, test=(0,), val=(100,), marks=())


def test_the_grid_is_the_same_for_every_method_and_holds_the_old_points() -> None:
    points = {(p["lr_scale"], p["inner_epochs"]) for p in GRID}
    assert len(points) == len(GRID) == 12
    assert {(1, 1), (2, 1), (1, 5), (2, 5)} <= points
    assert {e for _, e in points} == {1, 5, 20}


def test_a_diverging_point_is_not_picked() -> None:
    algo, fixed = METHODS["fedavg+ft"]
    # x0.25 .. x2: 0.05 .. 0.4; from 0.1 up the regressor diverges in these 4 rounds.
    case = {"task": "sine", "samples": 10, "lr": 0.2}
    picked = _pick(case, _draws(), algo, fixed, "mse")
    assert picked["lr"] == pytest.approx(0.05)


def test_a_grid_that_diverges_everywhere_is_an_error() -> None:
    algo, fixed = METHODS["fedavg+ft"]
    case = {"task": "sine", "samples": 10, "lr": 1.0}
    with pytest.raises(DivergedError, match="every point"):
        _pick(case, _draws(), algo, fixed, "mse")
