"""Helpers shared by the leader's unit tests: a hand-driven clock and small job runtimes.

The runtimes are real (numpy parameters, a real evaluation), only tiny: a softmax-regression
model on a synthetic, linearly separable problem, so a few versions of FedAvg really learn.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eddl.leader.jobs import JobSpec
from eddl.leader.runtime import JobRuntime
from eddl.learn.params import Params

__test__ = False

FEATURES, CLASSES, TRAIN = 6, 3, 240


class Clock:
    """Leader time, moved by hand: tests never sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(CLASSES, FEATURES))
    y = np.arange(TRAIN) % CLASSES
    x = centres[y] + rng.normal(0, 0.5, size=(TRAIN, FEATURES))
    return x, y.astype(np.int64)


X, Y = _data()


def accuracy(params: Params) -> float:
    logits = X @ params["W0"].astype(np.float64) + params["b0"].astype(np.float64)
    return float((logits.argmax(axis=1) == Y).mean())


def train(params: Params, indexes: np.ndarray, lr: float = 0.1, steps: int = 5) -> Params:
    """Real local training: a few full-batch softmax-regression steps on ``indexes``."""
    w = params["W0"].astype(np.float64)
    b = params["b0"].astype(np.float64)
    x, y = X[indexes], Y[indexes]
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        w -= lr * x.T @ p / len(y)
        b -= lr * p.mean(axis=0)
    return {"W0": w.astype(np.float32), "b0": b.astype(np.float32)}


def float_runtime(spec: JobSpec | None = None) -> JobRuntime:
    params = {"W0": np.zeros((FEATURES, CLASSES), np.float32), "b0": np.zeros(CLASSES, np.float32)}
    return JobRuntime(
        initial_params=params,
        num_train=TRAIN,
        evaluate=accuracy,
        samples=lambda idx: (X[idx].astype(np.uint8), Y[idx]),
    )


def layered_runtime(spec: JobSpec | None = None) -> JobRuntime:
    """A two-layer integer model in single-layer mode (TIFeD-style: integer mean per layer)."""
    params = {
        "W0": np.zeros((FEATURES, 4), np.int32),
        "b0": np.zeros(4, np.int32),
        "W1": np.zeros((4, CLASSES), np.int32),
        "b1": np.zeros(CLASSES, np.int32),
    }
    return JobRuntime(
        initial_params=params, num_train=TRAIN, sync_rule="intmean", num_layers=2, single_layer=True
    )


def spec(**overrides: object) -> JobSpec:
    base: dict[str, object] = {
        "job_id": "job1",
        "rounds": 50,
        "aggregation": "sync",
        "task_seconds": 1.0,
        "round_deadline": 5.0,
        "min_task_samples": 1,
        "default_task_samples": 20,
        "max_task_samples": 240,
    }
    base.update(overrides)
    return JobSpec.from_mapping(base)


RuntimeFn = Callable[[JobSpec], JobRuntime]
