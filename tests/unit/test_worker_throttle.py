"""TaskRunner's throttle: F times the training thread's CPU time, not its wall time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from eddl.worker.training import TaskError, TaskRunner


class _Trainer:
    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work

    def train(self, params: Any, x: np.ndarray, y: np.ndarray, **_: Any) -> SimpleNamespace:
        self.work()
        return SimpleNamespace(samples=len(x), steps=1, state_bytes=0)


class _Algo:
    """Stands in for an eddl.learn algorithm: its 'training' is ``work``."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work

    def make_trainer(self, layer: int | None = None) -> _Trainer:
        return _Trainer(self.work)

    def prepare_inputs(self, x: np.ndarray) -> np.ndarray:
        return x


def _spin(seconds: float) -> Callable[[], None]:
    def work() -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    return work


def _run(runner: TaskRunner, work: Callable[[], None]) -> Any:
    params = {"W0": np.zeros((2, 2), np.float32)}
    x = np.zeros((32, 2), np.uint8)
    y = np.zeros(32, np.int64)
    return asyncio.run(runner.run(_Algo(work), params, x, y))


def test_time_off_the_cpu_is_not_multiplied() -> None:
    # A task that waits (another process holds the core) is not work the emulated device does.
    result = _run(TaskRunner(throttle=4.0), lambda: time.sleep(0.05))
    idle = result.busy_seconds - result.train_seconds
    assert result.train_seconds >= 0.05
    assert idle < result.train_seconds  # wall-time scaling would idle 3 x 0.05 s


def test_cpu_time_is_multiplied() -> None:
    result = _run(TaskRunner(throttle=4.0), _spin(0.03))
    idle = result.busy_seconds - result.train_seconds
    # (F - 1) x 0.03 s of CPU = 0.09 s; the wall time can only exceed the CPU time.
    assert idle == pytest.approx(0.09, rel=0.25)


def test_unthrottled_runner_never_idles() -> None:
    result = _run(TaskRunner(), _spin(0.01))
    assert result.busy_seconds == result.train_seconds


def test_throttle_below_one_is_refused() -> None:
    with pytest.raises(TaskError, match="must be >= 1"):
        TaskRunner(throttle=0.5)
