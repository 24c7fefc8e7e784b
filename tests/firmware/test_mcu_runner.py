"""A task run through a device (McuTaskRunner) equals the same task run by a Python worker.

This is what lets a gateway's MCUs and Python workers share one aggregation: same samples in
the same order, same mini-batches, same integer steps, so the same update, bit for bit.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.learn.tifed import init_params
from eddl.mcu.driver import Device
from eddl.mcu.launch import Launched
from eddl.proto.v1 import cluster_pb2
from eddl.worker.config import WorkerConfig
from eddl.worker.gateway import DeviceLostError, McuAgent
from eddl.worker.mcu_runner import McuTaskRunner, benchmark_device
from eddl.worker.training import TaskError, TaskRunner


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
        device = runner.run(
            algorithm, algo.config, start, x, y, epochs=epochs, layer=layer, seed=11
        )
        # The model stays set up on the device: a second task reuses it.
        again = runner.run(algorithm, algo.config, start, x, y, epochs=epochs, layer=layer, seed=11)
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
            runner.run("sgd", algo.config, params, x, y, epochs=1, layer=-1, seed=0)
        with pytest.raises(TaskError, match="layer"):
            runner.run("tifed", algo.config, params, x, y, epochs=1, layer=0, seed=0)
        with pytest.raises(TaskError, match="shapes"):
            runner.run("tifed", algo.config, params, x[:0], y[:0], epochs=1, layer=-1, seed=0)
        huge = get_algorithm("tifed", {"sizes": [64, 60000, 10]}, {})
        big_params = init_params(huge.config)
        with pytest.raises(TaskError, match="does not fit"):
            runner.run("tifed", huge.config, big_params, x, y, epochs=1, layer=-1, seed=0)
        # Nothing above reached the device's model: a good task still runs.
        ok = runner.run("tifed", algo.config, params, x, y, epochs=1, layer=-1, seed=0)
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
    task = cluster_pb2.Task(task_id="t1", algorithm="tifed", layer=-1, seed=5, epochs=1)
    config = WorkerConfig(node_id="gw", mcu=[sim.url], mcu_verify=True, bind="")
    with Device.open(sim.url) as dev:
        agent = McuAgent(config, "gw.mcu0", sim.url, dev, None)
        good = agent.mcu.run("tifed", algo.config, params, x, y, epochs=1, layer=-1, seed=5)
        await agent._verify(task, algo, params, x, y, good)
        assert agent.counters.verified == 1 and agent.lost is None
        bad_w = good.params["W0"].copy()
        bad_w[3, 4] += 1
        bad = replace(good, params={**good.params, "W0": bad_w})
        with pytest.raises(DeviceLostError):
            await agent._verify(task, algo, params, x, y, bad)
    assert agent.counters.mismatches == 1
    assert agent.lost is not None and "reference" in agent.lost
