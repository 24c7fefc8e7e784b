"""What a job needs from ``eddl.learn`` and ``eddl.data``, gathered in one :class:`JobRuntime`.

The coordinator builds a runtime when a job is submitted (a spec that names an unknown
algorithm or dataset, a model shape or hyper-parameter no worker could train with, or a model
over the memory budget is refused then, before anything is stored) and again when a restarted
leader resumes the job. Tests inject their own factory; :func:`build_runtime` is the
real one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eddl.jobcheck import JobLimits, check_job
from eddl.jobspec import JobSpec
from eddl.learn.params import Params
from eddl.metajob import check_meta_job, is_meta

if TYPE_CHECKING:
    from eddl.leader.metaruntime import MetaHooks

__all__ = ["JobRuntime", "RuntimeFactory", "build_runtime"]


@dataclass
class JobRuntime:
    """The model, the data and the evaluation of one job.

    ``initial_params`` is version 0 of the global model. ``evaluate`` returns test accuracy in
    [0, 1]. ``samples(indexes)`` returns ``(x uint8 (n, features), y int64 (n,))`` for workers
    without a local copy of the dataset. ``single_layer`` (TIFeD single-layer mode) makes each
    task update one layer only. ``granularity`` rounds task sizes to whole mini-batches.
    """

    initial_params: Params
    num_train: int
    sync_rule: str = "fedavg"
    num_layers: int = 1
    single_layer: bool = False
    granularity: int = 1
    evaluate: Callable[[Params], float | None] | None = None
    samples: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # The synchronous rule's options when the runtime sets them (None: the spec's).
    sync_params: dict[str, Any] | None = None
    # Meta-learning jobs (tinymetafed, reptile): device sampling, sparse updates, few-shot.
    meta: MetaHooks | None = None


RuntimeFactory = Callable[[JobSpec], JobRuntime]


def build_runtime(spec: JobSpec, limits: JobLimits | None = None) -> JobRuntime:
    """The real runtime, from :func:`eddl.jobcheck.check_job` (the check ``eddl submit`` runs
    too): the dataset, the algorithm and version 0 of the model, within ``limits``.

    Any failure to build the model or load the data is a :class:`~eddl.jobspec.JobSpecError`:
    it is the submitted spec that is wrong. ``info["model"]`` is the model the job really runs.
    """
    if is_meta(spec.algorithm):
        return build_meta_runtime(spec)
    checked = check_job(spec, limits)
    algo, dataset = checked.algorithm, checked.dataset
    x_train = np.asarray(dataset.x_train)
    y_train = np.asarray(dataset.y_train)
    x_test = np.asarray(dataset.x_test)
    y_test = np.asarray(dataset.y_test)

    def evaluate(p: Params) -> float:
        return float(algo.evaluate(p, x_test, y_test))

    def samples(indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x_train[indexes], y_train[indexes]

    batch = spec.hyper.get("batch_size", 1)
    granularity = batch if isinstance(batch, int) and batch > 0 else 1
    return JobRuntime(
        initial_params=checked.initial_params,
        num_train=len(y_train),
        sync_rule=str(algo.sync_rule_name),
        num_layers=int(algo.num_layers),
        single_layer=bool(algo.single_layer),
        granularity=granularity,
        evaluate=evaluate,
        samples=samples,
        info={
            "dataset": dataset.name,
            "train": len(y_train),
            "test": len(y_test),
            "model": dict(checked.spec.model),
        },
        sync_params=default_sync_params(spec, str(algo.sync_rule_name), granularity),
    )


# A round of plain FedAvg sums its deltas up to this many mini-batches (see FedAvg's
# ``sum_samples`` and docs/leader-logic.md#time-to-accuracy), and a short sync round trains
# that many (TaskSizer.round_target): 4 workers of 1-4 batches each summed reach 90% with
# 1.1-1.5x the samples of one process, where the mean needs 3.5-4.5x; rounds of ~12 batches
# needed 1.5-1.7x (bench.accuracy, compute-bound), and 16-batch tasks summed diverge.
SUM_BATCHES = 8


def default_sync_params(spec: JobSpec, rule: str, batch: int) -> dict[str, Any] | None:
    """A float FedAvg job that sets no sync option sums its deltas up to ``SUM_BATCHES``
    mini-batches a round; any option given (``sum_samples = 0``: the plain mean) is kept."""
    if rule != "fedavg" or spec.sync_params:
        return None
    return {"sum_samples": SUM_BATCHES * batch}


def build_meta_runtime(spec: JobSpec) -> JobRuntime:
    """A ``tinymetafed`` or ``reptile`` job (:mod:`eddl.leader.metaruntime`): the shared
    layers as the global model, one "sample" per device task, the ``reptile`` rule with the
    job's ε schedule, the few-shot score as accuracy."""
    from eddl.leader.metaruntime import MetaHooks

    checked = check_meta_job(spec)
    job = checked.job
    hooks = MetaHooks(job, seed=spec.seed)
    return JobRuntime(
        initial_params=checked.initial_params,
        num_train=job.config.devices,
        sync_rule="reptile",
        num_layers=job.model.num_layers,
        evaluate=hooks.evaluate,
        info={
            "dataset": spec.dataset,
            "train": job.config.devices,
            "test": job.config.held_out,
            "model": dict(checked.spec.model),
        },
        sync_params={"meta_lr": job.options.meta_lr, "schedule": job.schedule(spec.rounds or 1)},
        meta=hooks,
    )
