"""Run a cluster task on a microcontroller: SETUP / LOAD / TRAIN / READ over its serial link.

The device trains exactly what a Python worker would for the same task: each epoch visits the
task's samples in ``numpy.random.default_rng(task.seed).permutation`` order (the order
:class:`~eddl.worker.training.TaskRunner` uses), streamed through the device's sample buffer in
whole mini-batches, so every mini-batch and every integer step is the one the numpy reference
takes, and the update the gateway pushes equals, bit for bit, the one a Python worker would
push. Only TIFeD (full network and single-layer) is bridged; see :mod:`eddl.mcu.plan`.

:class:`McuTaskRunner` is blocking serial I/O; :class:`McuExecutor`, the device's
:class:`~eddl.worker.executor.Executor`, runs it in a worker thread, one task at a time per
device, and loses the device when its link fails. Timing is split between the link (SETUP,
LOAD, READ) and TRAIN (the kernel plus one short request), which is what the gateway benchmark
reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import serial

from eddl.learn import tifed
from eddl.learn.params import Params
from eddl.mcu.driver import Device, McuError
from eddl.mcu.plan import MCU_ALGORITHMS, largest_capacity, tifed_setup
from eddl.mcu.protocol import ProtocolError, SetupSpec
from eddl.mcu.session import DeviceModel
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.training import TaskRunner

__all__ = [
    "LINK_FAILURES",
    "BenchmarkResult",
    "DeviceLostError",
    "McuCounters",
    "McuExecutor",
    "McuTaskRunner",
    "benchmark_device",
]

# What a dying link raises: the driver's typed errors, pyserial's, the OS's.
LINK_FAILURES = (McuError, ProtocolError, serial.SerialException, OSError)


class DeviceLostError(TaskError):
    """The device stopped answering during a task; its node leaves the cluster."""


@dataclass
class McuCounters:
    """What one device did since its node joined (kept in memory; the logs carry each task)."""

    tasks: int = 0
    samples: int = 0
    busy_seconds: float = 0.0
    link_seconds: float = 0.0
    train_seconds: float = 0.0
    kernel_ticks: int = 0
    verified: int = 0  # tasks checked against the numpy reference (``mcu_verify``)
    mismatches: int = 0


@dataclass(frozen=True)
class BenchmarkResult:
    """What the gateway measures on a device before it joins: TIFeD on a small model."""

    model: str  # "tifed 64-32-10"
    ticks_per_sample: float
    samples_per_second: float  # wall rate of LOAD + TRAIN per sample through this link
    link_bytes_per_second: float  # payload rate of the sample LOAD


BENCH_SIZES = (64, 32, 10)


def benchmark_device(dev: Device, *, max_buffer: int, timeout: float) -> BenchmarkResult | None:
    """Time one buffer of TIFeD training on random samples (None: the model does not fit).

    The device's arena is reset by the next SETUP, so this leaves nothing behind that a task
    could see.
    """
    info = dev.info
    if info is None or "tifed" not in info.kernels:
        return None
    batch = 25
    cap = largest_capacity(BENCH_SIZES, batch, info.arena_bytes, min(max_buffer, 100))
    if cap == 0:
        return None
    model = DeviceModel(dev, tifed_setup(BENCH_SIZES, batch, cap))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(cap, BENCH_SIZES[0]), dtype=np.uint8)
    y = rng.integers(0, BENCH_SIZES[-1], size=cap, dtype=np.uint8)
    started = time.perf_counter()
    model.load_samples(x, y)
    loaded = time.perf_counter()
    done, ticks = dev.train(cap, batch=batch, lr_inv=2048, timeout=timeout)
    trained = time.perf_counter()
    return BenchmarkResult(
        model="tifed " + "-".join(map(str, BENCH_SIZES)),
        ticks_per_sample=ticks / max(1, done),
        samples_per_second=done / max(trained - started, 1e-9),
        link_bytes_per_second=(x.nbytes + y.nbytes) / max(loaded - started, 1e-9),
    )


class McuTaskRunner:
    """Translates tasks into device commands for one device."""

    def __init__(self, device: Device, *, max_buffer: int, train_timeout: float) -> None:
        if device.info is None:
            raise TaskError("the device has not said HELLO")
        self.device = device
        self.info = device.info
        self.max_buffer = max_buffer
        self.train_timeout = train_timeout
        self._model: DeviceModel | None = None
        self._feedback_key: tuple[Any, ...] | None = None

    def _prepare(self, config: tifed.TifedConfig) -> DeviceModel:
        """SETUP (and ship the feedback matrices) when the model changes; else reuse it."""
        cap = largest_capacity(
            config.sizes, config.batch_size, self.info.arena_bytes, self.max_buffer
        )
        if cap == 0:
            shape = "-".join(map(str, config.sizes))
            raise TaskError(
                f"tifed {shape} with mini-batches of {config.batch_size} does not fit the "
                f"device's {self.info.arena_bytes}-byte arena"
            )
        spec: SetupSpec = tifed_setup(config.sizes, config.batch_size, cap)
        key = (spec, config.feedback_seed, config.target, config.act_shift)
        if self._model is None or self._feedback_key != key:
            self._model = None  # a failed SETUP leaves no usable model behind
            model = DeviceModel(self.device, spec)
            model.load_feedback(tifed.feedback_matrices(config))
            self._model, self._feedback_key = model, key
        return self._model

    def run(
        self,
        algorithm: str,
        config: tifed.TifedConfig,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        layer: int,
        seed: int,
    ) -> TaskResult:
        """Train on the device and read the update back (all layers, or the task's layer)."""
        if algorithm not in MCU_ALGORITHMS:
            raise TaskError(f"a microcontroller runs {', '.join(MCU_ALGORITHMS)}, not {algorithm}")
        if epochs < 1:
            raise TaskError(f"task asks for {epochs} epochs")
        single = algorithm == "tifed-single"
        if single != (layer >= 0) or layer >= len(config.sizes) - 1:
            raise TaskError(f"{algorithm} cannot train layer {layer}")
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise TaskError(f"task samples have shapes {x.shape} and {y.shape}")
        started = time.perf_counter()
        model = self._prepare(config)
        model.load_params(dict(params))
        link = fixed = time.perf_counter() - started
        train = 0.0
        ticks = steps = 0
        n = int(x.shape[0])
        cap = model.spec.capacity
        rng = np.random.default_rng(seed)
        for _ in range(epochs):
            order = rng.permutation(n)
            for first in range(0, n, cap):
                rows = order[first : first + cap]
                t0 = time.perf_counter()
                model.load_samples(x[rows], y[rows])
                t1 = time.perf_counter()
                _, t = self.device.train(
                    len(rows),
                    batch=config.batch_size,
                    layer=None if layer < 0 else layer,
                    lr_inv=config.lr_inv,
                    timeout=self.train_timeout,
                )
                train += time.perf_counter() - t1
                link += t1 - t0
                ticks += t
                steps += -(-len(rows) // config.batch_size)
        t0 = time.perf_counter()
        names = None if layer < 0 else [f"W{layer}", f"b{layer}"]
        update = model.read_params(names)
        link += time.perf_counter() - t0
        fixed += time.perf_counter() - t0
        return TaskResult(
            params=update,
            samples=n * epochs,
            steps=steps,
            train_seconds=train,
            busy_seconds=time.perf_counter() - started,
            state_bytes=model.arena_used,
            link_seconds=link,
            overhead_seconds=fixed,
            kernel_ticks=ticks,
        )


class McuExecutor(Executor):
    """A microcontroller's executor: each task becomes SETUP / LOAD / TRAIN / READ on the device.

    A link failure, or with ``verify`` an update that differs from the numpy reference, loses
    the device: :attr:`lost` says why, ``on_lost`` is called once (the gateway's node then
    leaves the cluster) and every later task is refused.
    """

    def __init__(
        self,
        device: Device,
        *,
        max_buffer: int,
        train_timeout: float,
        verify: bool = False,
        name: str = "the device",
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.device = device
        self.runner = McuTaskRunner(device, max_buffer=max_buffer, train_timeout=train_timeout)
        # Parses every task's algorithm as a Python worker would, and is the numpy reference.
        self.reference = TaskRunner()
        self.verify = verify
        self.name = name
        self.counters = McuCounters()
        self.lost: str | None = None
        self._on_lost = on_lost
        self._device_lock = asyncio.Lock()  # one conversation with the device at a time

    def check(self, task: TaskSpec) -> None:
        if task.algorithm not in MCU_ALGORITHMS:
            offered = ", ".join(MCU_ALGORITHMS)
            raise TaskError(f"{self.name} runs {offered}, not {task.algorithm}")
        self.reference.algorithm(task.algorithm, task.model_json, task.hyper_json)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        algo = self.reference.algorithm(task.algorithm, task.model_json, task.hyper_json)
        async with self._device_lock:
            if self.lost:
                raise DeviceLostError(self.lost)
            try:
                result = await asyncio.to_thread(
                    self.runner.run,
                    task.algorithm,
                    algo.config,
                    params,
                    x,
                    y,
                    epochs=task.epochs,
                    layer=task.layer,
                    seed=task.seed,
                )
            except LINK_FAILURES as exc:
                self._lose(f"{type(exc).__name__}: {exc}")
                raise DeviceLostError(f"device lost during task {task.task_id}: {exc}") from exc
        if self.verify:
            await self._verify(task, algo, params, x, y, result)
        c = self.counters
        c.tasks += 1
        c.samples += result.samples
        c.busy_seconds += result.busy_seconds
        c.link_seconds += result.link_seconds
        c.train_seconds += result.train_seconds
        c.kernel_ticks += result.kernel_ticks
        return result

    async def check_device(self) -> None:
        """Lose the device if it does not answer STATS (skipped while a task runs: its frames
        prove the device answers)."""
        if self._device_lock.locked() or self.lost:
            return
        async with self._device_lock:
            try:
                await asyncio.to_thread(self.device.stats)
            except LINK_FAILURES as exc:
                self._lose(f"no answer to STATS: {exc}")

    async def _verify(
        self,
        task: TaskSpec,
        algo: Any,
        params: Params,
        x: np.ndarray,
        y: np.ndarray,
        result: TaskResult,
    ) -> None:
        """Train the task again with the numpy reference; a device that differs is faulty."""
        reference = await self.reference.run(
            algo, params, x, y, epochs=task.epochs, layer=task.layer, seed=task.seed
        )
        same = sorted(reference.params) == sorted(result.params) and all(
            np.array_equal(reference.params[k], result.params[k]) for k in reference.params
        )
        self.counters.verified += 1
        if not same:
            self.counters.mismatches += 1
            self._lose("its update differs from the numpy reference")
            raise DeviceLostError(f"task {task.task_id}: the device's update is wrong")

    def _lose(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
            if self._on_lost is not None:
                self._on_lost(reason)
