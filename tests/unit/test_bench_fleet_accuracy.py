"""The pure parts of bench.fleet_accuracy: the root's events folded into a time to target, and
split vs flat against the 0.5x target with runs that did not reach it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bench.fleet_accuracy import AccuracyRun, Reached, TargetWatch, job_spec
from bench.fleet_accuracy_report import GOAL, compare, label, median_time
from eddl.jobspec import JobSpec


def test_the_first_version_at_the_target_is_timed_from_its_making() -> None:
    watch = TargetWatch(0.9)
    watch.add("model_updated", 103.0, {"version": 1, "samples": 100})
    watch.add("model_updated", 105.0, {"version": 2, "samples": 50})
    watch.add("model_evaluated", 106.0, {"version": 1, "accuracy": 0.5})
    assert not watch.reached
    watch.add("model_updated", 107.0, {"version": 3, "samples": 25})
    watch.add("model_evaluated", 109.0, {"version": 3, "accuracy": 0.93})
    watch.add("model_evaluated", 109.5, {"version": 2, "accuracy": 0.91})  # came back late
    watch.add("job_completed", 110.0, {})
    r = watch.result(start=100.0)
    assert watch.reached and r.version == 2 and r.seconds == pytest.approx(5.0)
    assert r.samples == 150 and r.best == pytest.approx(0.93) and r.versions == 3


def test_a_run_below_the_target_has_no_time() -> None:
    watch = TargetWatch(0.9)
    watch.add("model_updated", 1.0, {"version": 1, "samples": 8})
    watch.add("model_evaluated", 2.0, {"version": 1, "accuracy": None})  # evaluation failed
    watch.add("model_evaluated", 2.0, {"version": 1, "accuracy": 0.89})
    r = watch.result(0.0)
    assert r.seconds is None and r.version is None and r.best == pytest.approx(0.89)
    with pytest.raises(ValueError, match="target"):
        TargetWatch(0.0)


def test_median_counts_a_missed_run_as_infinite() -> None:
    assert median_time([10.0, None, 20.0]) == 20.0
    assert math.isinf(median_time([None, None, 5.0]))
    with pytest.raises(ValueError, match="no runs"):
        median_time([])


def test_split_against_flat() -> None:
    c = compare([20.0, 30.0, 25.0], [60.0, 50.0, 70.0], limit=240)
    assert c.ratio == pytest.approx(25 / 60) and c.holds and not c.bound
    miss = compare([40.0], [60.0], limit=240)
    assert miss.ratio == pytest.approx(40 / 60) and miss.holds is False
    assert "missed" in miss.text()
    # flat never reached it: the ratio is an upper bound, split over the limit
    bound = compare([30.0], [None, None], limit=240)
    assert bound.bound and bound.ratio == pytest.approx(30 / 240) and bound.holds
    assert bound.text().startswith("< 0.12x")
    # flat missed the limit but split took more than GOAL x the limit: cannot be told
    open_ = compare([200.0], [None], limit=240)
    assert open_.bound and open_.holds is None and GOAL < 200 / 240
    assert "neither confirmed nor ruled out" in open_.text()
    unknown = compare([None], [100.0], limit=240)
    assert unknown.holds is None and "cannot be checked" in unknown.text()
    with pytest.raises(ValueError, match="limit"):
        compare([1.0], [1.0], limit=0)


def test_the_job_is_a_valid_spec_with_the_target() -> None:
    spec = JobSpec.from_mapping(job_spec(64, 1.0, 4096, seed=1))
    assert spec.target_accuracy == pytest.approx(0.9) and spec.eval_every == 1
    assert spec.max_task_samples == 4096


def test_the_roots_rule_is_chosen_and_checked() -> None:
    assert JobSpec.from_mapping(job_spec(64, 1.0, 4096, seed=1)).async_rule == "fedasync-folds"
    plain = JobSpec.from_mapping(job_spec(64, 1.0, 4096, seed=1, async_rule="fedasync"))
    assert plain.async_rule == "fedasync"
    with pytest.raises(ValueError, match="async_rule"):
        job_spec(64, 1.0, 4096, seed=1, async_rule="fedbuff")


def test_a_split_run_is_labelled_with_the_roots_rule() -> None:
    reached = Reached(100.0, 150, 1000, 0.9, 150)
    run = AccuracyRun(20.0, 64, "1-4", 0, reached, 100.0, 10, 1000, 0, 0.1, 0.1, 0.5, 0.1,
                      (1, 1), rule="fedasync-folds")  # fmt: skip
    assert label(run) == "1-4-n, fedasync-folds"
    assert label(dataclasses.replace(run, topology="flat")) == "flat"
