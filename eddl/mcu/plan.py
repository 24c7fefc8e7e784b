"""Arena planning on the host: what a SETUP needs on a device, without asking the device.

:func:`arena_need` lays the buffers out exactly as the firmware's ``plan()`` in
``firmware/src/model.c`` does (8-byte aligned, the same order and sizes), so a leader can tell
whether a job fits a microcontroller from the arena size in its HELLO, and a gateway can pick
the largest sample buffer that fits. Tests compare it with the ``used`` bytes SETUP returns.

Jobs bridged to devices (:data:`MCU_ALGORITHMS`): TIFeD (``tifed`` full network,
``tifed-single``) and L-SGD-q8 (``lsgd-q8``), whose integer kernels are bit-exact with
``eddl.learn``, and float L-SGD (``lsgd``), which agrees with numpy to float tolerance (the
summation order differs). A device offers the algorithms whose kernels its HELLO lists
(:func:`offered_algorithms`); :func:`job_fit` tells whether a job's network fits its arena.
A SETUP with ``shared_layers`` also plans the top-P snapshot (``firmware/src/topp.c``).

A float job's model may say how its samples look: ``"inputs": "float"`` (float32 features,
read as they are, instead of uint8 pixels read as ``x / 255``) and ``"targets": "float"``
(float32 regression targets, MSE, instead of class labels); :func:`job_setup` turns them into
the SETUP's :class:`~eddl.mcu.protocol.SampleFormat`, and the sample buffer grows to match.
Only a device whose HELLO carries the float-sample flag takes them (:func:`samples_fit`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .protocol import MAX_LAYERS, Act, Algo, Loss, ProtocolError, SampleFormat, SetupSpec

__all__ = [
    "MCU_ALGORITHMS",
    "arena_need",
    "job_fit",
    "job_setup",
    "largest_capacity",
    "largest_job_capacity",
    "offered_algorithms",
    "sample_format",
    "samples_fit",
    "tifed_fit",
    "tifed_setup",
]

# Job algorithms a gateway can translate into device commands, and the kernel each needs.
MCU_ALGORITHMS = ("tifed", "tifed-single", "lsgd", "lsgd-q8")
_KERNEL = {"tifed": "tifed", "tifed-single": "tifed", "lsgd": "lsgd", "lsgd-q8": "lsgd-q8"}
_ALGO = {
    "tifed": Algo.TIFED,
    "tifed-single": Algo.TIFED,
    "lsgd": Algo.LSGD,
    "lsgd-q8": Algo.LSGD_Q8,
}


def offered_algorithms(kernels: Iterable[str]) -> list[str]:
    """The job algorithms a device runs, from the kernels its HELLO lists."""
    built = set(kernels)
    return [a for a in MCU_ALGORITHMS if _KERNEL[a] in built]


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
    off = _take(off, spec.capacity * dims[0] * (4 if spec.float_inputs else 1))
    off = _take(off, spec.capacity * (dims[layers] * 4 if spec.float_targets else 1))
    if spec.shared_layers:
        width = 1 if spec.algo == Algo.LSGD_Q8 else 4
        for i in range(spec.shared_layers):
            off = _take(off, dims[i] * dims[i + 1] * width)
            off = _take(off, dims[i + 1] * width)
        off = _take(off, 256 * 4)
    return off


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


def job_setup(
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    capacity: int,
    *,
    shared_layers: int = 0,
) -> SetupSpec:
    """The SETUP of a job's model holding ``capacity`` samples; ValueError when no firmware
    kernel runs it (an activation or loss the device lacks, a malformed model)."""
    if algorithm not in _ALGO:
        raise ValueError(f"a microcontroller runs {', '.join(MCU_ALGORITHMS)}, not {algorithm}")
    sizes = model.get("sizes")
    if not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"model has no layer sizes: {sizes!r}")
    widths = tuple(int(s) for s in sizes)
    if _ALGO[algorithm] == Algo.TIFED:
        if sample_format(model):
            raise ValueError("tifed runs on uint8 pixels and class labels, not float samples")
        batch = hyper.get("batch_size", 25)
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch_size {batch!r} is not a positive integer")
        return SetupSpec(Algo.TIFED, widths, capacity=max(capacity, batch), max_batch=batch)
    acts, loss = model.get("activations"), model.get("loss")
    if not isinstance(acts, Sequence) or len(acts) != len(widths) - 1:
        raise ValueError(f"model needs one activation per layer, got {acts!r}")
    try:
        act_codes = tuple(Act[str(a).upper()] for a in acts)
        loss_code = Loss[str(loss).upper()]
    except KeyError as exc:
        raise ValueError(f"the firmware has no activation or loss {exc}") from exc
    # L-SGD is per sample: the device holds one row of activations, whatever batch_size says.
    try:
        return SetupSpec(
            _ALGO[algorithm],
            widths,
            capacity=capacity,
            max_batch=1,
            activations=act_codes,
            loss=loss_code,
            shared_layers=shared_layers,
            sample_format=sample_format(model),
        )
    except ProtocolError as exc:
        raise ValueError(f"{algorithm}: {exc}") from exc


def sample_format(model: Mapping[str, Any]) -> SampleFormat:
    """The sample format a job's model asks for (``inputs``: ``"pixels"`` or ``"float"``;
    ``targets``: ``"labels"`` or ``"float"``); ValueError for anything else."""
    inputs, targets = model.get("inputs", "pixels"), model.get("targets", "labels")
    if inputs not in ("pixels", "float") or targets not in ("labels", "float"):
        raise ValueError(
            f"model inputs must be 'pixels' or 'float' and targets 'labels' or 'float', "
            f"got {inputs!r} and {targets!r}"
        )
    fmt = SampleFormat.PIXELS
    if inputs == "float":
        fmt |= SampleFormat.FLOAT_INPUTS
    if targets == "float":
        fmt |= SampleFormat.FLOAT_TARGETS
    return fmt


def samples_fit(spec: SetupSpec, float_samples: bool) -> str | None:
    """Why a device cannot take ``spec``'s samples, or None when it can: float32 samples need
    a firmware whose HELLO says it reads them (``HelloFlag.FLOAT_SAMPLES``, firmware 0.2.0)."""
    if float_samples or spec.sample_format == SampleFormat.PIXELS:
        return None
    kinds = [
        name for name, on in (("inputs", spec.float_inputs), ("targets", spec.float_targets)) if on
    ]
    return (
        f"the job's samples are float32 ({' and '.join(kinds)}); the device's firmware reads "
        "uint8 pixels and class labels only (its HELLO lacks the float-sample flag of firmware "
        "0.2.0 and later)"
    )


def largest_job_capacity(
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    arena_bytes: int,
    limit: int,
    *,
    shared_layers: int = 0,
) -> int:
    """The largest sample buffer (at most ``limit``) with which a job's model fits the arena;
    0 when none does. TIFeD buffers hold whole mini-batches (:func:`largest_capacity`)."""
    if _ALGO.get(algorithm) == Algo.TIFED:
        batch = int(hyper.get("batch_size", 25))
        return largest_capacity(model["sizes"], batch, arena_bytes, limit)

    def need(cap: int) -> int:
        return arena_need(job_setup(algorithm, model, hyper, cap, shared_layers=shared_layers))

    if limit < 1 or need(1) > arena_bytes:
        return 0
    lo, hi = 1, min(limit, 0xFFFF)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= arena_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def job_fit(
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    *,
    arena_bytes: int,
    algorithms: Iterable[str],
    max_layers: int = MAX_LAYERS,
    float_samples: bool = True,
) -> str | None:
    """Why a device cannot run a job, or None when it can.

    The device must offer ``algorithm``, take the job's sample format (``float_samples``: its
    HELLO says it reads float32 samples) and hold the whole network plus one mini-batch (one
    sample for L-SGD) in its arena. In single-layer mode a TIFeD device updates one layer but
    still runs the whole forward pass (and the output error that drives DFA), so a layer fits
    exactly when its network does.
    """
    offered = tuple(algorithms)
    if algorithm not in offered:
        return f"runs {', '.join(offered) or 'no job algorithm'}, not {algorithm}"
    sizes = model.get("sizes")
    if not isinstance(sizes, Sequence) or len(sizes) < 2:
        return f"model has no layer sizes: {sizes!r}"
    if len(sizes) - 1 > max_layers:
        return f"{len(sizes) - 1} layers exceed the device's {max_layers}"
    try:
        spec = job_setup(algorithm, model, hyper, 1)
        need = arena_need(spec)
    except ValueError as exc:
        return str(exc)
    unread = samples_fit(spec, float_samples)
    if unread is not None:
        return unread
    if need > arena_bytes:
        shape = "-".join(str(s) for s in sizes)
        rows = f"mini-batches of {spec.max_batch}" if spec.algo == Algo.TIFED else "one sample"
        return f"{shape} with {rows} needs {need:,} arena bytes; the device has {arena_bytes:,}"
    return None


# The leader's capability check imports it under its first name.
tifed_fit = job_fit
