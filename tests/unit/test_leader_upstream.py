"""A sub-leader's source and sink: upstream tasks cut into group ranges, folded into one update."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.leader.errors import (
    DuplicateUpdateError,
    InvalidArgumentError,
    StaleVersionError,
    UpdateRejectedError,
)
from eddl.leader.ledger import Ledger, Task
from eddl.leader.relay import RelaySink
from eddl.leader.upstream import UpstreamSource, UpstreamTask


def model(value: float) -> dict[str, np.ndarray]:
    return {
        "W0": np.full((3, 2), value, dtype=np.float32),
        "b0": np.full(2, value, dtype=np.float32),
    }


def upstream(task_id: str = "t1", n: int = 10, base: int = 5) -> UpstreamTask:
    return UpstreamTask(task_id, base, np.arange(100, 100 + n, dtype=np.int64))


def test_ranges_cover_the_upstream_task_once_requeued_first_and_complete_it() -> None:
    source = UpstreamSource(1000, max_task_samples=50)
    serial = source.accept(upstream(n=10))
    ledger = Ledger(source, 10)
    a = source.take("w1", 4)
    b = source.take("w2", 4)
    c = source.take("w3", 4)
    assert a is not None and b is not None and c is not None
    assert [len(a), len(b), len(c)] == [4, 4, 2] and source.take("w4", 4) is None
    assert a.epoch == serial and source.indexes(b).tolist() == [104, 105, 106, 107]
    ledger.issue(Task("x", "w2", 1, b, source.indexes(b), 0.0))
    ledger.take_back("x", "node gone")  # w2's range goes back to the front
    assert source.left() == 4
    again = source.take("w1", 3)
    assert again is not None and (again.start, again.stop) == (4, 7)
    rest = source.take("w1", 3)
    assert rest is not None and (rest.start, rest.stop) == (7, 8)
    assert source.record_done(a) is None
    assert source.record_done(again) is None
    assert source.record_done(rest) is None
    with pytest.raises(DuplicateUpdateError):
        source.record_done(a)  # counted once only
    done = source.record_done(c)
    assert done is not None and done.task_id == "t1"
    source.release(serial)
    source.close()
    assert source.drained() and source.left() == 0


@pytest.mark.parametrize(
    ("task", "match"),
    [
        (UpstreamTask("", 0, np.arange(3)), "task id"),
        (UpstreamTask("t", -1, np.arange(3)), "base version"),
        (UpstreamTask("t", 0, np.arange(0)), "samples"),
        (UpstreamTask("t", 0, np.arange(60)), "samples"),
        (UpstreamTask("t", 0, np.array([1, 1000])), r"\[0, 1000\)"),
        (UpstreamTask("t", 0, np.array([0.5, 1.0])), "integer array"),
        (UpstreamTask("t", 0, np.zeros((2, 2), dtype=np.int64)), "1-D"),
    ],
)
def test_an_upstream_task_out_of_bounds_is_refused_and_nothing_is_kept(
    task: UpstreamTask, match: str
) -> None:
    source = UpstreamSource(1000, max_task_samples=50)
    with pytest.raises(InvalidArgumentError, match=match):
        source.accept(task)
    assert source.held() == [] and source.left() == 0


def test_the_same_upstream_task_twice_or_too_many_are_refused() -> None:
    source = UpstreamSource(1000, max_task_samples=50, max_tasks=2)
    source.accept(upstream("a"))
    with pytest.raises(InvalidArgumentError, match="already held"):
        source.accept(upstream("a"))
    source.accept(upstream("b"))
    with pytest.raises(InvalidArgumentError, match="already held"):
        source.accept(upstream("c"))
    assert len(source.held()) == 2


def test_the_group_round_folds_into_one_sample_weighted_update_with_the_base_version() -> None:
    sink = RelaySink(model(0.0), 5)
    task = upstream(n=10, base=5)
    sink.add("g1", model(1.0), 6, 5)
    sink.add("g2", model(2.0), 4, 5)
    with pytest.raises(DuplicateUpdateError):
        sink.add("g1", model(9.0), 6, 5)
    update = sink.answer(task)
    assert update.task_id == "t1" and update.base_version == 5 and update.num_samples == 10
    assert update.updates == 2 and update.params["W0"].dtype == np.float32
    np.testing.assert_allclose(update.params["W0"], 1.4)  # (6·1 + 4·2) / 10
    assert [u.task_id for u in sink.upward()] == ["t1"] and sink.upward() == []
    assert sink.round_size() == 0 and sink.version == 5  # versions come from upstream


def test_a_round_that_does_not_match_its_upstream_task_is_refused_and_kept() -> None:
    sink = RelaySink(model(0.0), 5)
    sink.add("g1", model(1.0), 6, 5)
    with pytest.raises(UpdateRejectedError, match="holds 10 samples, the round 6"):
        sink.answer(upstream(n=10, base=5))
    with pytest.raises(UpdateRejectedError, match="starts from version 4"):
        sink.answer(upstream(n=6, base=4))
    assert sink.round_samples() == 6 and sink.upward() == []
    assert sink.answer(upstream(n=6, base=5)).num_samples == 6


def test_group_updates_are_checked_against_the_kept_versions() -> None:
    sink = RelaySink(model(0.0), 5, keep=2)
    with pytest.raises(StaleVersionError, match="not kept"):
        sink.add("g1", model(1.0), 3, 4)
    with pytest.raises(UpdateRejectedError, match="num_samples"):
        sink.add("g1", model(1.0), 0, 5)
    bad = model(1.0)
    bad["W0"] = np.full((2, 2), 1.0, dtype=np.float32)
    with pytest.raises(UpdateRejectedError):
        sink.add("g1", bad, 3, 5)
    sink.add("g1", model(1.0), 3, 5)
    sink.adopt(6, model(3.0))
    with pytest.raises(UpdateRejectedError, match="open round starts from version 5"):
        sink.add("g2", model(1.0), 3, 6)
    assert sink.check(model(1.0), 3, 5) == 1  # one version behind the newest
    with pytest.raises(StaleVersionError):
        sink.adopt(6, model(4.0))
    sink.adopt(7, model(4.0))
    assert sink.kept(5) is None and sink.round_samples() == 3  # keeps two versions
    with pytest.raises(ValueError, match="synchronous rounds only"):
        sink.switch("async")


def test_a_round_is_answered_even_after_its_base_version_left_the_kept_ones() -> None:
    sink = RelaySink(model(0.0), 5, keep=1)
    sink.add("g1", model(2.0), 4, 5)
    sink.adopt(6, model(3.0))
    update = sink.answer(upstream(n=4, base=5))
    assert update.base_version == 5
    np.testing.assert_allclose(update.params["b0"], 2.0)
