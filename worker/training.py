"""Run one task with ``eddl.learn``: train a copy of the global model on the task's samples.

:class:`NumpyExecutor` is the Python worker's :class:`~eddl.worker.executor.Executor`;
:class:`TaskRunner` is the part a gateway reuses for its numpy reference.

Training is CPU-bound numpy work, so it runs in a thread (``asyncio.to_thread``, or the pool
given to :class:`TaskRunner`) and the event loop keeps sending heartbeats meanwhile.
``throttle`` F makes the worker behave F times slower:
after training n samples it idles for (F - 1)·n·p, p being the median CPU time per sample of the
training thread over its recent tasks. This is how heterogeneous clusters are emulated on one
machine, so p is CPU time, not wall time: time spent waiting for a core that another emulated
device holds is not work this device does, and multiplied by F it would make co-located workers
slow each other down F-fold, most of all when they start tasks together (sync rounds). Scaling
the last task's own time instead of a median would likewise multiply every hiccup by F. The
CPU clock sees the training thread only, so a worker that is throttled should run its BLAS
single-threaded (``eddl local`` starts its workers so).
"""

from __future__ import annotations

import asyncio
import functools
import json
import statistics
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Executor as ThreadPool
from typing import Any

import numpy as np

from eddl.learn.params import Params, clone
from eddl.metajob import is_meta
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.metatask import check_meta_task, run_meta_task

__all__ = ["NumpyExecutor", "TaskError", "TaskResult", "TaskRunner"]


def _load_json(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskError(f"task {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise TaskError(f"task {what} must be a JSON object")
    return value


class TaskRunner:
    """Trains tasks in ``pool`` (the event loop's default executor when None): many runners
    on one loop (the fleet simulator's devices) can share a pool of bounded size."""

    def __init__(self, throttle: float = 1.0, pool: ThreadPool | None = None) -> None:
        if throttle < 1.0:
            raise TaskError(f"throttle {throttle} must be >= 1")
        self.throttle = throttle
        self.pool = pool
        self._per_sample: deque[float] = deque(maxlen=16)
        self._algorithms: dict[tuple[str, str, str], Any] = {}
        self._warm: set[int] = set()  # algorithms (cached above, so ids are stable) warmed up

    def algorithm(self, name: str, model_json: str, hyper_json: str) -> Any:
        key = (name, model_json, hyper_json)
        algo = self._algorithms.get(key)
        if algo is None:
            from eddl.learn.algorithms import get_algorithm  # the math, loaded on first task

            model = _load_json(model_json, "model")
            hyper = _load_json(hyper_json, "hyper-parameters")
            try:
                algo = get_algorithm(name, model, hyper)
            except (KeyError, ValueError, TypeError) as exc:
                raise TaskError(f"algorithm {name!r}: {exc}") from exc
            self._algorithms[key] = algo
        return algo

    def _train(
        self,
        algo: Any,
        params: Mapping[str, np.ndarray],
        x_u8: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        layer: int,
        seed: int,
    ) -> tuple[Params, Any, float, float]:
        local = clone(params)
        trainer = algo.make_trainer(None if layer < 0 else layer)
        x = algo.prepare_inputs(x_u8)
        if id(algo) not in self._warm:
            # The first call of a kernel pays one-off costs (imports, allocations, caches);
            # timed, it would set the throttle's per-sample time F x too high for a while.
            # A trainer of its own: a kernel with state (lsgd-q8's rounding counter) must start
            # the task as a fresh one would.
            algo.make_trainer(None if layer < 0 else layer).train(
                clone(params), x[:16], y[:16], epochs=1
            )
            self._warm.add(id(algo))
        rng = np.random.default_rng(seed)
        start, cpu = time.perf_counter(), time.thread_time()
        stats = trainer.train(local, x, y, epochs=epochs, rng=rng)
        return local, stats, time.perf_counter() - start, time.thread_time() - cpu

    async def run(
        self,
        algo: Any,
        params: Mapping[str, np.ndarray],
        x_u8: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int = 1,
        layer: int = -1,
        seed: int = 0,
    ) -> TaskResult:
        if epochs < 1:
            raise TaskError(f"task asks for {epochs} epochs")
        train = functools.partial(
            self._train, algo, params, x_u8, y, epochs=epochs, layer=layer, seed=seed
        )
        if self.pool is None:
            trained, stats, seconds, cpu = await asyncio.to_thread(train)
        else:
            loop = asyncio.get_running_loop()
            trained, stats, seconds, cpu = await loop.run_in_executor(self.pool, train)
        samples = max(1, int(stats.samples))
        # A platform whose thread clock cannot see a short task falls back to wall time.
        self._per_sample.append((cpu if cpu > 0 else seconds) / samples)
        idle = (self.throttle - 1.0) * samples * statistics.median(self._per_sample)
        if idle > 0:
            await asyncio.sleep(idle)
        if layer >= 0:
            names = {f"W{layer}", f"b{layer}"}
            trained = {k: v for k, v in trained.items() if k in names}
        return TaskResult(
            params=trained,
            samples=int(stats.samples),
            steps=int(stats.steps),
            train_seconds=seconds,
            busy_seconds=seconds + idle,
            state_bytes=int(getattr(stats, "state_bytes", 0)),
        )


class NumpyExecutor(Executor):
    """The Python worker's executor: ``eddl.learn`` on this host, slowed by ``throttle``."""

    def __init__(self, throttle: float = 1.0, pool: ThreadPool | None = None) -> None:
        self.runner = TaskRunner(throttle, pool)

    def wants_samples(self, task: TaskSpec) -> bool:
        return not is_meta(task.algorithm)

    def check(self, task: TaskSpec) -> None:
        if is_meta(task.algorithm):
            check_meta_task(task)
            return
        self.runner.algorithm(task.algorithm, task.model_json, task.hyper_json)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        if is_meta(task.algorithm):
            return await asyncio.to_thread(run_meta_task, task, params)
        algo = self.runner.algorithm(task.algorithm, task.model_json, task.hyper_json)
        return await self.runner.run(
            algo, params, x, y, epochs=task.epochs, layer=task.layer, seed=task.seed
        )
