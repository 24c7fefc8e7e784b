"""MetaHooks: what a meta job adds to the leader; sparse uploads refused before any change."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.jobspec import JobSpec
from eddl.leader.errors import UpdateRejectedError
from eddl.leader.metaruntime import MetaHooks
from eddl.leader.runtime import build_runtime
from eddl.learn.reptile import MetaLrSchedule
from eddl.net.sparse import SparseRecord

SPEC = {
    "job_id": "m",
    "dataset": "digits",
    "algorithm": "tinymetafed",
    "aggregation": "sync",
    "rounds": 2,
    "model": {"devices": 3, "held_out": 2, "samples": 4},
    "hyper": {"local_layers": 1, "shots": 2, "meta_lr": 0.5},
}


def _hooks(**over: object) -> tuple[MetaHooks, dict[str, np.ndarray]]:
    spec = JobSpec.from_mapping({**SPEC, **over})
    runtime = build_runtime(spec)
    assert runtime.meta is not None and runtime.sync_rule == "reptile"
    assert runtime.sync_params is not None
    assert runtime.sync_params["meta_lr"] == spec.hyper.get("meta_lr", 1.0)
    schedule = runtime.sync_params["schedule"]
    assert isinstance(schedule, MetaLrSchedule) and schedule.rounds == spec.rounds
    return runtime.meta, dict(runtime.initial_params)


def _rec(name: str, shape: tuple[int, ...], idx: list[int], val: float) -> SparseRecord:
    return SparseRecord(name, shape, np.asarray(idx), np.full(len(idx), val, np.float32))


def test_dense_update_adds_the_delta_to_the_base_version() -> None:
    hooks, theta = _hooks()
    phi = hooks.dense_update(theta, {"b1": _rec("b1", (32,), [3], 0.25)})
    assert set(phi) == set(theta) == {"W0", "b0", "W1", "b1"}
    assert phi["b1"][3] == pytest.approx(theta["b1"][3] + 0.25)
    assert np.array_equal(phi["W0"], theta["W0"])


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (_rec("W2", (32, 5), [0], 1.0), "local layers are never uploaded"),
        (_rec("W0", (64, 41), [0], 1.0), "shape"),
    ],
)
def test_records_for_local_or_misshapen_tensors_are_refused(
    record: SparseRecord, says: str
) -> None:
    hooks, theta = _hooks()
    with pytest.raises(UpdateRejectedError, match=says):
        hooks.dense_update(theta, {record.name: record})


def test_a_reptile_job_refuses_sparse_records() -> None:
    hooks, theta = _hooks(algorithm="reptile", hyper={})
    with pytest.raises(UpdateRejectedError, match="dense"):
        hooks.dense_update(theta, {"b0": _rec("b0", (40,), [0], 1.0)})


def test_uploads_are_counted_per_round_and_a_refused_one_is_taken_out() -> None:
    hooks, _ = _hooks()
    hooks.uploaded(0, 100, sparse=True)
    hooks.uploaded(0, 300, sparse=True)
    hooks.uploaded(1, 50, sparse=True)
    hooks.uploaded(1, 50, sparse=True, sign=-1)
    report = hooks.status(1)
    assert report["uploads"] == 2 and report["upload_bytes"] == 400
    assert report["upload_bytes_per_device_round"] == 200
    assert report["last_round"] == {"round": 0, "devices": 2, "bytes_per_device": 200.0}


def test_few_shot_evaluation_is_the_accuracy_and_mse_is_reported_beside() -> None:
    hooks, theta = _hooks()
    score = hooks.evaluate(theta)
    assert score is not None and 0.0 <= score <= 1.0 and hooks.report.few_shot == score
    sine, theta = _hooks(dataset="sine", algorithm="reptile", hyper={"shots": 3})
    assert sine.evaluate(theta) is None
    assert sine.report.few_shot is not None and sine.report.few_shot > 0
