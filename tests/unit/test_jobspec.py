"""eddl.jobspec: every field bounded, every message one line naming the key, no deep recursion."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.jobspec import (
    INT_BOUNDS,
    TIFED_SINGLE_TASK_SAMPLES,
    JobSpec,
    JobSpecError,
    job_table,
    load_job_file,
)

BASE: dict[str, object] = {"rounds": 3}


def refused(raw: dict[str, object]) -> str:
    with pytest.raises(JobSpecError) as info:
        JobSpec.from_mapping(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(INT_BOUNDS)), data=st.data())
def test_integer_fields_outside_their_bounds_are_refused_naming_the_key(
    name: str, data: st.DataObject
) -> None:
    low, high = INT_BOUNDS[name]
    value = data.draw(st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1)))
    message = refused({**BASE, name: value})
    assert message.startswith(f"job.{name}: "), message


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(INT_BOUNDS)), data=st.data())
def test_integer_fields_within_their_bounds_are_taken(name: str, data: st.DataObject) -> None:
    low, high = INT_BOUNDS[name]
    value = data.draw(st.integers(low, high))
    raw: dict[str, object] = {**BASE, name: value}
    # Keep the cross-field rules satisfied: the task-size fields move together.
    if name in ("min_task_samples", "max_task_samples", "default_task_samples"):
        raw.update(min_task_samples=1, default_task_samples=value, max_task_samples=65536)
        raw[name] = value
    spec = JobSpec.from_mapping(raw)
    assert getattr(spec, name) == value
    assert JobSpec.from_mapping(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"local_epochs": 2**40}, "job.local_epochs"),
        ({"local_epochs": 0}, "job.local_epochs"),
        ({"seed": -1}, "job.seed"),
        ({"max_epochs": 1e308}, "job.max_epochs"),
        ({"task_seconds": 1e9, "round_deadline": 2e9}, "job.task_seconds"),
        ({"round_deadline": 1e9}, "job.round_deadline"),
        ({"max_task_failures": 0}, "job.max_task_failures"),
        ({"dataset": "x" * 65}, "job.dataset"),
        ({"hyper": {"lr": math.nan}}, "job.hyper.lr"),
        ({"model": {"sizes": [64, 2**64, 10]}}, "job.model.sizes[1]"),
        ({"model": {"sizes": list(range(2000))}}, "job.model.sizes"),
        ({"model": {"loss": "x" * 300}}, "job.model.loss"),
        ({"policy": {"window_s": math.inf}}, "job.policy.window_s"),
        ({"policy": {"min_dwell_s": 1e300}}, "job.policy.min_dwell_s"),
    ],
)
def test_unbounded_values_are_refused_naming_the_key(raw: dict[str, object], key: str) -> None:
    assert refused({**BASE, **raw}).startswith(f"{key}: ")


def test_deep_nesting_is_refused_before_it_recurses() -> None:
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    message = refused({**BASE, "model": {"sizes": nested}})
    assert message.startswith("job.model.sizes") and "levels deep" in message


def test_a_job_file_nested_a_thousand_levels_deep_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("[job]\nrounds = 3\n[job.model]\nsizes = " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(JobSpecError, match="levels deep"):
        load_job_file(path)
    inline = "[job]\nrounds = 3\nmodel = " + "{a = " * 1000 + "1" + "}" * 1000 + "\n"
    with pytest.raises(JobSpecError, match="levels deep"):
        job_table(inline)


def test_a_huge_integer_is_described_not_printed() -> None:
    message = refused({**BASE, "rounds": 10**5000})
    assert message.startswith("job.rounds: ") and len(message) < 200


def test_binary_or_unreadable_job_files_are_spec_errors(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_bytes(b"\xff\xfe\x00[job]")
    with pytest.raises(JobSpecError, match="cannot read"):
        load_job_file(path)


def test_tifed_single_tasks_are_capped_unless_the_job_says_otherwise() -> None:
    base = {**BASE, "dataset": "digits", "algorithm": "tifed-single"}
    assert JobSpec.from_mapping(base).max_task_samples == TIFED_SINGLE_TASK_SAMPLES
    assert JobSpec.from_mapping({**base, "max_task_samples": 2000}).max_task_samples == 2000
    # A minimum above the cap lifts it: the job's own bound is never contradicted.
    lifted = {**base, "min_task_samples": 900, "default_task_samples": 900}
    assert JobSpec.from_mapping(lifted).max_task_samples == 900
    # Other algorithms keep the general default; the cap survives a round trip.
    assert JobSpec.from_mapping({**base, "algorithm": "tifed"}).max_task_samples == 8192
    spec = JobSpec.from_mapping(base)
    assert JobSpec.from_mapping(spec.to_dict()) == spec
