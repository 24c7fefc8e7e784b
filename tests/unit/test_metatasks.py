"""Seeded device tasks: sine, N-way characters, synthetic presence."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.data import DatasetError
from eddl.data.metatasks import character_tasks, sine_tasks
from eddl.data.presence import presence_tasks


def test_same_seed_same_tasks() -> None:
    a, b = sine_tasks(3, 2, seed=7), sine_tasks(3, 2, seed=7)
    for ta, tb in zip(a.train + a.held_out, b.train + b.held_out, strict=True):
        np.testing.assert_array_equal(ta.y_train, tb.y_train)
    assert sine_tasks(3, 2, seed=8).train[0].description != a.train[0].description


def test_held_out_character_tasks_are_unseen() -> None:
    tasks = character_tasks("digits", 30, 10, seed=0, n_way=5)
    seen = {t.description for t in tasks.train}
    assert all(t.description not in seen for t in tasks.held_out)
    for t in tasks.train + tasks.held_out:
        assert t.x_train.dtype == np.float32 and t.x_train.min() >= 0 and t.x_train.max() <= 1
        assert sorted(set(t.y_train.tolist())) == list(range(5))


def test_held_out_classes_are_disjoint() -> None:
    tasks = character_tasks("digits", 5, 3, seed=1, n_way=3, held_out_classes=4)

    def classes(desc: str) -> set[str]:
        return set(desc.removeprefix("classes [").removesuffix("]").split(", "))

    train = set().union(*(classes(t.description) for t in tasks.train))
    held = set().union(*(classes(t.description) for t in tasks.held_out))
    assert not train & held
    with pytest.raises(DatasetError):
        character_tasks("digits", 5, 3, seed=1, n_way=5, held_out_classes=4)


def test_presence_rooms_have_both_classes() -> None:
    tasks = presence_tasks(4, 2, seed=0, samples=20, test=20)
    assert tasks.num_inputs == 32
    for t in tasks.train + tasks.held_out:
        assert set(t.y_train.tolist()) == {0, 1}
        assert np.isfinite(t.x_train).all()


def test_bad_counts_are_refused() -> None:
    with pytest.raises(DatasetError):
        sine_tasks(0, 1, seed=0)
    with pytest.raises(DatasetError):
        character_tasks("mnist", 2, 1, seed=0)
