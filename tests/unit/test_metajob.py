"""Meta-learning jobs: one check for the CLI and the leader, a model the workers read back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eddl.jobcheck import check_job, check_spec
from eddl.jobspec import JobSpec, JobSpecError
from eddl.metajob import CheckedMetaJob, MetaJobConfig, check_meta_job, meta_job

BASE: dict[str, Any] = {
    "job_id": "m1",
    "dataset": "digits",
    "algorithm": "tinymetafed",
    "aggregation": "sync",
    "rounds": 3,
    "seed": 5,
    "model": {"devices": 4, "held_out": 2, "samples": 4},
    "hyper": {"top_p": 20, "local_layers": 1},
}


def _spec(**over: Any) -> JobSpec:
    return JobSpec.from_mapping({**BASE, **over})


def test_the_resolved_model_gives_workers_the_leader_s_job() -> None:
    checked = check_meta_job(_spec())
    model = dict(checked.spec.model)
    assert model["sizes"] == [64, 40, 32, 5] and model["task_seed"] == 5
    leader = MetaJobConfig.of_spec(checked.spec)
    worker = MetaJobConfig.of_wire(
        "tinymetafed", "digits", json.dumps(model), json.dumps(BASE["hyper"])
    )
    assert worker == leader
    job = meta_job(worker)
    assert set(checked.initial_params) == {"W0", "b0", "W1", "b1"}  # the head stays local
    assert len(job.tasks.train) == 4 and len(job.tasks.held_out) == 2


def test_check_spec_dispatches_and_check_job_refuses_meta_jobs() -> None:
    assert isinstance(check_spec(_spec()), CheckedMetaJob)
    with pytest.raises(JobSpecError, match="check_spec"):
        check_job(_spec())


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"aggregation": "auto"}, "job.aggregation"),
        ({"sync_params": {"server_lr": 0.5}}, "job.sync_params"),
        ({"rounds": None, "target_accuracy": 0.5}, "job.rounds"),
        ({"dataset": "mnist"}, "job.dataset"),
        ({"model": {"devices": 0}}, "job.model.devices"),
        ({"model": {"layers": 3}}, "job.model: unknown key"),
        ({"model": {"hidden": [0]}}, "job.model.hidden"),
        ({"hyper": {"top_p": 0}}, "job.hyper.top_p"),
        ({"hyper": {"recon_epochs": 0}}, "job.hyper.recon_epochs"),
        ({"hyper": {"recon_epochs": True}}, "job.hyper.recon_epochs"),
        ({"hyper": {"recon_epochs": 2.5}}, "job.hyper.recon_epochs"),
        ({"hyper": {"batch_size": 4}}, "job.hyper"),
        ({"dataset": "sine", "target_accuracy": 0.5}, "job.target_accuracy"),
        ({"algorithm": "reptile"}, "job.hyper"),  # top_p is TinyMetaFed's
    ],
)
def test_bad_meta_jobs_are_refused_naming_the_key(over: dict[str, Any], says: str) -> None:
    with pytest.raises(JobSpecError, match=says.replace(".", r"\.")):
        check_spec(_spec(**over))


def test_a_sine_reptile_job_is_scored_by_mse() -> None:
    checked = check_meta_job(_spec(dataset="sine", algorithm="reptile", hyper={}))
    assert checked.job.model.metric == "mse"
    assert checked.spec.model["task"] == "sine" and checked.spec.model["sizes"] == [1, 40, 40, 1]


def test_local_layers_are_rebuilt_with_two_passes_unless_the_job_says() -> None:
    assert check_meta_job(_spec()).job.options.recon_epochs == 2
    five = check_meta_job(_spec(hyper={"local_layers": 1, "recon_epochs": 5}))
    assert five.job.options.recon_epochs == 5
