"""Meta-learning options in the algorithm registry, and short runs of ``eddl train``."""

from __future__ import annotations

import json

import pytest

from eddl.cli import main
from eddl.jobcheck import check_spec
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.algorithms import AlgorithmError, default_model, get_algorithm
from eddl.metajob import CheckedMetaJob
from eddl.metasim import MetaConfig, run_meta


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
