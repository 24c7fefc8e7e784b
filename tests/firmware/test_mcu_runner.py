"""A task run through a device (McuTaskRunner, McuExecutor) equals the same task run by a Python
worker.

This is what lets a gateway's MCUs and Python workers share one aggregation: same samples in
the same order, same mini-batches, same integer steps, so the same update, bit for bit.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import numpy as np
import pytest

from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.learn.tifed import init_params
from eddl.mcu.driver import Device
from eddl.mcu.launch import Launched, start_sim
from eddl.worker.executor import TaskSpec
from eddl.worker.mcu_bench import benchmark_device
from eddl.worker.mcu_executor import DeviceLostError, McuExecutor
from eddl.worker.mcu_runner import McuTaskRunner
from eddl.worker.training import NumpyExecutor, TaskError, TaskRunner


def _task_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits")
    return np.asarray(ds.x_train[:n]), np.asarray(ds.y_train[:n])


@pytest.mark.parametrize(
    ("algorithm", "layer", "epochs", "buffer"),
    [("tifed", -1, 2, 50), ("tifed-single", 1, 1, 40), ("tifed-single", 0, 1, 1000)],
)
def test_device_task_equals_python_task(
    sim: Launched, algorithm: str, layer: int, epochs: int, buffer: int
) -> None:
    model = {"sizes": [64, 32, 10]}
    hyper = {"lr_inv": 512, "batch_size": 25, "feedback_seed": 3}
    algo = get_algorithm(algorithm, model, hyper)
    x, y = _task_data(130)
    # Start from a trained model, not zeros, so every weight is in play.
    start = init_params(algo.config)
    warm = algo.make_trainer(None if algorithm == "tifed" else 0)
    warm.train(start, *_task_data(200), epochs=1)

    python = asyncio.run(TaskRunner().run(algo, start, x, y, epochs=epochs, layer=layer, seed=11))
    with Device.open(sim.url) as dev:
        runner = McuTaskRunner(dev, max_buffer=buffer, train_timeout=30.0)
        device = runner.run(algorithm, algo, start, x, y, epochs=epochs, layer=layer, seed=11)
        # The model stays set up on the device: a second task reuses it.
        again = runner.run(algorithm, algo, start, x, y, epochs=epochs, layer=layer, seed=11)
    assert sorted(device.params) == sorted(python.params)
    for name, value in python.params.items():
        assert device.params[name].dtype == value.dtype
        np.testing.assert_array_equal(device.params[name], value)
        np.testing.assert_array_equal(again.params[name], value)
    assert device.samples == python.samples == 130 * epochs
    assert device.steps == python.steps
    assert device.kernel_ticks > 0 and 0 < device.link_seconds < device.busy_seconds
    assert 0 < device.overhead_seconds < device.link_seconds


def test_runner_refuses_what_the_device_cannot_do(sim: Launched) -> None:
    algo = get_algorithm("tifed", {"sizes": [64, 32, 10]}, {})
    x, y = _task_data(30)
    params = init_params(algo.config)
    with Device.open(sim.url) as dev:
        runner = McuTaskRunner(dev, max_buffer=100, train_timeout=30.0)
        with pytest.raises(TaskError, match="not sgd"):
            runner.run("sgd", algo, params, x, y, epochs=1, layer=-1, seed=0)
        with pytest.raises(TaskError, match="layer"):
            runner.run("tifed", algo, params, x, y, epochs=1, layer=0, seed=0)
        with pytest.raises(TaskError, match="shapes"):
            runner.run("tifed", algo, params, x[:0], y[:0], epochs=1, layer=-1, seed=0)
        huge = get_algorithm("tifed", {"sizes": [64, 60000, 10]}, {})
        big_params = init_params(huge.config)
        with pytest.raises(TaskError, match="does not fit"):
            runner.run("tifed", huge, big_params, x, y, epochs=1, layer=-1, seed=0)
        # Nothing above reached the device's model: a good task still runs.
        ok = runner.run("tifed", algo, params, x, y, epochs=1, layer=-1, seed=0)
        assert ok.samples == 30


def test_benchmark_measures_ticks_and_link(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        bench = benchmark_device(dev, max_buffer=100, timeout=30.0)
    assert bench is not None and bench.model == "tifed 64-32-10"
    assert bench.ticks_per_sample > 0
    assert bench.samples_per_second > 0 and bench.link_bytes_per_second > 0


async def test_verify_refuses_an_update_that_differs_from_the_reference(sim: Launched) -> None:
    algo = get_algorithm("tifed", {"sizes": [64, 32, 10]}, {"batch_size": 25})
    x, y = _task_data(60)
    params = init_params(algo.config)
    task = TaskSpec("j", "t1", 0, "digits", tuple(range(60)), "tifed", "", "", seed=5)
    lost: list[str] = []
    with Device.open(sim.url) as dev:
        executor = McuExecutor(
            dev, max_buffer=250, train_timeout=30.0, verify=True, on_lost=lost.append
        )
        good = executor.runner.run("tifed", algo, params, x, y, epochs=1, layer=-1, seed=5)
        await executor._verify(task, algo, params, x, y, good)
        assert executor.counters.verified == 1 and executor.lost is None
        bad_w = good.params["W0"].copy()
        bad_w[3, 4] += 1
        bad = replace(good, params={**good.params, "W0": bad_w})
        with pytest.raises(DeviceLostError):
            await executor._verify(task, algo, params, x, y, bad)
    assert executor.counters.mismatches == 1
    assert executor.lost is not None and "reference" in executor.lost
    assert lost == [executor.lost]


def _tifed_task(n: int, **fields: object) -> TaskSpec:
    values: dict[str, object] = {
        "job_id": "j",
        "task_id": "t1",
        "version": 0,
        "dataset": "digits",
        "indexes": tuple(range(n)),
        "algorithm": "tifed",
        "model_json": json.dumps({"sizes": [64, 32, 10]}),
        "hyper_json": json.dumps({"lr_inv": 512, "batch_size": 25, "feedback_seed": 3}),
        "epochs": 2,
        "layer": -1,
        "seed": 9,
    }
    values.update(fields)
    return TaskSpec(**values)  # type: ignore[arg-type]


async def test_mcu_executor_trains_what_the_numpy_executor_trains(sim: Launched) -> None:
    task = _tifed_task(80)
    x, y = _task_data(80)
    params = init_params(get_algorithm("tifed", {"sizes": [64, 32, 10]}, {}).config)
    python = await NumpyExecutor().execute(task, params, x, y)
    with Device.open(sim.url) as dev:
        executor = McuExecutor(dev, max_buffer=50, train_timeout=30.0, verify=True)
        executor.check(task)
        device = await executor.execute(task, params, x, y)
    for name, value in python.params.items():
        np.testing.assert_array_equal(device.params[name], value)
    c = executor.counters
    assert c.tasks == 1 and c.samples == 160 and c.kernel_ticks == device.kernel_ticks > 0
    assert c.verified == 1 and c.mismatches == 0 and executor.lost is None


def test_mcu_executor_refuses_what_no_device_runs(sim: Launched) -> None:
    with Device.open(sim.url) as dev:
        executor = McuExecutor(dev, max_buffer=50, train_timeout=30.0, name="gw.mcu0")
        with pytest.raises(
            TaskError, match=r"gw\.mcu0 runs tifed, tifed-single, lsgd, lsgd-q8, not sgd"
        ):
            executor.check(_tifed_task(10, algorithm="sgd"))
        with pytest.raises(TaskError, match="not JSON"):
            executor.check(_tifed_task(10, model_json="{"))
    assert executor.lost is None


async def test_a_link_that_fails_loses_the_device_once_and_refuses_later_tasks() -> None:
    task = _tifed_task(30)
    x, y = _task_data(30)
    params = init_params(get_algorithm("tifed", {"sizes": [64, 32, 10]}, {}).config)
    lost: list[str] = []
    with start_sim("tcp", lifetime=60) as sim:
        dev = Device.open(sim.url, timeout=0.3, retries=2)
        try:
            executor = McuExecutor(dev, max_buffer=50, train_timeout=5.0, on_lost=lost.append)
            sim.close()  # the device vanishes
            with pytest.raises(DeviceLostError, match="device lost during task t1"):
                await executor.execute(task, params, x, y)
            await executor.check_device()  # a lost device is not asked again
            with pytest.raises(DeviceLostError):
                await executor.execute(task, params, x, y)
        finally:
            dev.close()
    assert len(lost) == 1 and lost == [executor.lost]
    assert executor.counters.tasks == 0


def _q8_job(n: int) -> tuple[TaskSpec, dict[str, np.ndarray]]:
    """An lsgd-q8 fine-tuning task: a float model trained a little, quantized."""
    from eddl.learn.algorithms import Q8Algorithm
    from eddl.learn.model import init_params as float_init

    model = {"sizes": [64, 24, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}
    floats = float_init(get_algorithm("lsgd", model, {}).spec, 2)
    x, y = _task_data(200)
    get_algorithm("lsgd", model, {"lr": 0.05}).make_trainer().train(
        floats, x.astype(np.float32) / 255, y
    )
    algo, q8 = Q8Algorithm.from_float(model, floats, {"lr_shift": 4})
    task = _tifed_task(
        n,
        algorithm="lsgd-q8",
        model_json=json.dumps(dict(algo.model)),
        hyper_json=json.dumps(dict(algo.hyper)),
    )
    return task, q8


async def test_mcu_executor_lsgd_q8_task_is_bit_exact_with_the_numpy_executor(
    sim: Launched,
) -> None:
    task, params = _q8_job(70)
    x, y = _task_data(70)
    numpy_executor = NumpyExecutor()
    python = await numpy_executor.execute(task, params, x, y)
    again = await numpy_executor.execute(task, params, x, y)  # a warm executor, same update
    with Device.open(sim.url) as dev:
        executor = McuExecutor(dev, max_buffer=30, train_timeout=30.0, verify=True)
        executor.check(task)
        device = await executor.execute(task, params, x, y)
    assert sorted(device.params) == sorted(python.params)
    for name, value in python.params.items():
        assert device.params[name].dtype == np.int8
        np.testing.assert_array_equal(device.params[name], value)
        np.testing.assert_array_equal(again.params[name], value)
    assert any(not np.array_equal(device.params[k], params[k]) for k in params)
    assert executor.counters.verified == 1 and executor.lost is None


async def test_mcu_executor_lsgd_task_matches_the_numpy_executor(sim: Launched) -> None:
    model = {"sizes": [64, 16, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}
    hyper = {"lr": 0.05}
    task = _tifed_task(
        50, algorithm="lsgd", model_json=json.dumps(model), hyper_json=json.dumps(hyper)
    )
    x, y = _task_data(50)
    params = get_algorithm("lsgd", model, hyper).init_params(4)
    python = await NumpyExecutor().execute(task, params, x, y)
    with Device.open(sim.url) as dev:
        executor = McuExecutor(dev, max_buffer=20, train_timeout=30.0, verify=True)
        device = await executor.execute(task, params, x, y)
    for name, value in python.params.items():
        np.testing.assert_allclose(device.params[name], value, rtol=1e-4, atol=1e-5)
    assert executor.counters.mismatches == 0


def test_inner_loop_on_the_device_uploads_numpy_s_top_p(sim: Launched) -> None:
    """TinyMetaFed's inner loop on lsgd-q8: one pass, batch 1, in arrival order, then top-P of
    the shared layer; equal to numpy's pass and numpy's top_p, entry for entry."""
    from eddl.learn import lsgd_q8
    from eddl.learn.algorithms import Q8Algorithm
    from eddl.learn.topp import top_p

    task, theta = _q8_job(40)
    algo = get_algorithm(task.algorithm, json.loads(task.model_json), json.loads(task.hyper_json))
    assert isinstance(algo, Q8Algorithm)
    x, y = _task_data(40)
    phi = {k: v.copy() for k, v in theta.items()}
    lsgd_q8.LSGDQ8Trainer(algo.spec, algo.fmt, lr_shift=4, seed=0).train(phi, x, y)
    fw, fb = algo.fmt.weight_frac[0], algo.fmt.bias_frac[0]
    delta = {
        "W0": (phi["W0"].astype(np.float32) - theta["W0"]) * np.float32(2.0**-fw),
        "b0": (phi["b0"].astype(np.float32) - theta["b0"]) * np.float32(2.0**-fb),
    }
    want = top_p(delta, 10.0)
    with Device.open(sim.url) as dev:
        runner = McuTaskRunner(dev, max_buffer=15, train_timeout=30.0)
        got = runner.inner_loop("lsgd-q8", algo, theta, x, y, shared_layers=1, top_p=10.0)
        with pytest.raises(TaskError, match="shared_layers"):
            runner.inner_loop("lsgd-q8", algo, theta, x, y, shared_layers=3, top_p=10.0)
    assert got.samples == 40 and got.kernel_ticks > 0
    assert list(got.selected) == ["W0", "b0"]
    for name in want:
        np.testing.assert_array_equal(got.selected[name].indices, want[name].indices)
        np.testing.assert_array_equal(got.selected[name].values, want[name].values)
