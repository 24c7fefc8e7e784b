"""Meta-learning options in the algorithm registry, and short runs of ``eddl train``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eddl.cli import main
from eddl.jobcheck import check_spec
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.algorithms import AlgorithmError, default_model, get_algorithm
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.tinymetafed import device_round
from eddl.metajob import CheckedMetaJob
from eddl.metasim import MetaConfig, make_model, make_tasks, run_meta


@pytest.mark.parametrize(
    ("hyper", "key"),
    [
        ({"top_p": 0}, "hyper.top_p"),
        ({"top_p": 101}, "hyper.top_p"),
        ({"meta_lr": 1.5}, "hyper.meta_lr"),
        ({"meta_lr": 0.5, "meta_lr_final": 0.6}, "hyper.meta_lr_final"),
        ({"shots": 0}, "hyper.shots"),
        ({"shots": 10**6}, "hyper.shots"),
        ({"inner_epochs": 101}, "hyper.inner_epochs"),
        ({"local_layers": 3}, "hyper.local_layers"),
        ({"values": "int4"}, "hyper.values"),
        ({"error_feedback": 1}, "hyper.error_feedback"),
        ({"batch_size": 4}, "hyper"),
    ],
)
def test_registry_bounds_tinymetafed_options(hyper: dict, key: str) -> None:
    model = default_model("tinymetafed", 64, 5)
    with pytest.raises(AlgorithmError) as info:
        get_algorithm("tinymetafed", model, hyper)
    assert info.value.key == key


def test_reptile_refuses_tinymetafed_only_options() -> None:
    with pytest.raises(AlgorithmError):
        get_algorithm("reptile", default_model("reptile", 64), {"top_p": 10})


def test_job_check_accepts_and_bounds_meta_jobs() -> None:
    job = {"dataset": "digits", "algorithm": "tinymetafed", "rounds": 3, "aggregation": "sync"}
    ok = JobSpec.from_mapping({**job, "hyper": {"top_p": 5}})
    checked = check_spec(ok)
    assert isinstance(checked, CheckedMetaJob) and checked.job.options.top_p == 5
    bad = JobSpec.from_mapping({**job, "hyper": {"top_p": 0}})
    with pytest.raises(JobSpecError, match=r"job\.hyper\.top_p"):
        check_spec(bad)


@pytest.mark.parametrize("task", ["sine", "characters", "presence"])
def test_short_runs_report_few_shot_and_measured_bytes(task: str) -> None:
    cfg = MetaConfig(
        task=task,
        train_devices=4,
        held_out_devices=2,
        rounds=2,
        shots=(1, 2),
        samples=6,
        hyper={"devices_per_round": 2, "eval_epochs": 2},
    )
    result = run_meta(cfg)
    assert set(result.few_shot) == {1, 2} and len(result.history) == 2
    assert 0 < result.upload_bytes < result.download_bytes <= result.dense_bytes


def test_checkpoints_give_the_score_against_rounds() -> None:
    cfg = MetaConfig(
        task="sine",
        train_devices=4,
        held_out_devices=2,
        rounds=3,
        shots=(1, 2),
        samples=6,
        checkpoints=(1, 3),
        hyper={"devices_per_round": 2, "eval_epochs": 2},
    )
    result = run_meta(cfg)
    assert sorted(result.curve) == [1, 3] and set(result.curve[1]) == {1, 2}
    assert result.few_shot == result.curve[3]  # the last checkpoint is the final score
    assert result.curve[1][2].mean != result.curve[3][2].mean  # θ moved between them
    assert set(result.to_dict()["curve"]) == {"1", "3"}
    with pytest.raises(ValueError, match="checkpoints"):
        MetaConfig(rounds=3, checkpoints=(4,))


def _feedback_run(top_p: float, feedback: bool) -> dict[int, float]:
    cfg = MetaConfig(
        task="sine",
        train_devices=2,
        held_out_devices=2,
        rounds=3,
        shots=(2,),
        samples=6,
        hyper={
            "devices_per_round": 2,
            "eval_epochs": 2,
            "top_p": top_p,
            "error_feedback": feedback,
        },
    )
    return {k: v.mean for k, v in run_meta(cfg).few_shot.items()}


def test_error_feedback_changes_sparse_runs_only() -> None:
    # Every device takes part in every round, so from round 2 on it sends its residual too.
    assert _feedback_run(10.0, True) != _feedback_run(10.0, False)
    assert _feedback_run(100.0, True) == _feedback_run(100.0, False)


def test_a_residual_needs_error_feedback() -> None:
    tasks = make_tasks(MetaConfig(task="sine", train_devices=1, held_out_devices=1, samples=4))
    model = make_model(tasks)
    opts = MetaOptions.from_hyper("tinymetafed", {}, model.num_layers)
    split = LayerSplit(model.num_layers, opts.local_layers)
    theta = split.shared(model.init_params(0))
    dev = tasks.train[0]
    residual = {n: np.zeros_like(a) for n, a in theta.items()}
    with pytest.raises(ValueError, match="error_feedback"):
        device_round(model, split, theta, dev.x_train, dev.y_train, opts, seed=0, residual=residual)


def test_eddl_train_runs_reptile(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "train",
            "--algo",
            "reptile",
            "--task",
            "sine",
            "--clients",
            "3",
            "--rounds",
            "2",
            "--held-out",
            "2",
            "--shots",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["algo"] == "reptile" and out["upload_bytes"] == out["dense_bytes"]


def test_eddl_train_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--algo", "tinymetafed", "--top-p", "0", "--rounds", "1"])
    assert rc == 2
    assert "hyper.top_p" in capsys.readouterr().err
