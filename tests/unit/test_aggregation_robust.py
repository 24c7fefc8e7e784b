"""Robust aggregation: the coordinate-wise median and trimmed mean, as fedavg's ``robust``
option; one client's 1e6 weights in a round leave the model bounded."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.jobcheck import check_aggregation
from eddl.jobspec import JobSpec, JobSpecError
from eddl.learn.aggregation import AggregationError, ClientUpdate, make_rule
from eddl.learn.aggregation.robust import RobustMean, coordinate_median, trimmed_mean
from tests.unit.test_leader_coordinator import coordinator, join, push, task
from tests.unit.test_leader_support import Clock, spec


def _u(value: np.ndarray, n: int = 10) -> ClientUpdate:
    return ClientUpdate(params={"w": value.astype(np.float32)}, num_samples=n, base_version=0)


def test_known_answers() -> None:
    arrays = [np.array([1.0, 10.0]), np.array([2.0, 20.0]), np.array([9.0, -5.0])]
    assert coordinate_median(arrays).tolist() == [2.0, 10.0]
    assert coordinate_median(arrays[:2]).tolist() == [1.5, 15.0]
    five = [np.array([v]) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    assert trimmed_mean(five, 0.2).tolist() == [3.0]  # 1 and 100 dropped
    assert trimmed_mean(five, 0.0).tolist() == [22.0]  # the plain mean
    assert trimmed_mean(five, 0.1).tolist() == [22.0]  # floor(0.5) = 0 dropped


@pytest.mark.parametrize(("kind", "n"), [("median", 3), ("median", 5), ("trimmed-mean", 5)])
def test_one_poisoned_client_leaves_the_model_bounded(kind: str, n: int) -> None:
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(8, 4)).astype(np.float32)}
    honest = [base["w"] + rng.normal(scale=0.1, size=(8, 4)) for _ in range(n - 1)]
    updates = [_u(h) for h in honest] + [_u(np.full((8, 4), 1e6), n=10_000)]
    mean = make_rule("fedavg").aggregate(base, updates, version=1)  # type: ignore[attr-defined]
    assert np.abs(mean["w"]).max() > 1e5
    rule = make_rule("fedavg", robust=kind, trim=0.2)
    out = rule.aggregate(base, updates, version=1)  # type: ignore[attr-defined]
    low = np.min(honest, axis=0)
    high = np.max(honest, axis=0)
    assert np.all(out["w"] >= low - 1e-6) and np.all(out["w"] <= high + 1e-6)
    assert out["w"].dtype == np.float32


def test_options_are_checked_and_round_trip() -> None:
    rule = make_rule("fedavg", robust="trimmed-mean", trim=0.25)
    assert isinstance(rule, RobustMean)
    again = make_rule(**rule.describe())  # type: ignore[arg-type]
    assert again.describe() == rule.describe()
    for bad in (
        {"robust": "mode"},
        {"robust": "median", "server_lr": 0.5},
        {"robust": "trimmed-mean", "trim": 0.5},
        {"trim": 0.2},
    ):
        with pytest.raises(AggregationError):
            make_rule("fedavg", **bad)
    ints = {"w": np.zeros(3, np.int32)}
    with pytest.raises(AggregationError, match="float models"):
        RobustMean("median").aggregate(ints, [ClientUpdate(ints, 1, 0)] * 3, version=1)


def test_job_spec_takes_the_option_and_refuses_a_bad_one() -> None:
    params = {"w": np.zeros(3, np.float32)}
    good = JobSpec.from_mapping({"job_id": "j", "rounds": 1, "sync_params": {"robust": "median"}})
    check_aggregation(good, "fedavg", params)
    bad = JobSpec.from_mapping({"job_id": "j", "rounds": 1, "sync_params": {"robust": "mode"}})
    with pytest.raises(JobSpecError, match="robust"):
        check_aggregation(bad, "fedavg", params)


def test_a_leader_round_with_the_median_discounts_a_poisoned_worker() -> None:
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 40, 40, 40)
    # The sanity bound lifted, to see what the rule alone does.
    c.submit_job(spec(rounds=3, sync_params={"robust": "median"}, max_update_ratio=1e12))
    for _ in range(2):
        tasks = [task(c, n) for n in nodes]
        clock.advance(0.2)
        for t in tasks[:2]:
            push(c, t)
        evil = tasks[2]
        poison = {k: np.full_like(v, 1e6) for k, v in c.model("job1").params.items()}
        c.submit_update(
            evil.node_id, evil.task_id, poison, job_id="job1", base_version=evil.base_version
        )
    assert c.model("job1").version == 2
    assert max(float(np.abs(v).max()) for v in c.model("job1").params.values()) < 10
