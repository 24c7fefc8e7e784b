"""The worker's executors and their typed task: the numpy executor trains exactly what
``eddl.learn`` trains for the same task, and a task off the wire becomes a ``TaskSpec``."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.learn.params import Params, clone
from eddl.proto.v1 import cluster_pb2, common_pb2
from eddl.worker.daemon import task_from_proto
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.training import NumpyExecutor

SGD_MODEL = {"sizes": [64, 16, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}
SGD_HYPER = {"lr": 0.2, "batch_size": 8}
TIFED_MODEL = {"sizes": [64, 32, 10]}
TIFED_HYPER = {"lr_inv": 512, "batch_size": 25, "feedback_seed": 3}


def _spec(algorithm: str, model: object, hyper: object, **fields: object) -> TaskSpec:
    values: dict[str, object] = {
        "job_id": "j1",
        "task_id": "t1",
        "version": 3,
        "dataset": "digits",
        "indexes": tuple(range(100, 180)),
        "algorithm": algorithm,
        "model_json": json.dumps(model),
        "hyper_json": json.dumps(hyper),
        "epochs": 2,
        "layer": -1,
        "seed": 17,
    }
    values.update(fields)
    return TaskSpec(**values)  # type: ignore[arg-type]


def _samples(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset(spec.dataset)
    rows = list(spec.indexes)
    return np.asarray(ds.x_train[rows]), np.asarray(ds.y_train[rows])


def _direct(spec: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray) -> Params:
    """The same task with eddl.learn alone: a fresh trainer, the task's seed for the order."""
    algo = get_algorithm(spec.algorithm, json.loads(spec.model_json), json.loads(spec.hyper_json))
    local = clone(params)
    trainer = algo.make_trainer(None if spec.layer < 0 else spec.layer)
    rng = np.random.default_rng(spec.seed)
    trainer.train(local, algo.prepare_inputs(x), y, epochs=spec.epochs, rng=rng)
    if spec.layer >= 0:
        return {k: v for k, v in local.items() if k in {f"W{spec.layer}", f"b{spec.layer}"}}
    return local


def _execute(executor: Executor, spec: TaskSpec, params: Params) -> TaskResult:
    executor.check(spec)
    x, y = _samples(spec)
    return asyncio.run(executor.execute(spec, params, x, y))


@pytest.mark.parametrize(
    ("algorithm", "model", "hyper", "layer"),
    [
        ("sgd", SGD_MODEL, SGD_HYPER, -1),
        ("tifed", TIFED_MODEL, TIFED_HYPER, -1),
        ("tifed-single", TIFED_MODEL, TIFED_HYPER, 1),
    ],
)
def test_numpy_executor_trains_what_eddl_learn_trains(
    algorithm: str, model: dict[str, object], hyper: dict[str, object], layer: int
) -> None:
    spec = _spec(algorithm, model, hyper, layer=layer)
    params = get_algorithm(algorithm, model, hyper).init_params(5)
    before = clone(params)
    result = _execute(NumpyExecutor(), spec, params)
    expected = _direct(spec, params, *_samples(spec))
    assert sorted(result.params) == sorted(expected)
    for name, value in expected.items():
        assert result.params[name].dtype == value.dtype
        np.testing.assert_array_equal(result.params[name], value)
    assert result.samples == spec.num_samples * spec.epochs
    assert result.steps > 0 and result.busy_seconds == result.train_seconds
    for name, value in before.items():  # the global model is the daemon's cache: untouched
        np.testing.assert_array_equal(params[name], value)


def test_a_pool_given_to_the_executor_runs_its_training() -> None:
    """The fleet simulator shares one bounded pool between many devices' executors: training
    runs there, and trains what it trains anywhere else."""
    spec = _spec("sgd", SGD_MODEL, SGD_HYPER)
    params = get_algorithm("sgd", SGD_MODEL, SGD_HYPER).init_params(5)
    threads: set[str] = set()
    executor = NumpyExecutor(pool=(pool := ThreadPoolExecutor(1, "train-pool")))
    train = executor.runner._train

    def spy(*args: object, **kwargs: object) -> object:
        threads.add(threading.current_thread().name)
        return train(*args, **kwargs)  # type: ignore[arg-type]

    executor.runner._train = spy  # type: ignore[method-assign]
    with pool:
        result = _execute(executor, spec, params)
    assert threads and all(t.startswith("train-pool") for t in threads)
    expected = _direct(spec, params, *_samples(spec))
    for name, value in expected.items():
        np.testing.assert_array_equal(result.params[name], value)


def test_the_task_seed_decides_the_sample_order() -> None:
    params = get_algorithm("sgd", SGD_MODEL, SGD_HYPER).init_params(5)
    executor = NumpyExecutor()
    a = _execute(executor, _spec("sgd", SGD_MODEL, SGD_HYPER, seed=1), params)
    b = _execute(executor, _spec("sgd", SGD_MODEL, SGD_HYPER, seed=2), params)
    assert not np.array_equal(a.params["W0"], b.params["W0"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"algorithm": "adam"}, "algorithm 'adam'"),
        ({"model_json": "{"}, "task model is not JSON"),
        ({"hyper_json": "[1, 2]"}, "hyper-parameters must be a JSON object"),
        ({"hyper_json": json.dumps({"lr": -1.0, "batch_size": 8})}, "lr"),
    ],
)
def test_numpy_executor_refuses_a_task_it_cannot_run(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        NumpyExecutor().check(replace(_spec("sgd", SGD_MODEL, SGD_HYPER), **fields))


def test_a_task_off_the_wire_becomes_a_task_spec() -> None:
    task = cluster_pb2.Task(
        envelope=common_pb2.Envelope(job_id="j9", model_version=41, term=2, node_id="w"),
        task_id="t7",
        dataset="mnist-10k",
        indexes=[5, 3, 9],
        epochs=3,
        layer=1,
        algorithm="tifed-single",
        model_json='{"sizes": [64, 32, 10]}',
        hyper_json="{}",
        seed=2**40,
    )
    assert task_from_proto(task) == TaskSpec(
        job_id="j9",
        task_id="t7",
        version=41,
        dataset="mnist-10k",
        indexes=(5, 3, 9),
        algorithm="tifed-single",
        model_json='{"sizes": [64, 32, 10]}',
        hyper_json="{}",
        epochs=3,
        layer=1,
        seed=2**40,
    )
    unset = task_from_proto(cluster_pb2.Task(task_id="t8"))
    assert unset.epochs == 1 and unset.num_samples == 0  # 0 epochs on the wire: not set
