"""eddl.jobcheck and the CLI's read_job_file: a job no worker could run is refused up front."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eddl.cli.jobs import JobFileError, read_job_file
from eddl.jobcheck import JobLimits, check_job
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.algorithms import MAX_BATCH_SIZE, MAX_LR

SGD: dict[str, object] = {
    "job_id": "j",
    "rounds": 1,
    "algorithm": "sgd",
    "model": {"sizes": [64, 16, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"},
    "hyper": {"lr": 0.1, "batch_size": 8},
}

# The jobs that used to be accepted and then failed on every worker.
BAD_JOBS: list[tuple[dict[str, object], str]] = [
    ({"hyper": {"lr": -0.2}}, "job.hyper.lr: must be > 0, got -0.2"),
    ({"hyper": {"lr": 1e308}}, "job.hyper.lr: must be at most 10"),
    ({"hyper": {"batch_size": 0}}, "job.hyper.batch_size: must be an int in 1..65536, got 0"),
    ({"hyper": {"batch_size": -5}}, "job.hyper.batch_size: must be an int in 1..65536, got -5"),
    ({"local_epochs": 2**40}, "job.local_epochs: must be an int in 1..1000"),
    (
        {"model": {"sizes": [64, 10**12, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}},
        "job.model.sizes: [64, 1000000000000, 10] make",
    ),
]


def check(**overrides: object) -> str:
    with pytest.raises(JobSpecError) as info:
        check_job(JobSpec.from_mapping({**SGD, **overrides}))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("overrides", "start"), BAD_JOBS)
def test_jobs_no_worker_could_run_are_refused_naming_the_key(
    overrides: dict[str, object], start: str
) -> None:
    merged = {**SGD, **overrides}
    if "hyper" in overrides:
        merged["hyper"] = {**SGD["hyper"], **overrides["hyper"]}  # type: ignore[dict-item]
    with pytest.raises(JobSpecError) as info:
        check_job(JobSpec.from_mapping(merged))
    assert str(info.value).startswith(start), str(info.value)


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_learning_rate_is_taken_exactly_when_finite_in_0_to_max(lr: float) -> None:
    # Past the spec's own table checks (which refuse NaN and infinities first), to the
    # algorithm's rule that the workers apply too.
    spec = replace(JobSpec.from_mapping(SGD), hyper={"lr": lr})
    if 0 < lr <= MAX_LR:
        assert check_job(spec).algorithm.name == "sgd"
    else:
        with pytest.raises(JobSpecError, match=r"^job\.hyper\.lr: "):
            check_job(spec)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(-(2**70), 2**70))
def test_batch_size_is_taken_exactly_within_its_bounds(batch: int) -> None:
    spec = replace(JobSpec.from_mapping(SGD), hyper={"lr": 0.1, "batch_size": batch})
    if 1 <= batch <= MAX_BATCH_SIZE:
        assert check_job(spec).algorithm.batch_rows == batch
    else:
        with pytest.raises(JobSpecError, match=r"^job\.hyper\.batch_size: "):
            check_job(spec)


def test_the_memory_budget_bounds_parameters_and_batch_buffers() -> None:
    wide = {"sizes": [64, 4096, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}
    spec = JobSpec.from_mapping({**SGD, "model": wide})
    assert check_job(spec).algorithm.param_bytes() == (65 * 4096 + 4097 * 10) * 4
    with pytest.raises(JobSpecError, match=r"^job\.model\.sizes: .* the limit is 1\.0 MiB"):
        check_job(spec, JobLimits(max_model_bytes=1 << 20))
    big_batch = JobSpec.from_mapping({**SGD, "hyper": {"lr": 0.1, "batch_size": 65536}})
    with pytest.raises(JobSpecError, match=r"^job\.hyper\.batch_size: batches of 65536"):
        check_job(big_batch, JobLimits(max_model_bytes=8 << 20))


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        ({"hyper": {"lr_shift": 99}}, "job.hyper"),  # lsgd-q8 takes no such job anyway
        ({"algorithm": "tifed", "model": {}, "hyper": {"lr_inv": 0}}, "job.hyper: tifed: lr_inv"),
        (
            {"algorithm": "tifed", "model": {"sizes": [64, 2**21, 10]}, "hyper": {}},
            "job.model.sizes: tifed",
        ),
        ({"algorithm": "adam"}, "job.algorithm: unknown algorithm"),
        ({"dataset": "nope"}, "job.dataset: unknown dataset"),
        ({"model": {"hidden": [0]}}, "job.model.hidden: must be a list"),
        ({"model": {"sizes": [3, 10], "activations": ["sigmoid"], "loss": "bce"}}, "job.model.s"),
    ],
)
def test_other_bad_models_and_hyper_parameters_name_their_key(
    overrides: dict[str, object], start: str
) -> None:
    assert check(**overrides).startswith(start)


def test_a_good_job_resolves_its_model_from_the_dataset() -> None:
    checked = check_job(JobSpec.from_mapping({"job_id": "j", "rounds": 1, "model": {}}))
    assert checked.spec.model["sizes"] == [64, 40, 32, 10]
    assert set(checked.initial_params) == {"W0", "b0", "W1", "b1", "W2", "b2"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_read_job_file_checks_the_whole_job_with_one_error_type(tmp_path: Path) -> None:
    good = write(tmp_path, '[job]\nrounds = 2\ndataset = "digits"\n[job.hyper]\nlr = 0.05\n')
    assert read_job_file(good) == {"rounds": 2, "dataset": "digits", "hyper": {"lr": 0.05}}
    cases = {
        "[job]\nrounds = 2\n[job.hyper]\nlr = -0.2\n": "job.hyper.lr: must be > 0, got -0.2",
        "[job]\nrounds = 2\nlocal_epochs = 1099511627776\n": "job.local_epochs:",
        "[job]\nrounds = 2\n[job.model]\nsizes = " + "[" * 1000 + "]" * 1000: "levels deep",
        "[job\n": "not valid TOML",
        "rounds = 2\n": "expected one [job] table",
        "": "no [job] table",
    }
    for text, expected in cases.items():
        path = write(tmp_path, text)
        with pytest.raises(JobFileError) as info:
            read_job_file(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    with pytest.raises(JobFileError, match="no such file"):
        read_job_file(tmp_path / "absent.toml")
    wide = write(tmp_path, "[job]\nrounds = 2\n[job.model]\nhidden = [4096]\n")
    with pytest.raises(JobFileError, match=r"job\.model\.sizes"):
        read_job_file(wide, JobLimits(max_model_bytes=1 << 20))
