"""What a job needs from ``eddl.learn`` and ``eddl.data``, gathered in one :class:`JobRuntime`.

The coordinator builds a runtime when a job is submitted (a spec that names an unknown
algorithm, dataset or model shape is refused then, before anything is stored) and again when a
restarted leader resumes the job. Tests inject their own factory; :func:`build_runtime` is the
real one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eddl.leader.errors import JobSpecError
from eddl.leader.jobs import JobSpec
from eddl.learn.params import Params

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
    evaluate: Callable[[Params], float] | None = None
    samples: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


RuntimeFactory = Callable[[JobSpec], JobRuntime]


def build_runtime(spec: JobSpec) -> JobRuntime:
    """The real runtime: ``eddl.learn.algorithms.get_algorithm`` and ``eddl.data.load_dataset``.

    Any failure to build the model or load the data is a :class:`JobSpecError`: it is the
    submitted spec that is wrong.
    """
    data: Any = importlib.import_module("eddl.data")
    try:
        algorithms: Any = importlib.import_module("eddl.learn.algorithms")
    except ImportError as exc:  # pragma: no cover - present in a complete install
        raise JobSpecError(f"training algorithms are unavailable: {exc}") from exc
    try:
        dataset = data.load_dataset(spec.dataset)
    except (ValueError, KeyError, OSError) as exc:
        raise JobSpecError(f"job.dataset: {exc}") from exc
    features, classes = int(dataset.num_features), int(dataset.num_classes)
    try:
        model = resolve_model(spec, algorithms.default_model, features, classes)
        algo = algorithms.get_algorithm(spec.algorithm, model, dict(spec.hyper))
        params: Params = algo.init_params(spec.seed)
    except JobSpecError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise JobSpecError(f"job.algorithm/model/hyper: {exc}") from exc
    x_train = np.asarray(dataset.x_train)
    y_train = np.asarray(dataset.y_train)
    x_test = np.asarray(dataset.x_test)
    y_test = np.asarray(dataset.y_test)

    def evaluate(p: Params) -> float:
        return float(algo.evaluate(p, x_test, y_test))

    def samples(indexes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x_train[indexes], y_train[indexes]

    batch = spec.hyper.get("batch_size", 1)
    return JobRuntime(
        initial_params=params,
        num_train=len(y_train),
        sync_rule=str(algo.sync_rule_name),
        num_layers=int(algo.num_layers),
        single_layer=bool(algo.single_layer),
        granularity=batch if isinstance(batch, int) and batch > 0 else 1,
        evaluate=evaluate,
        samples=samples,
        info={"dataset": dataset.name, "train": len(y_train), "test": len(y_test), "model": model},
    )


def resolve_model(
    spec: JobSpec,
    default_model: Callable[[str, int, int], dict[str, Any]],
    features: int,
    classes: int,
) -> dict[str, Any]:
    """The full model mapping for ``get_algorithm``.

    An empty ``[job.model]`` takes the papers' topology for the algorithm; ``hidden = [..]``
    replaces only its hidden widths (float models keep tanh hidden layers and the sigmoid/BCE
    head); ``sizes`` must start with the dataset's feature count and end with its class count.
    """
    model = dict(spec.model)
    if not model:
        return default_model(spec.algorithm, features, classes)
    if "hidden" in model:
        hidden = model.pop("hidden")
        if not isinstance(hidden, list) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
        ):
            raise JobSpecError(f"job.model.hidden must be a list of positive ints, got {hidden!r}")
        if "sizes" in model:
            raise JobSpecError("job.model: give hidden or sizes, not both")
        base = default_model(spec.algorithm, features, classes)
        base["sizes"] = [features, *hidden, classes]
        if "activations" in base:
            base["activations"] = ["tanh"] * len(hidden) + [base["activations"][-1]]
        base.update(model)
        return base
    sizes = model.get("sizes")
    if isinstance(sizes, list) and sizes and (sizes[0] != features or sizes[-1] != classes):
        raise JobSpecError(
            f"job.model.sizes {sizes} must start with {features} inputs and end with "
            f"{classes} outputs for dataset {spec.dataset!r}"
        )
    return model
