"""The gateway's benchmark of a device before it joins: TIFeD on a small model.

What it measures goes into the device's profile (ticks per sample, samples per second through
the link, the link's payload rate), which the leader uses to size the device's tasks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from eddl.mcu.driver import Device
from eddl.mcu.plan import largest_capacity, tifed_setup
from eddl.mcu.session import DeviceModel

__all__ = ["BENCH_SIZES", "BenchmarkResult", "benchmark_device"]

BENCH_SIZES = (64, 32, 10)


@dataclass(frozen=True)
class BenchmarkResult:
    """What the gateway measures on a device before it joins: TIFeD on a small model."""

    model: str  # "tifed 64-32-10"
    ticks_per_sample: float
    samples_per_second: float  # wall rate of LOAD + TRAIN per sample through this link
    link_bytes_per_second: float  # payload rate of the sample LOAD


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
