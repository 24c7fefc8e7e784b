"""The full check of a job: everything a worker will do with it, done once before it is taken.

:func:`check_job` loads the job's dataset, resolves its model (the papers' topology filled in
from the dataset), builds the algorithm with :func:`eddl.learn.algorithms.get_algorithm` (the
call a worker makes for every task), bounds the memory of the model and of one trainer by
:class:`JobLimits`, and only then makes version 0 of the model and one trainer, as a worker
would. ``eddl submit`` runs it before sending a job (and exits 2 on a :class:`JobSpecError`);
the leader runs it again when the job arrives (``INVALID_ARGUMENT``), so a job that no worker
could run is refused at the door instead of failing on every worker. The aggregation options
(``[job.sync_params]``, ``[job.async_params]``) are checked here too, by building the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eddl.data import Dataset, load_dataset
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.aggregation import BASE_LOOKUP_RULES, AggregationError, make_rule
from eddl.learn.algorithms import Algorithm, AlgorithmError, default_model, get_algorithm
from eddl.learn.params import Params
from eddl.metajob import CheckedMetaJob, check_meta_job, is_meta

__all__ = [
    "DEFAULT_MODEL_BYTES",
    "SERVER_KEYS",
    "CheckedJob",
    "JobLimits",
    "check_aggregation",
    "check_job",
    "check_spec",
    "resolve_model",
]

#: What ``[job.sync_params]`` may hold: robust aggregation (eddl.learn.aggregation.robust) or
#: the synchronous rule's server optimizer, or FedAvg's summed deltas (``sum_samples``).
SERVER_KEYS = (
    "robust",
    "sum_samples",
    "trim",
    "server_opt",
    "server_lr",
    "server_momentum",
    "server_beta1",
    "server_beta2",
    "server_tau",
)

DEFAULT_MODEL_BYTES = 256 * 1024 * 1024
_MIB = 1024 * 1024


@dataclass(frozen=True)
class JobLimits:
    """What one job may cost a node: ``max_model_bytes`` bounds the model's parameters and,
    apart, a trainer's batch buffers (the leader's ``max_model_mib``; 256 MiB by default)."""

    max_model_bytes: int = DEFAULT_MODEL_BYTES

    def __post_init__(self) -> None:
        if self.max_model_bytes < 1:
            raise ValueError("max_model_bytes must be >= 1")


@dataclass(frozen=True)
class CheckedJob:
    """A job that passed :func:`check_job`: its spec with the model resolved, and what was
    built from it (the leader keeps all of it for the run)."""

    spec: JobSpec
    dataset: Dataset
    algorithm: Algorithm
    initial_params: Params


def check_spec(spec: JobSpec, limits: JobLimits | None = None) -> CheckedJob | CheckedMetaJob:
    """The check of any job: meta-learning jobs (``tinymetafed``, ``reptile``) by
    :func:`eddl.metajob.check_meta_job`, every other by :func:`check_job`."""
    if is_meta(spec.algorithm):
        return check_meta_job(spec)
    return check_job(spec, limits)


def check_job(spec: JobSpec, limits: JobLimits | None = None) -> CheckedJob:
    """Check ``spec`` as described in the module docstring; raise :class:`JobSpecError`."""
    if is_meta(spec.algorithm):
        raise JobSpecError(
            f"job.algorithm: {spec.algorithm} jobs are checked by check_spec (eddl.metajob)"
        )
    limits = limits or JobLimits()
    try:
        dataset = load_dataset(spec.dataset)
    except (ValueError, KeyError, OSError) as exc:
        raise JobSpecError(f"job.dataset: {exc}") from exc
    model = resolve_model(spec, dataset.num_features, dataset.num_classes)
    try:
        algo = get_algorithm(spec.algorithm, model, dict(spec.hyper))
    except AlgorithmError as exc:
        raise JobSpecError(f"job.{exc}" if exc.key else f"job: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise JobSpecError(f"job.model: {exc}") from exc
    budget = limits.max_model_bytes
    need = algo.param_bytes()
    if need > budget:
        raise JobSpecError(
            f"job.model.sizes: {_sizes(algo.sizes)} make {_mib(need)} of parameters; "
            f"the limit is {_mib(budget)}"
        )
    buffers = algo.buffer_bytes()
    if buffers > budget:
        raise JobSpecError(
            f"job.hyper.batch_size: batches of {algo.batch_rows} over layers "
            f"{_sizes(algo.sizes)} need about {_mib(buffers)} of buffers; the limit is "
            f"{_mib(budget)}"
        )
    try:
        params = algo.init_params(spec.seed)
    except (ValueError, KeyError, TypeError) as exc:
        raise JobSpecError(f"job.algorithm: {exc}") from exc
    try:  # what a worker does first with every task (single-layer mode: a layer)
        algo.make_trainer(0 if algo.single_layer else None, seed=spec.seed)
    except (ValueError, TypeError) as exc:
        raise JobSpecError(f"job.hyper: {spec.algorithm}: {exc}") from exc
    check_aggregation(spec, algo.sync_rule_name, params)
    if model != dict(spec.model):
        spec = replace(spec, model=model)
    return CheckedJob(spec, dataset, algo, params)


def check_aggregation(spec: JobSpec, sync_rule: str, params: Params) -> None:
    """Build the job's rules from ``sync_params`` / ``async_params`` as the leader will, and
    refuse server optimizers on integer models (TIFeD keeps its exact integer mean)."""
    integer = sorted(n for n, a in params.items() if a.dtype.kind != "f")
    sync_params = dict(spec.sync_params)
    unknown = sorted(set(sync_params) - set(SERVER_KEYS))
    if unknown:
        raise JobSpecError(
            f"job.sync_params: unknown key(s) {unknown}; known: {', '.join(SERVER_KEYS)}"
        )
    if sync_params and integer:
        raise JobSpecError(
            f"job.sync_params: {spec.algorithm} trains an integer model and keeps TIFeD's exact "
            f"integer mean; server optimizers ({', '.join(sorted(sync_params))}) apply to float "
            "models only"
        )
    try:
        make_rule(sync_rule, **sync_params)
    except AggregationError as exc:
        raise JobSpecError(f"job.sync_params: {exc}") from exc
    async_params: dict[str, object] = dict(spec.async_params)
    lr = async_params.get("server_lr", 1.0)
    if integer and lr != 1.0:
        raise JobSpecError(
            f"job.async_params.server_lr: {spec.algorithm} trains an integer model; a server "
            f"learning rate ({lr!r}) applies to float models only"
        )
    if spec.async_rule in BASE_LOOKUP_RULES:
        async_params["base_lookup"] = _no_base
    try:
        make_rule(spec.async_rule, **async_params)
    except AggregationError as exc:
        raise JobSpecError(f"job.async_params: {exc}") from exc


def _no_base(version: int) -> None:
    return None


def resolve_model(
    spec: JobSpec,
    features: int,
    classes: int,
    default: Callable[[str, int, int], dict[str, Any]] = default_model,
) -> dict[str, Any]:
    """The full model mapping for ``get_algorithm``.

    An empty ``[job.model]`` takes the papers' topology for the algorithm; ``hidden = [..]``
    replaces only its hidden widths (float models keep tanh hidden layers and the sigmoid/BCE
    head); ``sizes`` must start with the dataset's feature count and end with its class count.
    """
    model = dict(spec.model)
    try:
        if not model:
            return default(spec.algorithm, features, classes)
        if "hidden" in model:
            hidden = model.pop("hidden")
            if not isinstance(hidden, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
            ):
                raise JobSpecError(
                    f"job.model.hidden: must be a list of positive ints, got {hidden!r}"
                )
            if "sizes" in model:
                raise JobSpecError("job.model: give hidden or sizes, not both")
            base = default(spec.algorithm, features, classes)
            base["sizes"] = [features, *hidden, classes]
            if "activations" in base:
                base["activations"] = ["tanh"] * len(hidden) + [base["activations"][-1]]
            base.update(model)
            return base
    except AlgorithmError as exc:
        raise JobSpecError(f"job.{exc}" if exc.key else f"job: {exc}") from exc
    sizes = model.get("sizes")
    if isinstance(sizes, list) and sizes and (sizes[0] != features or sizes[-1] != classes):
        raise JobSpecError(
            f"job.model.sizes: {_sizes(sizes)} must start with {features} inputs and end with "
            f"{classes} outputs for dataset {spec.dataset!r}"
        )
    return model


def _mib(nbytes: int) -> str:
    return f"{nbytes / _MIB:,.1f} MiB" if nbytes < 1 << 40 else f"{nbytes / (1 << 40):,.1f} TiB"


def _sizes(sizes: Any) -> str:
    text = str(list(sizes))
    return text if len(text) <= 80 else text[:77] + "..."
