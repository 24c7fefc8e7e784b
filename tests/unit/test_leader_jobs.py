"""JobSpec: parsing from TOML and dicts, validation, round trips."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eddl.leader.errors import JobSpecError
from eddl.leader.jobs import JobSpec, load_job_file, parse_job_toml
from eddl.leader.policy import PolicyConfig

FULL = """
[job]
job_id = "digits-1"
dataset = "digits"
algorithm = "lsgd"
target_accuracy = 0.9
rounds = 200
aggregation = "auto"
async_rule = "fedasync"
max_staleness = 4
task_seconds = 0.5
round_deadline = 3.0
[job.model]
hidden = [32, 16]
[job.hyper]
lr = 0.05
batch_size = 8
[job.async_params]
alpha = 0.5
[job.policy]
spread_high = 2.5
min_dwell_s = 10
"""


def test_full_job_file_parses_and_round_trips() -> None:
    spec = parse_job_toml(FULL)
    assert spec.job_id == "digits-1"
    assert spec.model == {"hidden": [32, 16]}
    assert spec.hyper == {"lr": 0.05, "batch_size": 8}
    assert spec.policy == PolicyConfig(spread_high=2.5, min_dwell_s=10.0)
    assert JobSpec.from_mapping(spec.to_dict()) == spec


def test_missing_job_id_gets_a_fresh_one() -> None:
    a = JobSpec.from_mapping({"rounds": 3})
    b = JobSpec.from_mapping({"rounds": 3})
    assert a.job_id != b.job_id
    assert JobSpec.from_mapping({"rounds": 3}, job_id="given").job_id == "given"


def test_load_job_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(FULL)
    assert load_job_file(path).algorithm == "lsgd"
    with pytest.raises(JobSpecError, match="cannot read"):
        load_job_file(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"rounds": 3, "roundz": 4}, "unknown key"),
        ({"rounds": "3"}, "expected an integer"),
        ({"rounds": True}, "expected an integer"),
        ({"rounds": 0}, r"job\.rounds: must be an int in 1\.\."),
        ({}, "give rounds or target_accuracy"),
        ({"target_accuracy": 1.5}, "target_accuracy"),
        ({"target_accuracy": math.nan}, "finite"),
        ({"rounds": 3, "aggregation": "maybe"}, "job.aggregation: must be one of"),
        ({"rounds": 3, "async_rule": "fedavg"}, "job.async_rule: must be one of"),
        ({"rounds": 3, "distribution": "round-robin"}, "distribution"),
        ({"rounds": 3, "task_seconds": 2.0, "round_deadline": 2.0}, "round_deadline"),
        ({"rounds": 3, "task_seconds": -1.0}, "task_seconds"),
        ({"rounds": 3, "min_task_samples": 10, "max_task_samples": 5}, "min_task_samples"),
        ({"rounds": 3, "default_task_samples": 100000}, "default_task_samples"),
        ({"rounds": 3, "job_id": "../etc"}, "job_id"),
        ({"rounds": 3, "job_id": ""}, "job_id"),
        ({"rounds": 3, "model": [1, 2]}, "expected a table"),
        ({"rounds": 3, "model": {"f": object()}}, "unsupported value"),
        ({"rounds": 3, "hyper": {"lr": math.inf}}, "finite"),
        ({"rounds": 3, "policy": {"spread_hi": 2}}, "unknown policy key"),
        ({"rounds": 3, "policy": {"spread_high": 1.2, "spread_low": 1.4}}, "spread_low"),
        ({"rounds": 3, "policy": {"min_tasks": 2.5}}, "integer"),
        ({"rounds": 3, "dataset": 7}, "expected a string"),
    ],
)
def test_bad_specs_are_refused(raw: dict[str, object], match: str) -> None:
    with pytest.raises(JobSpecError, match=match):
        JobSpec.from_mapping(raw)


def test_bad_files_are_refused() -> None:
    with pytest.raises(JobSpecError, match="not valid TOML"):
        parse_job_toml("[job\nrounds = 3")
    with pytest.raises(JobSpecError, match="unknown table"):
        parse_job_toml("[job]\nrounds = 3\n[worker]\nx = 1\n")
    with pytest.raises(JobSpecError, match="no \\[job\\] table"):
        parse_job_toml("")
    with pytest.raises(JobSpecError, match="must be a table"):
        JobSpec.from_mapping([("rounds", 3)])  # type: ignore[arg-type]
