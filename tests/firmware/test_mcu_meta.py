"""A TinyMetaFed device round on a microcontroller equals a Python worker's: the same
reconstruction, the same online pass (float lsgd to float tolerance; lsgd-q8 bit for bit, on
the host simulator and under QEMU on the Cortex-M3, M4F and M7 images), the same top-P entries
selected on the device; the local head never leaves it. Character tasks reach the device as
uint8 pixels, sine and presence as float32 samples."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from eddl.mcu.driver import Device
from eddl.mcu.launch import Launched
from eddl.metajob import MetaJobConfig, meta_job
from eddl.worker.executor import TaskError, TaskResult, TaskSpec
from eddl.worker.mcu_meta import check_mcu_meta_task, run_mcu_meta_task
from eddl.worker.mcu_runner import McuTaskRunner
from eddl.worker.metatask import run_meta_task
from eddl.worker.transfer import sparse_records


def _task(algorithm: str, hyper: dict[str, object], device: int = 2) -> TaskSpec:
    model = {"devices": 4, "held_out": 2, "samples": 6, "task": "characters", "task_seed": 3}
    return TaskSpec(
        job_id="j",
        task_id="t1",
        version=0,
        dataset="digits",
        indexes=(device,),
        algorithm=algorithm,
        model_json=json.dumps(model),
        hyper_json=json.dumps(hyper),
        seed=11,
    )


@pytest.mark.parametrize(
    ("algorithm", "hyper"),
    [
        ("tinymetafed", {"top_p": 10, "local_layers": 1, "lr": 0.05}),
        ("reptile", {"lr": 0.05}),
    ],
)
def test_device_round_on_the_mcu_equals_the_python_workers(
    sim: Launched, algorithm: str, hyper: dict[str, object]
) -> None:
    task = _task(algorithm, hyper)
    job = meta_job(MetaJobConfig.of_wire(algorithm, "digits", task.model_json, task.hyper_json))
    theta = job.initial_shared()
    want = run_meta_task(task, theta)
    with Device.open(sim.url) as dev:
        got = run_mcu_meta_task(McuTaskRunner(dev, max_buffer=16, train_timeout=30.0), task, theta)
    assert got.samples == want.samples == 30
    _assert_same_float_round(got, want, algorithm)


def _assert_same_float_round(got: TaskResult, want: TaskResult, algorithm: str) -> None:
    """The device's float round is the Python worker's: the same top-P entries (TinyMetaFed:
    shared layers only) or the same dense φ (Reptile), values to float tolerance."""
    if algorithm == "tinymetafed":
        assert got.sparse is not None and want.sparse is not None and not got.params
        assert list(got.sparse) == list(want.sparse) == ["W0", "b0", "W1", "b1"]  # no head
        for name, w in want.sparse.items():
            np.testing.assert_array_equal(got.sparse[name].indices, w.indices, err_msg=name)
            np.testing.assert_allclose(
                got.sparse[name].values, w.values, rtol=1e-3, atol=1e-5, err_msg=name
            )
    else:
        assert got.sparse is None and sorted(got.params) == sorted(want.params)
        for name, w in want.params.items():
            np.testing.assert_allclose(got.params[name], w, rtol=1e-4, atol=1e-5, err_msg=name)


def _float_task(dataset: str, algorithm: str, hyper: dict[str, object]) -> TaskSpec:
    model = {"devices": 4, "held_out": 2, "samples": 8, "task": dataset, "task_seed": 5}
    if dataset == "sine":
        model["hidden"] = [16, 12]
    return TaskSpec(
        job_id="j",
        task_id="t2",
        version=0,
        dataset=dataset,
        indexes=(1,),
        algorithm=algorithm,
        model_json=json.dumps(model),
        hyper_json=json.dumps(hyper),
        seed=13,
    )


@pytest.mark.parametrize(
    ("dataset", "algorithm", "hyper"),
    [
        ("sine", "tinymetafed", {"top_p": 20, "local_layers": 1, "lr": 0.02}),
        ("sine", "reptile", {"lr": 0.02}),
        ("presence", "tinymetafed", {"top_p": 10, "local_layers": 1, "lr": 0.05}),
    ],
)
def test_float_task_device_round_on_the_mcu_equals_the_python_workers(
    board: Launched, dataset: str, algorithm: str, hyper: dict[str, object]
) -> None:
    """Sine (float inputs and regression targets) and presence (float features, labels) go to
    the device as float32 samples; its round equals a Python worker's to float tolerance."""
    task = _float_task(dataset, algorithm, hyper)
    job = meta_job(MetaJobConfig.of_wire(algorithm, dataset, task.model_json, task.hyper_json))
    theta = job.initial_shared()
    want = run_meta_task(task, theta)
    with Device.open(board.url, timeout=5.0) as dev:
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=60.0)
        got = run_mcu_meta_task(runner, task, theta)
        assert runner._model is not None and runner._model.spec.float_inputs
        assert runner._model.spec.float_targets == (dataset == "sine")
    assert got.samples == want.samples and got.steps == want.steps and got.kernel_ticks > 0
    _assert_same_float_round(got, want, algorithm)
    if want.sparse is not None:
        assert sum(len(w.values) for w in want.sparse.values()) > 0
    else:
        assert any(not np.array_equal(want.params[n], theta[n]) for n in theta)  # it learned


