"""Update sanity: the ratio bound, per-node counts, quarantine, and what a refusal does to a job
(re-queued data, events, no more tasks for a quarantined node). A NaN update, which
``test_leader_coordinator`` no longer lists among the refusals that change nothing, is here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eddl.leader.errors import UpdateRejectedError
from eddl.leader.events import EventKind
from eddl.leader.run import Wait
from eddl.leader.sanity import UpdateSanity, update_ratio
from tests.unit.test_leader_coordinator import coordinator, join, kinds, push, sync_round, task
from tests.unit.test_leader_support import Clock, spec, train


def test_ratio_is_the_distance_over_the_base_norm() -> None:
    base = {"w": np.array([3.0, 4.0], np.float32)}
    assert update_ratio({"w": np.array([3.0, 4.0], np.float32)}, base) == 0.0
    assert update_ratio({"w": np.array([6.0, 8.0], np.float32)}, base) == pytest.approx(1.0)
    zero = {"w": np.array([0.0, 0.0], np.float32)}
    assert math.isnan(update_ratio({"w": np.array([0.6, 0.8], np.float32)}, zero))
    assert UpdateSanity().problem({"w": np.full(2, 1e6)}, zero) is None  # no reference
    assert UpdateSanity().problem({"w": np.full(2, np.nan)}, zero) is not None
    assert update_ratio({"w": np.array([np.nan, 0.0], np.float32)}, base) == math.inf
    assert update_ratio({"w": np.array([np.inf, 0.0], np.float32)}, base) == math.inf


def test_integer_models_do_not_overflow() -> None:
    base = {"w": np.full(4, 2**30, np.int32)}
    big = {"w": np.full(4, -(2**31), np.int32)}
    assert update_ratio(big, base) == pytest.approx(3.0)  # |-2^31 - 2^30| / 2^30


def test_huge_finite_float32_values_are_far_not_infinite() -> None:
    # float32 overflows on (3e38 - -3e38)^2; the ratio is decided again in float64.
    base = {"w": np.array([-3e38, 1.0], np.float32)}
    ratio = update_ratio({"w": np.array([3e38, 1.0], np.float32)}, base)
    assert math.isfinite(ratio) and ratio == pytest.approx(2.0)
    why = UpdateSanity().problem({"w": np.full(2, 3e38, np.float32)}, {"w": np.ones(2, np.float32)})
    assert why is not None and "times the model's norm" in why


def test_float32_ratio_matches_float64() -> None:
    rng = np.random.default_rng(3)
    base = {"W": rng.standard_normal((64, 32)).astype(np.float32), "b": np.ones(32, np.float32)}
    update = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
    d = sum(float(np.sum((update[k].astype(np.float64) - base[k]) ** 2)) for k in base)
    n = sum(float(np.sum(base[k].astype(np.float64) ** 2)) for k in base)
    assert update_ratio(update, base) == pytest.approx(math.sqrt(d / n), rel=1e-5)


def test_refusals_in_a_row_quarantine_and_an_accept_resets_the_run() -> None:
    sanity = UpdateSanity(max_update_ratio=10.0, quarantine_after=3)
    assert sanity.problem({"w": np.ones(2)}, {"w": np.ones(2)}) is None
    assert "max_update_ratio" in (sanity.problem({"w": np.full(2, 1e6)}, {"w": np.ones(2)}) or "")
    assert [sanity.refuse("a"), sanity.refuse("a")] == [False, False]
    sanity.accept("a")
    assert [sanity.refuse("a"), sanity.refuse("a"), sanity.refuse("a")] == [False, False, True]
    assert sanity.describe()["refused"] == {"a": 5}
    again = UpdateSanity.for_job(
        10.0, 3, {"sanity": {**sanity.describe(), "quarantined": {"a": "x"}}}
    )
    assert again.refused == {"a": 5} and again.quarantined == {"a": "x"}


def _poisoned(c, t, value: float):  # type: ignore[no-untyped-def]
    good = train(c.model("job1").params, t.indexes)
    return {k: np.full_like(v, value) for k, v in good.items()}


@pytest.mark.parametrize("value", [1e6, np.nan, np.inf])
def test_a_refused_update_is_counted_and_its_data_requeued(value: float) -> None:
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 40, 40)
    c.submit_job(spec())
    sync_round(c, clock, nodes)  # the test model starts at zero: no reference before this
    t0 = task(c, "w0")
    task(c, "w1")
    with pytest.raises(UpdateRejectedError, match=r"NaN|max_update_ratio"):
        c.submit_update("w0", t0.task_id, _poisoned(c, t0, value), job_id="job1", base_version=1)
    status = c.job_status("job1")
    assert status["version"] == 1
    assert status["sanity"]["refused"] == {"w0": 1}
    assert status["requeued_ranges"] == 1  # no sample lost
    assert EventKind.UPDATE_REFUSED in kinds(c)
    assert np.isfinite(c.model("job1").params["W0"]).all()


def test_a_node_that_keeps_failing_is_quarantined_and_the_job_goes_on() -> None:
    clock = Clock()
    c = coordinator(clock)
    nodes = join(c, 40, 40)
    c.submit_job(spec(rounds=6, quarantine_after=3))
    sync_round(c, clock, nodes)
    for _ in range(3):  # one sync round each: w0 poisons, w1 trains
        t0, t1 = task(c, "w0"), task(c, "w1")
        clock.advance(0.2)
        poison = _poisoned(c, t0, 1e6)
        with pytest.raises(UpdateRejectedError):
            c.submit_update("w0", t0.task_id, poison, job_id="job1", base_version=t0.base_version)
        push(c, t1)
    got = c.next_task("w0")
    assert isinstance(got, Wait) and "quarantined" in got.reason
    quarantined = [e for e in c.events("job1") if e.kind == EventKind.NODE_QUARANTINED]
    assert len(quarantined) == 1 and quarantined[0].data["node_id"] == "w0"
    assert "3 updates refused in a row" in c.job_status("job1")["sanity"]["quarantined"]["w0"]
    # w1 alone finishes the job: the sync round no longer waits for w0.
    for _ in range(200):
        if c.job_status("job1")["status"] != "running":
            break
        t1 = c.next_task("w1")
        if isinstance(t1, Wait):
            clock.advance(0.5)
            c.tick()
            continue
        clock.advance(0.2)
        push(c, t1)
    status = c.job_status("job1")
    assert status["status"] == "completed" and status["version"] == 6
    assert np.abs(c.model("job1").params["W0"]).max() < 100
    assert status["work"]["w0"]["tasks"] == 1  # the honest first round only
