"""What a microcontroller runs of a ``tinymetafed`` or ``reptile`` job, and whether it fits.

A device runs a meta job's inner loop with its ``lsgd`` kernel (float), or ``lsgd-q8`` (int8
weights) when the job's ``kernel`` option says so. The device model is the job's:

========== =================================== ============================ ==================
task       layers                              samples (SETUP sample format) kernels
========== =================================== ============================ ==================
characters tanh hidden, sigmoid/BCE head       uint8 pixels, class labels   lsgd, lsgd-q8
presence   tanh hidden, sigmoid/BCE head       float32 features, labels     lsgd
sine       tanh hidden, linear head, MSE       float32 inputs and targets   lsgd
========== =================================== ============================ ==================

lsgd-q8 reads uint8 pixels only, so it takes character tasks alone. The device also holds a
snapshot of the shared layers for the top-P selection (``SetupSpec.shared_layers``): all of
them for Reptile, all but the local layers for TinyMetaFed. :func:`meta_fit` is the
capability check the leader applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eddl.learn.metaoptions import META_ALGORITHMS, MetaOptions, MetaOptionsError
from eddl.mcu.plan import arena_need, job_setup, samples_fit

__all__ = ["MetaDevicePlan", "meta_fit", "meta_plan"]


# Per task: the output layer's activation, the loss and the sample format of the device model.
_TASK_MODELS: dict[str, dict[str, str]] = {
    "characters": {"head": "sigmoid", "loss": "bce"},
    "presence": {"head": "sigmoid", "loss": "bce", "inputs": "float"},
    "sine": {"head": "linear", "loss": "mse", "inputs": "float", "targets": "float"},
}


@dataclass(frozen=True)
class MetaDevicePlan:
    """The device's view of a meta job: the kernel's model (with its sample format) and
    hyper-parameters, the number of shared layers and the options (``options.kernel`` is the
    kernel)."""

    model: dict[str, Any]
    hyper: dict[str, Any]
    shared_layers: int
    options: MetaOptions

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(self.model["sizes"])

    @property
    def float_samples(self) -> bool:
        """The device reads float32 samples (presence, sine), not uint8 pixels."""
        return self.model.get("inputs") == "float"


def meta_plan(algorithm: str, model: Mapping[str, Any], hyper: Mapping[str, Any]) -> MetaDevicePlan:
    """The plan of a meta job's resolved model; ValueError for a job no device runs."""
    if algorithm not in META_ALGORITHMS:
        raise ValueError(f"{algorithm!r} is not a meta-learning algorithm")
    task = model.get("task")
    if not isinstance(task, str) or task not in _TASK_MODELS:
        raise ValueError(
            f"a microcontroller runs {algorithm} on {', '.join(_TASK_MODELS)} tasks, "
            f"not on {task!r}"
        )
    sizes = model.get("sizes")
    if not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"model has no layer sizes: {sizes!r}")
    layers = len(sizes) - 1
    try:
        opts = MetaOptions.from_hyper(algorithm, hyper, layers)
    except MetaOptionsError as exc:
        raise ValueError(str(exc)) from exc
    if opts.error_feedback:
        raise ValueError(
            "error_feedback keeps a device's unsent entries between rounds; the firmware's "
            "top-P keeps none (Python workers run it)"
        )
    if opts.kernel == "lsgd-q8" and task != "characters":
        raise ValueError(
            f"the lsgd-q8 kernel reads uint8 pixels (character tasks), not the {task} task's "
            "float samples; the float lsgd kernel runs it"
        )
    shape = _TASK_MODELS[task]
    device_model: dict[str, Any] = {
        "sizes": [int(s) for s in sizes],
        "activations": ["tanh"] * (layers - 1) + [shape["head"]],
        "loss": shape["loss"],
        **{k: shape[k] for k in ("inputs", "targets") if k in shape},
    }
    hyper = {"lr_shift": opts.lr_shift} if opts.kernel == "lsgd-q8" else {"lr": opts.lr}
    return MetaDevicePlan(device_model, hyper, layers - opts.local_layers, opts)


def meta_fit(
    algorithm: str,
    model: Mapping[str, Any],
    hyper: Mapping[str, Any],
    *,
    arena_bytes: int,
    algorithms: Iterable[str],
    float_samples: bool = True,
) -> str | None:
    """Why a device cannot run a meta job's inner loop, or None when it can: it needs the
    job's kernel (``lsgd`` or ``lsgd-q8``), the float-sample flag in its HELLO
    (``float_samples``) for presence and sine tasks, and an arena for the network, one sample
    and the shared snapshot."""
    offered = tuple(algorithms)
    try:
        plan = meta_plan(algorithm, model, hyper)
        kernel = plan.options.kernel
        if kernel not in offered:
            return f"runs {', '.join(offered) or 'no job algorithm'}, not {kernel} ({algorithm})"
        spec = job_setup(kernel, plan.model, plan.hyper, 1, shared_layers=plan.shared_layers)
        need = arena_need(spec)
    except ValueError as exc:
        return str(exc)
    unread = samples_fit(spec, float_samples)
    if unread is not None:
        return f"{algorithm} on the {model['task']} task: {unread}"
    if need > arena_bytes:
        shape = "-".join(str(s) for s in plan.model["sizes"])
        return (
            f"{algorithm} {shape} with one sample and the shared snapshot needs {need:,} "
            f"arena bytes; the device has {arena_bytes:,}"
        )
    return None
