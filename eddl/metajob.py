"""A ``tinymetafed`` or ``reptile`` job in the cluster: its devices, model and options.

The leader and every worker build the same :class:`MetaJob` from the job's stored spec: the
device tasks come from the job's seed (:mod:`eddl.data.metatasks`, :mod:`eddl.data.presence`),
so a worker that is handed device ``i`` rebuilds that device's samples itself and no sample
crosses the network. ``dataset`` names the use case: ``sine`` (regression), ``presence``
(synthetic rooms) or ``digits`` / ``mnist-10k`` (N-way characters).

``[job.model]`` of a meta job takes ``hidden`` (the hidden widths), ``devices`` (training
devices, 1..10000, default 20), ``held_out`` (held-out devices for the few-shot evaluation,
1..1000, default 5), ``n_way`` (characters, default 5) and ``samples`` (training samples per
device, per class for characters; 1..1000, default 10). The check resolves it to the mapping
stored with the job (``sizes`` and ``task_seed`` added), which is what workers read back.
``[job.hyper]`` holds the options of :mod:`eddl.learn.metaoptions`. A meta job aggregates in
synchronous rounds (``aggregation = "sync"``) with the ``reptile`` rule, its step decaying
from ``meta_lr`` toward ``meta_lr_final`` over the job's ``rounds`` (as in one-process runs).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from eddl.data.metatasks import TaskSet
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.metamodel import MetaModel
from eddl.learn.metaoptions import META_ALGORITHMS, MetaOptions, MetaOptionsError
from eddl.learn.params import Params
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.reptile import MetaLrSchedule
from eddl.metasim import MetaConfig, make_model, make_tasks

__all__ = [
    "META_DATASETS",
    "CheckedMetaJob",
    "MetaJob",
    "MetaJobConfig",
    "check_meta_job",
    "is_meta",
    "meta_job",
]

META_DATASETS: tuple[str, ...] = ("sine", "presence", "digits", "mnist-10k")
_MODEL_BOUNDS: dict[str, tuple[int, int, int]] = {  # key: (low, high, default)
    "devices": (1, 10_000, 20),
    "held_out": (1, 1000, 5),
    "n_way": (2, 10, 5),
    "samples": (1, 1000, 10),
}
_MAX_HIDDEN = 4096


def is_meta(algorithm: str) -> bool:
    return algorithm in META_ALGORITHMS


@dataclass(frozen=True)
class MetaJobConfig:
    """What defines a meta job's devices and model (hashable: jobs are cached by it)."""

    algorithm: str
    dataset: str
    hidden: tuple[int, ...]
    devices: int
    held_out: int
    n_way: int
    samples: int
    seed: int
    hyper: tuple[tuple[str, Any], ...]

    @property
    def task(self) -> str:
        return self.dataset if self.dataset in ("sine", "presence") else "characters"

    @classmethod
    def parse(
        cls, algorithm: str, dataset: str, model: Mapping[str, Any], hyper: Mapping[str, Any]
    ) -> MetaJobConfig:
        """Check the parts of a job; every error is a :class:`JobSpecError` naming its key."""
        if not is_meta(algorithm):
            raise JobSpecError(f"job.algorithm: {algorithm!r} is not a meta-learning algorithm")
        if dataset not in META_DATASETS:
            raise JobSpecError(
                f"job.dataset: a {algorithm} job runs on {', '.join(META_DATASETS)}, "
                f"not {dataset!r}"
            )
        allowed = {"hidden", "sizes", "task", "task_seed", *_MODEL_BOUNDS}
        unknown = sorted(set(model) - allowed)
        if unknown:
            raise JobSpecError(
                f"job.model: unknown key(s) {unknown} for {algorithm}; known: "
                f"hidden, {', '.join(_MODEL_BOUNDS)}"
            )
        values: dict[str, int] = {}
        for key, (low, high, default) in _MODEL_BOUNDS.items():
            v = model.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise JobSpecError(f"job.model.{key}: must be an int in {low}..{high}, got {v!r}")
            values[key] = v
        hidden = model.get("hidden", [])
        if (
            not isinstance(hidden, list | tuple)
            or len(hidden) > 8
            or not all(
                isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= _MAX_HIDDEN
                for h in hidden
            )
        ):
            raise JobSpecError(
                f"job.model.hidden: must be at most 8 widths in 1..{_MAX_HIDDEN}, got {hidden!r}"
            )
        seed = model.get("task_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise JobSpecError(f"job.model.task_seed: must be an int >= 0, got {seed!r}")
        items = tuple(sorted((str(k), v) for k, v in hyper.items()))
        if any(isinstance(v, list | dict) for _, v in items):
            raise JobSpecError("job.hyper: meta-learning options are numbers or strings")
        return cls(algorithm, dataset, tuple(hidden), seed=seed, hyper=items, **values)

    @classmethod
    def of_spec(cls, spec: JobSpec) -> MetaJobConfig:
        """A submitted spec: the device tasks are drawn from the job's ``seed``."""
        model = {k: v for k, v in spec.model.items() if k not in ("sizes", "task", "task_seed")}
        return cls.parse(
            spec.algorithm, spec.dataset, {**model, "task_seed": spec.seed}, spec.hyper
        )

    @classmethod
    def of_wire(
        cls, algorithm: str, dataset: str, model_json: str, hyper_json: str
    ) -> MetaJobConfig:
        """A task's job, from the resolved model and the hyper-parameters it carries."""
        try:
            model = json.loads(model_json or "{}")
            hyper = json.loads(hyper_json or "{}")
        except json.JSONDecodeError as exc:
            raise JobSpecError(f"job: model or hyper-parameters are not JSON: {exc}") from exc
        if not isinstance(model, dict) or not isinstance(hyper, dict):
            raise JobSpecError("job: model and hyper-parameters must be JSON objects")
        return cls.parse(algorithm, dataset, model, hyper)


@dataclass(frozen=True)
class MetaJob:
    """The built job: device tasks, model, layer split and options."""

    config: MetaJobConfig
    tasks: TaskSet
    model: MetaModel
    split: LayerSplit
    options: MetaOptions

    def schedule(self, rounds: int) -> MetaLrSchedule:
        """ε per round: ``meta_lr`` at round 0, linearly toward ``meta_lr_final``."""
        return MetaLrSchedule(self.options.meta_lr, self.options.meta_lr_final, rounds)

    def initial_shared(self) -> Params:
        """Version 0 of what the leader holds: the shared layers of a seeded model."""
        return self.split.shared(self.model.init_params(self.config.seed))

    def resolved_model(self) -> dict[str, Any]:
        c = self.config
        out: dict[str, Any] = {
            "devices": c.devices,
            "held_out": c.held_out,
            "samples": c.samples,
            "sizes": list(self.model.sizes),
            "task": c.task,
            "task_seed": c.seed,
        }
        if c.task == "characters":
            out["n_way"] = c.n_way
        if c.hidden:
            out["hidden"] = list(c.hidden)
        return out


@functools.lru_cache(maxsize=4)
def meta_job(config: MetaJobConfig) -> MetaJob:
    """Build (once per process and config) the job's tasks, model and options."""
    try:
        cfg = MetaConfig(
            algo=config.algorithm,
            task=config.task,
            dataset=config.dataset if config.task == "characters" else "digits",
            train_devices=config.devices,
            held_out_devices=config.held_out,
            seed=config.seed,
            hyper=dict(config.hyper),
            n_way=config.n_way,
            samples=config.samples,
            hidden=config.hidden,
        )
        tasks = make_tasks(cfg)
        model = make_model(tasks, cfg.hidden)
        opts = MetaOptions.from_hyper(config.algorithm, dict(config.hyper), model.num_layers)
    except MetaOptionsError as exc:
        raise JobSpecError(f"job.{exc}") from exc
    except ValueError as exc:
        raise JobSpecError(f"job.model: {exc}") from exc
    if opts.kernel == "lsgd-q8" and config.task != "characters":
        raise JobSpecError(
            f"job.hyper.kernel: lsgd-q8 runs on uint8 pixels (character tasks), "
            f"not on the {config.task} task"
        )
    split = LayerSplit(model.num_layers, opts.local_layers)
    return MetaJob(config, tasks, model, split, opts)


@dataclass(frozen=True)
class CheckedMetaJob:
    """A meta job that passed :func:`check_meta_job`, with its resolved model."""

    spec: JobSpec
    job: MetaJob
    initial_params: Params


def check_meta_job(spec: JobSpec) -> CheckedMetaJob:
    """The full check of a meta job (the counterpart of :func:`eddl.jobcheck.check_job`)."""
    if spec.aggregation != "sync":
        raise JobSpecError(
            f"job.aggregation: a {spec.algorithm} job runs in synchronous rounds; "
            f'set aggregation = "sync", not {spec.aggregation!r}'
        )
    if spec.sync_params:
        raise JobSpecError(
            f"job.sync_params: {spec.algorithm} takes its outer step size as "
            "[job.hyper] meta_lr, not as sync_params"
        )
    if spec.rounds is None:
        raise JobSpecError(f"job.rounds: a {spec.algorithm} job needs a number of rounds")
    job = meta_job(MetaJobConfig.of_spec(spec))
    if spec.target_accuracy is not None and job.model.metric != "accuracy":
        raise JobSpecError(
            f"job.target_accuracy: the {spec.dataset} task is scored by {job.model.metric}, "
            "not accuracy"
        )
    return CheckedMetaJob(replace(spec, model=job.resolved_model()), job, job.initial_shared())
