"""A synchronous round: budgets for late askers and when the round may close."""

from __future__ import annotations

import pytest

from eddl.leader.rounds import SyncRound
from eddl.leader.sizing import RoundTarget


def test_late_askers_get_the_time_left_but_at_least_a_quarter() -> None:
    r = SyncRound(3)
    assert r.budget(10.0, RoundTarget(2.0)) is None  # a fresh round: a full task
    r.handed("a", "t1", 10.0)
    assert r.budget(10.5, RoundTarget(2.0)) == RoundTarget(pytest.approx(1.5))
    assert r.budget(13.0, RoundTarget(2.0)) == RoundTarget(pytest.approx(0.5))
    # A round sized in training time stays so for a late asker.
    assert r.budget(10.5, RoundTarget(0.2, training=True)) == RoundTarget(0.05, training=True)


def test_closes_when_all_tasks_are_back_and_everyone_asked() -> None:
    r = SyncRound(0)
    assert not r.complete(0.0, {"a"}, 1.0)  # no task yet
    r.handed("a", "t1", 0.0)
    r.handed("b", "t2", 0.0)
    r.settle("t1")
    assert r.outstanding == {"t2"} and not r.complete(0.1, {"a", "b"}, 1.0)
    r.settle("t2")
    r.settle("never-handed")  # ignored
    assert r.complete(0.1, {"a", "b"}, 1.0)


def test_waits_for_a_worker_that_has_not_asked_only_for_a_task_time() -> None:
    r = SyncRound(0)
    r.handed("a", "t1", 0.0)
    r.settle("t1")
    assert not r.complete(0.5, {"a", "b"}, 1.0)
    assert r.complete(1.0, {"a", "b"}, 1.0)
    r.nothing_for("b")  # b asked and there was no data for it
    assert r.complete(0.5, {"a", "b"}, 1.0)
    r.forget("b")
    assert "b" not in r.asked


def test_deadline() -> None:
    r = SyncRound(0)
    assert not r.past(100.0, 5.0)
    r.handed("a", "t1", 10.0)
    assert not r.past(15.0, 5.0) and r.past(15.1, 5.0)
