"""Few-shot evaluation on held-out devices only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eddl.data.metatasks import TaskSet, character_tasks
from eddl.learn.fewshot import FewShotError, few_shot_evaluate, shots_of
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.metasim import make_model


def _tasks() -> TaskSet:
    return character_tasks("digits", 4, 3, seed=0, n_way=3, samples=6, test=4)


def _evaluate(tasks: TaskSet) -> float:
    model = make_model(tasks)
    split = LayerSplit(model.num_layers, 1)
    theta = split.shared(model.init_params(0))
    opts = MetaOptions.from_hyper("tinymetafed", {"eval_epochs": 3}, model.num_layers)
    result = few_shot_evaluate(
        model,
        split,
        theta,
        tasks.held_out,
        k=2,
        opts=opts,
        seed=1,
        training_ids=tasks.training_ids,
    )
    assert len(result.per_task) == len(tasks.held_out)
    return result.mean


def test_training_devices_data_is_never_read() -> None:
    tasks = _tasks()
    score = _evaluate(tasks)
    poisoned = tuple(
        replace(t, x_train=np.full_like(t.x_train, np.nan), x_test=np.full_like(t.x_test, np.nan))
        for t in tasks.train
    )
    assert _evaluate(replace(tasks, train=poisoned)) == score


def test_a_training_device_is_refused() -> None:
    tasks = _tasks()
    model = make_model(tasks)
    opts = MetaOptions.from_hyper("reptile", {})
    with pytest.raises(FewShotError, match="training devices"):
        few_shot_evaluate(
            model,
            LayerSplit(model.num_layers),
            model.init_params(0),
            tasks.train[:1],
            k=1,
            opts=opts,
            seed=0,
            training_ids=tasks.training_ids,
        )


def test_shots_are_k_per_class() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    idx = shots_of(y, 2, per_class=True, seed=0)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2]
    with pytest.raises(FewShotError):
        shots_of(y, 4, per_class=True, seed=0)
