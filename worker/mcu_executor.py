"""The device's executor: a microcontroller runs a cluster task as its Python worker would.

:class:`McuExecutor`, the device's :class:`~eddl.worker.executor.Executor`, runs each task's
SETUP / LOAD / TRAIN / READ (:class:`~eddl.worker.mcu_runner.McuTaskRunner`, blocking serial
I/O) in a worker thread, one task at a time per device; a meta task's device round goes to
:mod:`eddl.worker.mcu_meta`. It loses the device when its link fails (:data:`LINK_FAILURES`)
or, with ``verify``, when an update differs from the numpy reference, and counts what the
device did (:class:`McuCounters`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import serial

from eddl.learn.params import Params
from eddl.mcu.driver import Device, McuError
from eddl.mcu.plan import offered_algorithms
from eddl.mcu.protocol import ProtocolError
from eddl.metajob import is_meta
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.mcu_meta import check_mcu_meta_task, run_mcu_meta_task
from eddl.worker.mcu_runner import McuTaskRunner
from eddl.worker.training import TaskRunner

__all__ = ["LINK_FAILURES", "DeviceLostError", "McuCounters", "McuExecutor"]


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

    def wants_samples(self, task: TaskSpec) -> bool:
        return not is_meta(task.algorithm)  # a meta device task holds its own data

    def check(self, task: TaskSpec) -> None:
        if is_meta(task.algorithm):
            check_mcu_meta_task(self.runner, task, self.name)
            return
        offered = offered_algorithms(self.runner.info.kernels)
        if task.algorithm not in offered:
            raise TaskError(f"{self.name} runs {', '.join(offered)}, not {task.algorithm}")
        self.reference.algorithm(task.algorithm, task.model_json, task.hyper_json)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        meta = is_meta(task.algorithm)
        algo = (
            None
            if meta
            else self.reference.algorithm(task.algorithm, task.model_json, task.hyper_json)
        )
        async with self._device_lock:
            if self.lost:
                raise DeviceLostError(self.lost)
            try:
                if algo is None:  # TinyMetaFed / Reptile: the inner loop on the device
                    result = await asyncio.to_thread(run_mcu_meta_task, self.runner, task, params)
                else:
                    result = await asyncio.to_thread(
                        self.runner.run,
                        task.algorithm,
                        algo,
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
        if self.verify and algo is not None:
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
        # Integer kernels must match bit for bit, float L-SGD to the firmware's float tolerance.
        same = sorted(reference.params) == sorted(result.params) and all(
            np.array_equal(reference.params[k], result.params[k])
            if reference.params[k].dtype.kind in "iu"
            else np.allclose(reference.params[k], result.params[k], rtol=1e-4, atol=1e-5)
            for k in reference.params
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
