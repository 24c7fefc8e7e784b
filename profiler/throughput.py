"""The compute micro-benchmark: the job's own trainer on synthetic data, about one second.

It runs the *real* ``train`` of the job's algorithm (whatever a ``Callable[[], Trainer]``
builds: SGD, L-SGD, TIFeD, ...) on random samples of the job's input width and label range,
so the figure includes everything a task pays per sample: the kernel, shuffling, validation.

How: a short warm-up call; then the call size doubles until one call takes about a tenth of the
budget, so a call's fixed cost weighs as little as in a real task; then calls of that size are
repeated until the budget is spent. The result is the median of the per-call rates of the
calls at that size: one call slowed down by a neighbour's burst on a shared machine does not move
it. Parameters are cloned for every call, so the caller's are untouched and a diverging run on
random data cannot poison the next call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from eddl.profiler.profiles import ThroughputEstimate, ThroughputSource

__all__ = ["BenchmarkResult", "TrainerLike", "measure_throughput", "synthetic_samples"]

_MIN_CALL_SAMPLES = 8
_MAX_CALL_SAMPLES = 1 << 16
_MAX_BUDGET_S = 60.0


class TrainerLike(Protocol):
    """What the benchmark needs of an ``eddl.learn`` trainer."""

    def train(
        self,
        params: Any,
        x: Any,
        y: Any,
        *,
        epochs: int = 1,
        rng: np.random.Generator | None = None,
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """What one micro-benchmark run measured."""

    samples_per_second: float
    call_samples: int
    timed_calls: int
    timed_samples: int
    timed_seconds: float
    measured_at: float

    def to_estimate(self, algorithm: str, model: str) -> ThroughputEstimate:
        return ThroughputEstimate(
            algorithm=algorithm,
            model=model,
            samples_per_second=self.samples_per_second,
            confidence=0.0,
            observations=0,
            source=ThroughputSource.MICROBENCHMARK,
            measured_at=self.measured_at,
        )


def synthetic_samples(
    n: int,
    features: int,
    classes: int,
    dtype: npt.DTypeLike,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random samples shaped like the job's: floats in [0, 1) or integer pixels 0..255,
    with integer labels in ``0..classes-1``."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        x = rng.random((n, features), dtype=np.float64).astype(dt)
    elif dt.kind in "iu":
        x = rng.integers(0, 256, size=(n, features)).astype(dt)
    else:
        raise ValueError(f"samples must be float or integer, got dtype {dt}")
    y = rng.integers(0, classes, size=n).astype(np.int64)
    return x, y


def _check_args(features: int, classes: int, budget_s: float) -> None:
    for name, value, low in (("features", features, 1), ("classes", classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if (
        isinstance(budget_s, bool)
        or not isinstance(budget_s, int | float)
        or not math.isfinite(budget_s)
        or not 0 < budget_s <= _MAX_BUDGET_S
    ):
        raise ValueError(f"budget_s must lie in (0, {_MAX_BUDGET_S}], got {budget_s!r}")


def measure_throughput(
    factory: Callable[[], TrainerLike],
    params: Mapping[str, np.ndarray],
    features: int,
    classes: int,
    dtype: npt.DTypeLike = np.float32,
    budget_s: float = 1.0,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchmarkResult:
    """Training samples per second of ``factory()`` on this machine, within ~``budget_s``.

    ``params`` are the job's initial parameters (never modified); ``features``, ``classes`` and
    ``dtype`` describe its samples. Errors of the trainer (bad params, wrong dtype) propagate
    unchanged, raised by the warm-up call before any timing.
    """
    _check_args(features, classes, budget_s)
    trainer = factory()
    rng = np.random.default_rng(seed)
    pool_x, pool_y = synthetic_samples(_MIN_CALL_SAMPLES, features, classes, dtype, rng)

    def run(n: int) -> float:
        nonlocal pool_x, pool_y
        if pool_x.shape[0] < n:
            pool_x, pool_y = synthetic_samples(n, features, classes, dtype, rng)
        work = {k: np.array(v, copy=True) for k, v in params.items()}
        x, y = pool_x[:n], pool_y[:n]
        t0 = clock()
        trainer.train(work, x, y, epochs=1, rng=rng)
        return clock() - t0

    start = clock()
    deadline = start + budget_s
    run(_MIN_CALL_SAMPLES)  # warm-up: first-call allocations, caches; also validates inputs

    target_call_s = budget_s / 10.0
    n = _MIN_CALL_SAMPLES
    rates: list[float] = []
    timed = 0.0
    samples = 0
    while True:
        seconds = run(n)
        if seconds >= target_call_s or n >= _MAX_CALL_SAMPLES or clock() >= deadline:
            rates.append(n / max(seconds, 1e-9))
            timed += seconds
            samples += n
            break
        n *= 2
    while clock() + seconds <= deadline:
        seconds = run(n)
        rates.append(n / max(seconds, 1e-9))
        timed += seconds
        samples += n
    return BenchmarkResult(
        samples_per_second=float(statistics.median(rates)),
        call_samples=n,
        timed_calls=len(rates),
        timed_samples=samples,
        timed_seconds=timed,
        measured_at=time.time(),
    )