def test_an_lsgd_q8_sine_task_is_refused_before_anything_reaches_the_device(sim: Launched) -> None:
    task = _float_task("sine", "tinymetafed", {"kernel": "lsgd-q8"})
    with Device.open(sim.url) as dev:
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=30.0)
        before = dev.stats()
        with pytest.raises(TaskError, match="lsgd-q8 runs on uint8 pixels"):
            run_mcu_meta_task(runner, task, {})
        after = dev.stats()
    assert after.frames_ok == before.frames_ok + 1  # the second STATS alone reached it


def test_a_sine_task_for_firmware_without_float_samples_is_refused_before_any_transfer(
    sim: Launched,
) -> None:
    """The gateway holds the device's HELLO; one without the float-sample flag (firmware
    0.1.x, whose SETUP would answer BAD_ARG) gets no sine task: both the executor's check and
    the runner refuse it, and nothing reaches the device."""
    task = _float_task("sine", "tinymetafed", {"top_p": 20, "local_layers": 1})
    with Device.open(sim.url) as dev:
        assert dev.info is not None and dev.info.float_samples
        dev.info = dataclasses.replace(dev.info, firmware_version="0.1.0", float_samples=False)
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=30.0)
        config = MetaJobConfig.of_wire("tinymetafed", "sine", task.model_json, task.hyper_json)
        theta = meta_job(config).initial_shared()
        before = dev.stats()
        with pytest.raises(TaskError, match="mcu0: tinymetafed on the sine task: the job's"):
            check_mcu_meta_task(runner, task, "mcu0")
        with pytest.raises(TaskError, match="HELLO lacks the float-sample flag"):
            run_mcu_meta_task(runner, task, theta)
        after = dev.stats()
    assert after.frames_ok == before.frames_ok + 1  # the second STATS alone reached it


@pytest.mark.parametrize(
    ("algorithm", "hyper"),
    [
        ("tinymetafed", {"top_p": 10, "local_layers": 1, "lr": 0.0625, "kernel": "lsgd-q8"}),
        (
            "tinymetafed",
            {"top_p": 25, "local_layers": 1, "lr": 0.1, "kernel": "lsgd-q8", "inner_epochs": 2},
        ),
        ("reptile", {"lr": 0.125, "kernel": "lsgd-q8"}),
    ],
)
def test_lsgd_q8_device_round_is_bit_exact_with_the_python_workers(
    board: Launched, algorithm: str, hyper: dict[str, object]
) -> None:
    task = _task(algorithm, hyper, device=1)
    job = meta_job(MetaJobConfig.of_wire(algorithm, "digits", task.model_json, task.hyper_json))
    theta = job.initial_shared()
    want = run_meta_task(task, theta)
    with Device.open(board.url, timeout=5.0) as dev:
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=120.0)
        got = run_mcu_meta_task(runner, task, theta)
    epochs = int(str(hyper.get("inner_epochs", 1)))
    assert got.samples == want.samples == 30 and got.steps == want.steps == 30 * epochs
    assert got.kernel_ticks > 0
    if algorithm == "tinymetafed":
        assert got.sparse is not None and want.sparse is not None
        assert list(got.sparse) == list(want.sparse) == ["W0", "b0", "W1", "b1"]  # no head
        for name, w in want.sparse.items():
            np.testing.assert_array_equal(got.sparse[name].indices, w.indices, err_msg=name)
            np.testing.assert_array_equal(got.sparse[name].values, w.values, err_msg=name)
        assert sum(len(w.values) for w in want.sparse.values()) > 0
    else:
        assert sorted(got.params) == sorted(want.params) == sorted(theta)
        for name, w in want.params.items():
            np.testing.assert_array_equal(got.params[name], w, err_msg=name)
        assert any(not np.array_equal(want.params[n], theta[n]) for n in theta)  # it learned


@pytest.mark.parametrize(
    "hyper",
    [
        {"top_p": 10, "local_layers": 1, "lr": 0.0625, "kernel": "lsgd-q8", "values": "int8"},
        {"top_p": 20, "local_layers": 1, "lr": 0.05, "values": "int8"},
    ],
)
def test_int8_values_are_made_on_the_device_and_forwarded_as_they_are(
    board: Launched, hyper: dict[str, object]
) -> None:
    """The gateway uploads the device's own int8 records: for lsgd-q8 they are, byte for byte,
    what a Python worker uploads; for float lsgd they quantise the device's float update."""
    task = _task("tinymetafed", hyper, device=3)
    job = meta_job(MetaJobConfig.of_wire("tinymetafed", "digits", task.model_json, task.hyper_json))
    theta = job.initial_shared()
    want = run_meta_task(task, theta)
    with Device.open(board.url, timeout=5.0) as dev:
        runner = McuTaskRunner(dev, max_buffer=16, train_timeout=120.0)
        got = run_mcu_meta_task(runner, task, theta)
    assert got.records is not None and want.records is None and got.value_dtype == "int8"
    assert sparse_records(got) == list(got.records)  # forwarded, not encoded again
    upload = sparse_records(want)
    assert upload is not None and [m.name for m in got.records] == ["W0", "b0", "W1", "b1"]
    assert all(m.value_dtype == "int8" for m in got.records)
    if hyper.get("kernel") == "lsgd-q8":
        assert [m.SerializeToString() for m in got.records] == [
            m.SerializeToString() for m in upload
        ]
    else:
        for g, w in zip(got.records, upload, strict=True):
            assert list(g.index_gaps) == list(w.index_gaps), g.name
            assert g.scale == pytest.approx(w.scale, rel=1e-3), g.name
            qg, qw = (np.frombuffer(m.values, np.int8).astype(int) for m in (g, w))
            assert np.abs(qg - qw).max(initial=0) <= 1, g.name
    assert got.sparse is not None and sum(len(s.indices) for s in got.sparse.values()) > 0
