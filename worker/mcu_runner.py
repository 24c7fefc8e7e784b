"""Run a cluster task on a microcontroller: SETUP / LOAD / TRAIN / READ over its serial link.

The device trains exactly what a Python worker would for the same task: each epoch visits the
task's samples in ``numpy.random.default_rng(task.seed).permutation`` order (the order
:class:`~eddl.worker.training.TaskRunner` uses), streamed through the device's sample buffer in
whole mini-batches, so every mini-batch and every step is the one the numpy reference takes.
TIFeD (full network and single-layer) and lsgd-q8 updates equal, bit for bit, a Python
worker's (lsgd-q8 rounds with seed 0 and a counter from 0, as the worker's fresh trainer does);
float lsgd agrees to float tolerance. See :mod:`eddl.mcu.plan`.

:meth:`McuTaskRunner.inner_loop` is a TinyMetaFed device's part of a round on the device: the
meta-model in, one online pass (batch 1) over the samples, then only the top-P entries of
``φ − θ`` of the shared layers back (:mod:`eddl.mcu.topp`).

:class:`McuTaskRunner` is blocking serial I/O; the device's executor,
:class:`~eddl.worker.mcu_executor.McuExecutor`, runs it in a worker thread. Timing is split
between the link (SETUP, LOAD, READ) and TRAIN (the kernel plus one short request), which is
what the gateway benchmark reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eddl.learn import tifed
from eddl.learn.algorithms import Algorithm, Q8Algorithm, TifedAlgorithm
from eddl.learn.topp import SparseDelta
from eddl.mcu.driver import Device
from eddl.mcu.metaplan import MetaDevicePlan
from eddl.mcu.plan import (
    MCU_ALGORITHMS,
    job_setup,
    largest_capacity,
    largest_job_capacity,
    samples_fit,
    tifed_setup,
)
from eddl.mcu.protocol import SetupSpec
from eddl.mcu.session import DeviceModel
from eddl.mcu.topp import device_top_p, device_top_p_int8, snapshot
from eddl.net.sparse import decode_sparse
from eddl.proto.v1 import common_pb2
from eddl.worker.executor import TaskError, TaskResult

__all__ = ["DeviceAlgorithm", "InnerLoopResult", "McuTaskRunner"]


# What a device trains: a job's algorithm, or a meta job's device model (its float ``lsgd``
# kernel, whatever sample format the task's inputs and targets take).
DeviceAlgorithm = Algorithm | MetaDevicePlan


@dataclass(frozen=True)
class InnerLoopResult:
    """A TinyMetaFed inner loop run on a device: the top-P records of ``φ − θ`` (with int8
    values: also the device's own wire records, ``selected`` being their decoded values)."""

    selected: dict[str, SparseDelta]
    samples: int
    kernel_ticks: int
    records: list[common_pb2.SparseTensor] | None = None


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
        self._key: tuple[Any, ...] | None = None

    def _setup(self, spec: SetupSpec, key: tuple[Any, ...]) -> tuple[DeviceModel, bool]:
        """SETUP when the model changes (``True``: a fresh arena); else reuse it."""
        if self._model is not None and self._key == key:
            return self._model, False
        self._model = None  # a failed SETUP leaves no usable model behind
        self._model, self._key = DeviceModel(self.device, spec), key
        return self._model, True

    def _prepare(
        self, algorithm: str, algo: DeviceAlgorithm, shared_layers: int = 0
    ) -> DeviceModel:
        """SETUP (and ship TIFeD's feedback matrices) when the model changes."""
        shape = "-".join(map(str, algo.sizes))
        if isinstance(algo, TifedAlgorithm):
            config = algo.config
            cap = largest_capacity(
                config.sizes, config.batch_size, self.info.arena_bytes, self.max_buffer
            )
            if cap == 0:
                raise TaskError(
                    f"tifed {shape} with mini-batches of {config.batch_size} does not fit the "
                    f"device's {self.info.arena_bytes}-byte arena"
                )
            spec: SetupSpec = tifed_setup(config.sizes, config.batch_size, cap)
            key = (spec, config.feedback_seed, config.target, config.act_shift)
            model, fresh = self._setup(spec, key)
            if fresh:
                model.load_feedback(tifed.feedback_matrices(config))
            return model
        try:
            cap = largest_job_capacity(
                algorithm,
                algo.model,
                algo.hyper,
                self.info.arena_bytes,
                self.max_buffer,
                shared_layers=shared_layers,
            )
            spec = job_setup(algorithm, algo.model, algo.hyper, cap, shared_layers=shared_layers)
        except ValueError as exc:
            raise TaskError(f"{algorithm} {shape}: {exc}") from exc
        unread = samples_fit(spec, self.info.float_samples)
        if unread is not None:  # an older firmware would answer the SETUP with BAD_ARG
            raise TaskError(f"{algorithm} {shape}: {unread}")
        if cap == 0:
            raise TaskError(
                f"{algorithm} {shape} does not fit the device's {self.info.arena_bytes}-byte arena"
            )
        return self._setup(spec, (spec,))[0]

    def _load_model(
        self, model: DeviceModel, algo: DeviceAlgorithm, params: Mapping[str, Any]
    ) -> None:
        model.load_params(dict(params))
        if isinstance(algo, Q8Algorithm):
            # A worker's lsgd-q8 trainer is fresh per task: seed 0, counter 0.
            model.load_q8_format(algo.fmt.weight_frac, algo.fmt.bias_frac, seed=0, counter=0)

    def _train_args(self, algo: DeviceAlgorithm, batch: int, layer: int) -> dict[str, Any]:
        if isinstance(algo, TifedAlgorithm):
            return {
                "batch": batch,
                "layer": None if layer < 0 else layer,
                "lr_inv": algo.config.lr_inv,
            }
        if isinstance(algo, Q8Algorithm):
            return {"batch": 1, "lr_inv": int(algo.hyper.get("lr_shift", 7))}
        return {"batch": 1, "lr": float(algo.hyper.get("lr", 0.01))}

    def run(
        self,
        algorithm: str,
        algo: Algorithm,
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
        if single != (layer >= 0) or layer >= len(algo.sizes) - 1:
            raise TaskError(f"{algorithm} cannot train layer {layer}")
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise TaskError(f"task samples have shapes {x.shape} and {y.shape}")
        started = time.perf_counter()
        model = self._prepare(algorithm, algo)
        self._load_model(model, algo, params)
        link = fixed = time.perf_counter() - started
        batch = algo.batch_rows
        args = self._train_args(algo, batch, layer)
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
                _, t = self.device.train(len(rows), timeout=self.train_timeout, **args)
                train += time.perf_counter() - t1
                link += t1 - t0
                ticks += t
                steps += -(-len(rows) // batch)
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

    def inner_loop(
        self,
        algorithm: str,
        algo: DeviceAlgorithm,
        params: Mapping[str, np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        *,
        shared_layers: int,
        top_p: float,
        epochs: int = 1,
        seed: int = 0,
        values: str = "float32",
    ) -> InnerLoopResult:
        """TinyMetaFed's inner loop on the device: from the full model ``params`` (shared
        layers ``θ`` and the device's local layers), ``epochs`` online passes with batch 1 (in
        arrival order for one pass, else ``default_rng(seed).permutation`` per pass, as
        :func:`eddl.learn.tinymetafed.device_round`), then the top-P records of ``φ − θ`` of
        layers ``0..shared_layers-1``. ``algorithm`` is the kernel: ``lsgd`` or ``lsgd-q8``;
        ``values = "int8"`` has the device quantise the values (:func:`read_selected_int8`).
        ``x`` and ``y`` are uint8 pixels and class labels, or float32 features and labels or
        regression targets ``(n, outputs)``, as the model's sample format says."""
        if algorithm not in ("lsgd", "lsgd-q8"):
            raise TaskError(f"the inner loop runs on lsgd or lsgd-q8, not {algorithm}")
        if not 1 <= shared_layers <= len(algo.sizes) - 1:
            raise TaskError(f"shared_layers {shared_layers} outside 1..{len(algo.sizes) - 1}")
        if epochs < 1 or x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise TaskError(f"inner loop of {epochs} passes over samples {x.shape}, {y.shape}")
        model = self._prepare(algorithm, algo, shared_layers)
        self._load_model(model, algo, params)
        snapshot(self.device)
        args = self._train_args(algo, 1, -1)
        n, cap = int(x.shape[0]), model.spec.capacity
        rng = np.random.default_rng(seed) if epochs > 1 else None
        ticks = 0
        for _ in range(epochs):
            order = np.arange(n) if rng is None else rng.permutation(n)
            for first in range(0, n, cap):
                rows = order[first : first + cap]
                model.load_samples(x[rows], y[rows])
                ticks += self.device.train(len(rows), timeout=self.train_timeout, **args)[1]
        if values == "int8":
            records = device_top_p_int8(self.device, model.spec, top_p)
            decoded = [decode_sparse(msg) for msg in records]
            selected = {r.name: SparseDelta(r.shape, r.indices, r.values) for r in decoded}
            return InnerLoopResult(selected, n * epochs, ticks, records)
        fmt = algo.fmt if isinstance(algo, Q8Algorithm) else None
        selected = device_top_p(
            self.device,
            model.spec,
            top_p,
            weight_frac=fmt.weight_frac if fmt else (),
            bias_frac=fmt.bias_frac if fmt else (),
        )
        return InnerLoopResult(selected, samples=n * epochs, kernel_ticks=ticks)
