"""Meta-learning tasks, one per device, made offline from a seed.

Every generator returns a :class:`TaskSet`: ``train`` devices (the federation learns from
them) and ``held_out`` devices (tasks never seen in training, for few-shot evaluation), each a
:class:`DeviceTask` with float32 inputs and its own train/test samples. The same seed gives
the same tasks.

* :func:`sine_tasks`: regression of ``y = A·sin(x + φ)``, ``A ~ U[0.1, 5]``, ``φ ~ U[0, π]``
  per device, ``x ~ U[-5, 5]`` (the classic MAML/Reptile setting). Targets ``(n, 1)`` float32.
* :func:`character_tasks`: N-way handwritten digits from ``digits`` or ``mnist-10k``. A task
  is N distinct classes with its own label permutation (class ``c_j`` is label ``j``).
  Training devices draw their images from the dataset's train split; held-out devices draw
  from its test split, so their images were never seen in training, and their (classes,
  permutation) pair is one no training device holds. With ``held_out_classes = h``, the last
  ``h`` classes of a seeded class order are reserved for held-out tasks (unseen classes;
  then N must be at most ``h`` and at most ``10 - h``). Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eddl.data.datasets import DatasetError, load_dataset

__all__ = ["DeviceTask", "TaskSet", "character_tasks", "sine_tasks"]


@dataclass(frozen=True)
class DeviceTask:
    task_id: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str = ""


@dataclass(frozen=True)
class TaskSet:
    name: str
    train: tuple[DeviceTask, ...]
    held_out: tuple[DeviceTask, ...]
    num_inputs: int
    num_outputs: int
    classification: bool

    @property
    def training_ids(self) -> frozenset[int]:
        return frozenset(t.task_id for t in self.train)


def _check_counts(train: int, held_out: int, samples: int, test: int) -> None:
    for name, value in (("train", train), ("held_out", held_out), ("samples", samples)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise DatasetError(f"{name} must be an int in 1..100000, got {value!r}")
    if isinstance(test, bool) or not isinstance(test, int) or not 1 <= test <= 100_000:
        raise DatasetError(f"test samples must be an int in 1..100000, got {test!r}")


def sine_tasks(
    train: int, held_out: int, *, seed: int, samples: int = 20, test: int = 50
) -> TaskSet:
    """Sine-wave devices (see the module docstring); ``samples`` training points each."""
    _check_counts(train, held_out, samples, test)
    tasks = []
    for tid in range(train + held_out):
        rng = np.random.default_rng([seed, 0x5E, tid])
        amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, math.pi)
        xs = rng.uniform(-5.0, 5.0, size=(samples + test, 1)).astype(np.float32)
        ys = (amp * np.sin(xs + phase)).astype(np.float32)
        tasks.append(
            DeviceTask(
                tid,
                xs[:samples],
                ys[:samples],
                xs[samples:],
                ys[samples:],
                f"A={amp:.2f} phase={phase:.2f}",
            )
        )
    return TaskSet("sine", tuple(tasks[:train]), tuple(tasks[train:]), 1, 1, False)


def _draw(
    x: np.ndarray, y: np.ndarray, classes: np.ndarray, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    picked, labels = [], []
    for label, c in enumerate(classes):
        members = np.flatnonzero(y == c)
        take = rng.choice(members, size=min(per_class, len(members)), replace=False)
        picked.append(take)
        labels.append(np.full(len(take), label, dtype=np.int64))
    idx = np.concatenate(picked)
    order = rng.permutation(len(idx))
    return (x[idx[order]].astype(np.float32) / np.float32(255.0)), np.concatenate(labels)[order]


def character_tasks(
    dataset: str,
    train: int,
    held_out: int,
    *,
    seed: int,
    n_way: int = 5,
    samples: int = 10,
    test: int = 10,
    held_out_classes: int = 0,
) -> TaskSet:
    """N-way character devices (see the module docstring); ``samples``/``test`` per class."""
    _check_counts(train, held_out, samples, test)
    if dataset not in ("digits", "mnist-10k"):
        raise DatasetError(f"character tasks come from digits or mnist-10k, not {dataset!r}")
    data = load_dataset(dataset)
    order = np.random.default_rng([seed, 0xC1A55]).permutation(data.num_classes)
    h = held_out_classes
    if not 0 <= h < data.num_classes:
        raise DatasetError(f"held_out_classes must be in 0..{data.num_classes - 1}, got {h}")
    train_pool = order[: data.num_classes - h] if h else order
    test_pool = order[data.num_classes - h :] if h else order
    if not 2 <= n_way <= min(len(train_pool), len(test_pool)):
        raise DatasetError(
            f"n_way must be in 2..{min(len(train_pool), len(test_pool))} with "
            f"{h} held-out classes, got {n_way}"
        )
    seen: set[tuple[int, ...]] = set()
    tasks: list[DeviceTask] = []
    for tid in range(train + held_out):
        rng = np.random.default_rng([seed, 0xC4A5, tid])
        is_train = tid < train
        pool = train_pool if is_train else test_pool
        for _ in range(1000):  # bounded: a held-out pair must differ from every training one
            classes = rng.permutation(pool)[:n_way]
            if is_train or tuple(classes) not in seen:
                break
        else:
            raise DatasetError("could not draw a held-out task unlike every training task")
        if is_train:
            seen.add(tuple(int(c) for c in classes))
            xs, ys = data.x_train, data.y_train
        else:
            xs, ys = data.x_test, data.y_test
        x_tr, y_tr = _draw(xs, ys, classes, samples + test, rng)
        n_tr = np.zeros(len(y_tr), dtype=bool)
        for label in range(n_way):  # the first `samples` of each class train, the rest test
            n_tr[np.flatnonzero(y_tr == label)[:samples]] = True
        tasks.append(
            DeviceTask(
                tid,
                x_tr[n_tr],
                y_tr[n_tr],
                x_tr[~n_tr],
                y_tr[~n_tr],
                f"classes {[int(c) for c in classes]}",
            )
        )
    name = f"characters-{dataset}"
    return TaskSet(name, tuple(tasks[:train]), tuple(tasks[train:]), data.num_features, n_way, True)
