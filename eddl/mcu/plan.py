"""Arena planning on the host: what a SETUP needs on a device, without asking the device.

:func:`arena_need` lays the buffers out exactly as the firmware's ``plan()`` in
``firmware/src/model.c`` does (8-byte aligned, the same order and sizes), so a leader can tell
whether a job fits a microcontroller from the arena size in its HELLO, and a gateway can pick
the largest sample buffer that fits. Tests compare it with the ``used`` bytes SETUP returns.

Only TIFeD jobs (``tifed`` full network, ``tifed-single``) are bridged to devices: the integer
kernels are bit-exact with ``eddl.learn``, so a device's update aggregates with a Python
worker's. The float kernels exist in the firmware for the cost comparison of the L-SGD paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .protocol import MAX_LAYERS, Algo, SetupSpec

__all__ = [
    "MCU_ALGORITHMS",
    "arena_need",
    "largest_capacity",
    "tifed_fit",
    "tifed_setup",
]

# Job algorithms a gateway can translate into device commands.
MCU_ALGORITHMS = ("tifed", "tifed-single")


def _take(off: int, nbytes: int) -> int:
    return ((off + 7) & ~7) + nbytes


def arena_need(spec: SetupSpec) -> int:
    """Bytes of the device arena a SETUP with ``spec`` uses (the firmware's ``plan()``)."""
    dims = spec.sizes
    layers = len(dims) - 1
    batch = spec.max_batch
    widest = max(dims[1:])
    off = 0
    for i in range(layers):
        fan_in, fan_out = dims[i], dims[i + 1]
        if spec.algo == Algo.TIFED:
            off = _take(off, fan_in * fan_out * 4)
            off = _take(off, fan_out * 4)
            if i + 1 < layers:
                off = _take(off, dims[layers] * fan_out * 2)
            off = _take(off, batch * fan_out * 2)
            off = _take(off, batch * fan_out)
        elif spec.algo == Algo.LSGD_Q8:
            off = _take(off, fan_in * fan_out)
            off = _take(off, fan_out)
            off = _take(off, 2)
            off = _take(off, fan_out)
        elif spec.algo == Algo.LSGD:
            off = _take(off, fan_in * fan_out * 4)
            off = _take(off, fan_out * 4)
            off = _take(off, fan_out * 4)
        else:
            off = _take(off, fan_in * fan_out * 4)
            off = _take(off, fan_out * 4)
            off = _take(off, fan_out * 4)
            off = _take(off, fan_out * 4)
            off = _take(off, fan_in * fan_out * 4)
            off = _take(off, fan_out * 4)
    if spec.algo == Algo.TIFED:
        off = _take(off, batch * dims[layers] * 2)
        off = _take(off, batch * widest * 4)
        off = _take(off, widest * 8)
    elif spec.algo == Algo.LSGD_Q8:
        off = _take(off, widest * 4)
        off = _take(off, widest * 4)
        off = _take(off, widest * 4)
        off = _take(off, 8)
    elif spec.algo == Algo.LSGD:
        off = _take(off, widest * 4)
        off = _take(off, widest * 4)
        off = _take(off, dims[0] * 4)
    else:
        off = _take(off, dims[0] * 4)
    off = _take(off, spec.capacity * dims[0])
    return _take(off, spec.capacity)


def tifed_setup(sizes: Sequence[int], batch: int, capacity: int) -> SetupSpec:
    """The SETUP of a TIFeD model: ``capacity`` samples in the buffer, mini-batches of ``batch``."""
    return SetupSpec(Algo.TIFED, tuple(int(s) for s in sizes), capacity=capacity, max_batch=batch)


def largest_capacity(sizes: Sequence[int], batch: int, arena_bytes: int, limit: int) -> int:
    """The largest sample buffer, a whole number of mini-batches and at most ``limit`` samples
    (at least one batch), with which a TIFeD model fits ``arena_bytes``; 0 when none does."""
    if batch < 1 or limit < 1:
        return 0
    most = max(batch, (min(limit, 0xFFFF) // batch) * batch)
    if arena_need(tifed_setup(sizes, batch, batch)) > arena_bytes:
        return 0
    lo, hi = 1, most // batch  # in batches; lo always fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if arena_need(tifed_setup(sizes, batch, mid * batch)) <= arena_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo * batch


def tifed_fit(
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    *,
    arena_bytes: int,
    algorithms: Iterable[str],
    max_layers: int = MAX_LAYERS,
) -> str | None:
    """Why a device cannot run a job, or None when it can.

    The device must offer ``algorithm`` and hold the whole network plus one mini-batch in its
    arena. In single-layer mode a device updates one layer but still runs the whole forward pass
    (and the output error that drives DFA), so a layer fits exactly when its network does.
    """
    offered = tuple(algorithms)
    if algorithm not in offered:
        return f"runs {', '.join(offered) or 'no job algorithm'}, not {algorithm}"
    sizes = model.get("sizes")
    if not isinstance(sizes, Sequence) or len(sizes) < 2:
        return f"model has no layer sizes: {sizes!r}"
    if len(sizes) - 1 > max_layers:
        return f"{len(sizes) - 1} layers exceed the device's {max_layers}"
    batch = hyper.get("batch_size", 25)
    if not isinstance(batch, int) or batch < 1:
        return f"batch_size {batch!r} is not a positive integer"
    try:
        need = arena_need(tifed_setup(sizes, batch, batch))
    except ValueError as exc:
        return str(exc)
    if need > arena_bytes:
        shape = "-".join(str(s) for s in sizes)
        return (
            f"{shape} with mini-batches of {batch} needs {need:,} arena bytes; "
            f"the device has {arena_bytes:,}"
        )
    return None
