"""A Python worker's device round with error feedback: the node keeps what top-P left out."""

from __future__ import annotations

import json

import numpy as np

from eddl.learn.tinymetafed import device_round
from eddl.learn.topp import densify, top_p_feedback
from eddl.metajob import MetaJobConfig, meta_job
from eddl.worker.executor import TaskSpec
from eddl.worker.metatask import RESIDUALS, Residuals, run_meta_task

_MODEL = {"devices": 4, "held_out": 2, "samples": 6, "task": "characters", "task_seed": 3}
_HYPER = {"top_p": 10, "error_feedback": True}


def _task(job_id: str, seed: int) -> TaskSpec:
    return TaskSpec(
        job_id=job_id,
        task_id=f"t{seed}",
        version=0,
        dataset="digits",
        indexes=(1,),
        algorithm="tinymetafed",
        model_json=json.dumps(_MODEL),
        hyper_json=json.dumps(_HYPER),
        seed=seed,
    )


def test_the_second_round_sends_what_the_first_left_out() -> None:
    task = _task("feedback-job", 5)
    job = meta_job(
        MetaJobConfig.of_wire(task.algorithm, task.dataset, task.model_json, task.hyper_json)
    )
    theta = job.split.shared(job.model.init_params(0))
    dev = job.tasks.train[1]
    assert RESIDUALS.take("feedback-job", 1) is None
    first = run_meta_task(task, theta)
    second = run_meta_task(_task("feedback-job", 6), theta)

    plain = job.options.__class__(**{**job.options.__dict__, "error_feedback": False})
    d1 = device_round(job.model, job.split, theta, dev.x_train, dev.y_train, plain, seed=5)
    d2 = device_round(job.model, job.split, theta, dev.x_train, dev.y_train, plain, seed=6)
    sel1, kept1 = top_p_feedback(d1.delta, None, 10.0)
    sel2, kept2 = top_p_feedback(d2.delta, kept1, 10.0)
    assert first.sparse is not None and second.sparse is not None
    for got, want in ((first.sparse, sel1), (second.sparse, sel2)):
        for name, s in want.items():
            np.testing.assert_array_equal(got[name].indices, s.indices)
            np.testing.assert_array_equal(got[name].values, s.values)
    held = RESIDUALS.take("feedback-job", 1)
    assert held is not None
    for name, r in kept2.items():
        np.testing.assert_array_equal(held[name], r)
    assert not any(densify(sel2)[n][kept2[n] != 0].any() for n in kept2)


def test_residuals_drop_the_least_recently_kept() -> None:
    store = Residuals(limit=2)
    one = {"W0": np.ones(2, np.float32)}
    for device in range(3):
        store.keep("j", device, one)
    assert store.take("j", 0) is None
    assert store.take("j", 2) is not None and store.take("j", 2) is None
