"""A microcontroller's part of a ``tinymetafed`` or ``reptile`` round, run by its gateway.

The gateway rebuilds the device task's samples from the job (:mod:`eddl.worker.metatask`),
rebuilds the local layers from them in numpy (:func:`~eddl.learn.reconstruction.reconstruct`,
as :func:`~eddl.learn.tinymetafed.device_round` does first), loads the whole model onto the
device, and the device runs the online inner loop (its ``lsgd`` kernel, batch 1; with the job
option ``kernel = "lsgd-q8"`` the gateway quantizes the model as
:class:`~eddl.learn.metaq8.Q8Round` does and the device runs ``lsgd-q8``) and selects
the top-P entries of ``φ − θ`` of the shared layers itself
(:meth:`~eddl.worker.mcu_runner.McuTaskRunner.inner_loop`). TinyMetaFed uploads those records
as they are: with ``values = "int8"`` the device quantises them and the gateway forwards its
int8 records and scales without re-quantising; Reptile selects 100% and uploads
``φ = θ + δ`` densely. A character task's samples reach the device as uint8 pixels
(``round(x · 255)``: the character tasks scale uint8 pixels by 1/255, so this is exact) and
class labels; a presence task's as float32 features and class labels, a sine task's as float32
inputs and regression targets (the SETUP's sample format, :mod:`eddl.mcu.metaplan`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from eddl.learn.algorithms import get_algorithm
from eddl.learn.metaq8 import Q8Round
from eddl.learn.params import Params
from eddl.learn.reconstruction import reconstruct
from eddl.learn.topp import densify
from eddl.mcu.metaplan import meta_fit, meta_plan
from eddl.mcu.plan import offered_algorithms
from eddl.worker.executor import TaskError, TaskResult, TaskSpec
from eddl.worker.metatask import check_meta_task

if TYPE_CHECKING:
    from eddl.worker.mcu_runner import DeviceAlgorithm, McuTaskRunner

__all__ = ["check_mcu_meta_task", "run_mcu_meta_task"]


def check_mcu_meta_task(runner: McuTaskRunner, task: TaskSpec, name: str) -> None:
    """Refuse (:class:`TaskError`) a meta task the device cannot run, before any transfer."""
    job = check_meta_task(task)
    why = meta_fit(
        task.algorithm,
        job.resolved_model(),
        dict(job.config.hyper),
        arena_bytes=runner.info.arena_bytes,
        algorithms=offered_algorithms(runner.info.kernels),
        float_samples=runner.info.float_samples,
    )
    if why is not None:
        raise TaskError(f"{name}: {why}")


def run_mcu_meta_task(
    runner: McuTaskRunner, task: TaskSpec, theta: Mapping[str, np.ndarray]
) -> TaskResult:
    """One device round on the device behind ``runner`` (blocking serial I/O)."""
    job = check_meta_task(task)
    try:
        plan = meta_plan(task.algorithm, job.resolved_model(), dict(job.config.hyper))
    except ValueError as exc:
        raise TaskError(f"task {task.task_id}: {exc}") from exc
    try:
        job.split.check_shared(theta)
    except ValueError as exc:
        raise TaskError(f"task {task.task_id}: {exc}") from exc
    device = job.tasks.train[task.indexes[0]]
    if plan.float_samples:
        x = np.asarray(device.x_train, dtype=np.float32)
    else:
        x = np.rint(device.x_train * np.float32(255.0)).astype(np.uint8)
    opts = job.options
    started = time.perf_counter()
    shared = {n: np.asarray(a, dtype=np.float32) for n, a in theta.items()}
    kernel = opts.kernel
    algo: DeviceAlgorithm = plan  # the float lsgd kernel runs the plan's device model
    if kernel == "lsgd-q8":  # θ_q and its format, exactly as a Python worker quantizes them
        q8 = Q8Round(
            job.model, job.split, shared, device.x_train, device.y_train, opts, seed=task.seed
        )
        fmt = {"weight_frac": list(q8.fmt.weight_frac), "bias_frac": list(q8.fmt.bias_frac)}
        algo = get_algorithm(kernel, {**plan.model, "format": fmt}, plan.hyper)
        full: Params = q8.theta_q
    else:
        full = reconstruct(
            job.model,
            job.split,
            shared,
            device.x_train,
            device.y_train,
            lr=opts.lr,
            epochs=opts.recon_epochs,
            seed=task.seed,
        )
    result = runner.inner_loop(
        kernel,
        algo,
        full,
        x,
        device.y_train,
        shared_layers=plan.shared_layers,
        top_p=opts.top_p if opts.sparse else 100.0,
        epochs=opts.inner_epochs,
        seed=task.seed,
        values=opts.values if opts.sparse else "float32",
    )
    busy = time.perf_counter() - started
    params: Params = {}
    if not opts.sparse:  # reptile: φ = θ + δ, every entry selected
        delta = densify(result.selected)
        params = {
            n: (a + delta.get(n, np.zeros_like(a))).astype(np.float32) for n, a in shared.items()
        }
    return TaskResult(
        params=params,
        samples=len(device.x_train),  # the device's samples weigh its update, as on a worker
        steps=result.samples,
        train_seconds=busy,
        busy_seconds=busy,
        state_bytes=0,
        kernel_ticks=result.kernel_ticks,
        sparse=result.selected if opts.sparse else None,
        value_dtype=opts.values,
        records=result.records if opts.sparse else None,
    )
