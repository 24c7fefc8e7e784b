"""Run a cluster task on a microcontroller: SETUP / LOAD / TRAIN / READ over its serial link.

The device trains exactly what a Python worker would for the same task: each epoch visits the
task's samples in ``numpy.random.default_rng(task.seed).permutation`` order (the order
:class:`~eddl.worker.training.TaskRunner` uses), streamed through the device's sample buffer in
whole mini-batches, so every mini-batch and every integer step is the one the numpy reference
takes, and the update the gateway pushes equals, bit for bit, the one a Python worker would
push. Only TIFeD (full network and single-layer) is bridged; see :mod:`eddl.mcu.plan`.

Everything here is blocking serial I/O and runs in a worker thread, one task at a time per
device. Timing is split between the link (SETUP, LOAD, READ) and TRAIN (the kernel plus one
short request), which is what the gateway benchmark reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eddl.learn import tifed
from eddl.mcu.driver import Device
from eddl.mcu.plan import MCU_ALGORITHMS, largest_capacity, tifed_setup
from eddl.mcu.protocol import SetupSpec
from eddl.mcu.session import DeviceModel
from eddl.worker.training import TaskError, TaskResult

__all__ = ["BenchmarkResult", "McuTaskRunner", "benchmark_device"]


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
