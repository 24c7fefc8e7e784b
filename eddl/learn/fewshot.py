"""Few-shot evaluation: how well a meta-model serves devices it has never seen.

Each held-out device takes ``k`` shots from its own training samples (``k`` per class for a
classifier, ``k`` samples for a regressor, picked by a seeded draw), fine-tunes the meta-model
on them (:func:`~eddl.learn.tinymetafed.fine_tune`) and is scored on its own test samples.
The result is the mean over devices of accuracy (or MSE).

The evaluation reads only the tasks it is given and refuses any whose id is one of
``training_ids``: no training device's data can leak into the score. With ``theta=None`` it is
the baseline that fine-tunes a fresh random model on the same shots (training from scratch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from eddl.learn.metamodel import MetaModel
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.tinymetafed import fine_tune

__all__ = ["FewShotError", "FewShotResult", "FewShotTask", "few_shot_evaluate", "shots_of"]


class FewShotError(ValueError):
    """A held-out task is a training task, or has too few samples for ``k`` shots."""


class FewShotTask(Protocol):
    """A device's data: ``x_*`` float32 ``(n, in)``, ``y_*`` labels or float32 targets."""

    @property
    def task_id(self) -> int: ...
    @property
    def x_train(self) -> np.ndarray: ...
    @property
    def y_train(self) -> np.ndarray: ...
    @property
    def x_test(self) -> np.ndarray: ...
    @property
    def y_test(self) -> np.ndarray: ...


@dataclass(frozen=True)
class FewShotResult:
    k: int
    metric: str
    mean: float
    per_task: tuple[float, ...]


def shots_of(y: np.ndarray, k: int, *, per_class: bool, seed: int) -> np.ndarray:
    """Indexes of ``k`` shots (``k`` per class when ``per_class``), sorted."""
    rng = np.random.default_rng(seed)
    if not per_class:
        if len(y) < k:
            raise FewShotError(f"{k} shots asked from {len(y)} samples")
        return np.sort(rng.permutation(len(y))[:k])
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < k:
            raise FewShotError(f"{k} shots asked from {len(members)} samples of class {c}")
        picked.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(picked))


def few_shot_evaluate(
    model: MetaModel,
    split: LayerSplit,
    theta: Mapping[str, np.ndarray] | None,
    tasks: Sequence[FewShotTask],
    *,
    k: int,
    opts: MetaOptions,
    seed: int,
    training_ids: Collection[int],
) -> FewShotResult:
    """Fine-tune ``θ`` on ``k`` shots of each task and score it on the task's test samples.

    ``theta=None`` fine-tunes a fresh random model instead (training from scratch).
    """
    if not tasks:
        raise FewShotError("no held-out task to evaluate on")
    leaked = sorted({t.task_id for t in tasks} & set(training_ids))
    if leaked:
        raise FewShotError(f"task(s) {leaked} are training devices; few-shot needs unseen ones")
    scores = []
    per_class = model.metric == "accuracy"
    for task in tasks:
        tseed = seed * 1_000_003 + task.task_id
        idx = shots_of(task.y_train, k, per_class=per_class, seed=tseed)
        x, y = task.x_train[idx], task.y_train[idx]
        if theta is None:  # scratch: every layer fresh from the seed (Glorot, output too)
            base = model.init_params(tseed)
            full = fine_tune(model, LayerSplit(model.num_layers), base, x, y, opts, seed=tseed)
        else:
            full = fine_tune(model, split, theta, x, y, opts, seed=tseed)
        scores.append(model.score(full, task.x_test, task.y_test))
    return FewShotResult(k, model.metric, float(np.mean(scores)), tuple(scores))
