"""The ledger: every position in flight, re-queued or done; a task ends once."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError
from eddl.leader.ledger import Ledger, Task
from eddl.leader.source import PermutationSource, Range


def task(task_id: str, node: str, rng: Range, at: float = 0.0) -> Task:
    return Task(task_id, node, 1, rng, np.arange(rng.start, rng.stop), at)


def test_done_ranges_count_per_epoch_and_complete_epochs_in_order() -> None:
    ledger = Ledger(PermutationSource(10), 10)
    ledger.issue(task("a", "w", Range(1, 0, 10)))
    ledger.issue(task("b", "w", Range(0, 0, 6)))
    ledger.issue(task("c", "w", Range(0, 6, 10)))
    ledger.complete("a")
    assert ledger.completed_epochs == 0 and ledger.samples_done == 10  # epoch 0 not done yet
    ledger.complete("b")
    ledger.complete("c")
    assert ledger.completed_epochs == 2 and ledger.samples_done == 20
    with pytest.raises(DuplicateUpdateError, match="is over \\(done\\)"):
        ledger.complete("a")
    with pytest.raises(UnknownTaskError):
        ledger.get("never")


def test_taking_back_re_queues_at_the_front_oldest_first_and_refuses_the_late_update() -> None:
    source = PermutationSource(100)
    ledger = Ledger(source, 100)
    ledger.issue(task("old", "w1", Range(0, 0, 10), at=1.0))
    ledger.issue(task("new", "w1", Range(0, 10, 20), at=2.0))
    ledger.issue(task("other", "w2", Range(0, 20, 30), at=3.0))
    assert [t.task_id for t in ledger.take_back_node("w1", "node expired")] == ["old", "new"]
    assert source.requeued() == [Range(0, 0, 10), Range(0, 10, 20)]
    ledger.take_back("other", "out too long")
    assert source.requeued()[0] == Range(0, 20, 30)
    with pytest.raises(DuplicateUpdateError, match="taken back: node expired"):
        ledger.complete("old")
    assert ledger.in_flight() == [] and ledger.samples_done == 0


def test_a_checkpoint_restores_the_counts() -> None:
    ledger = Ledger(PermutationSource(10), 10)
    ledger.issue(task("a", "w", Range(0, 0, 10)))
    ledger.issue(task("b", "w", Range(1, 0, 4)))
    ledger.complete("a")
    ledger.complete("b")
    again = Ledger(PermutationSource(10), 10)
    again.restore(ledger.checkpoint())
    assert (again.completed_epochs, again.samples_done) == (1, 14)
    assert again.checkpoint() == ledger.checkpoint()
