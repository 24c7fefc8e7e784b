"""The ledger: every position in flight, re-queued or done; a task ends once."""

from __future__ import annotations

import numpy as np
import pytest

from eddl.leader.errors import DuplicateUpdateError, UnknownTaskError, UpdateRejectedError
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


def _refuse(task: Task) -> None:
    raise UpdateRejectedError(f"task {task.task_id}: wrong sample count")


def _resumed(state: dict[str, object], size: int = 100) -> tuple[Ledger, PermutationSource]:
    """A new root's ledger and source from a replicated checkpoint (in flight -> to do)."""
    source = PermutationSource(size)
    ledger = Ledger(source, size)
    ledger.restore(state)  # type: ignore[arg-type]
    todo = [Range(*t["range"]) for t in state["tasks"]]  # type: ignore[attr-defined]
    source.restore({"epoch": 0, "cursor": 30}, todo)
    return ledger, source


def test_a_new_root_takes_a_re_sent_update_of_a_task_in_flight_at_its_checkpoint() -> None:
    old = Ledger(PermutationSource(100), 100)
    old.issue(task("t1", "w1", Range(0, 0, 10)))
    old.issue(task("t2", "w2", Range(0, 10, 20)))
    old.issue(task("t3", "w3", Range(0, 20, 30)))
    old.complete("t1")
    ledger, source = _resumed(old.checkpoint())
    # Counted in the version resumed from: the same node's update is a duplicate.
    assert ledger.done_by("t1") == "w1"
    with pytest.raises(DuplicateUpdateError, match="done"):
        ledger.adopt("t1", "w1", 5, 1.0)
    # In flight at the checkpoint: only its own node may bring it back, and its range leaves
    # the re-queue (so it is not handed out again).
    with pytest.raises(UnknownTaskError, match="not handed to node 'w3'"):
        ledger.adopt("t2", "w3", 5, 1.0)
    # An update that fails its checks changes nothing: the range stays in the re-queue.
    with pytest.raises(UpdateRejectedError, match="sample count"):
        ledger.adopt("t2", "w2", 7, 1.0, verify=_refuse)
    assert source.requeued() == [Range(0, 10, 20), Range(0, 20, 30)]
    adopted = ledger.adopt("t2", "w2", 7, 1.0)
    assert adopted.session == 7 and adopted.base_version == 0
    assert list(adopted.indexes) == list(source.indexes(Range(0, 10, 20)))
    assert source.requeued() == [Range(0, 20, 30)]
    ledger.complete("t2")
    assert ledger.samples_done == 20
    # t3's range was handed out again meanwhile: its late update is refused, counted once.
    again = source.take("w4", 10)
    assert again == Range(0, 20, 30)
    with pytest.raises(DuplicateUpdateError, match="handed out again"):
        ledger.adopt("t3", "w3", 5, 1.0)
    with pytest.raises(UnknownTaskError):
        ledger.adopt("never", "w1", 5, 1.0)


def test_the_tasks_done_a_checkpoint_remembers_are_bounded() -> None:
    from eddl.leader.ledger import RECENT_DONE

    ledger = Ledger(PermutationSource(10), 10)
    for n in range(RECENT_DONE + 5):
        ledger.issue(task(f"t{n}", "w", Range(n, 0, 1)))
        ledger.complete(f"t{n}")
    state = ledger.checkpoint()
    assert len(state["recent_done"]) == RECENT_DONE
    assert ledger.done_by("t0") is None and ledger.done_by(f"t{RECENT_DONE + 4}") == "w"


def test_a_checkpoint_keeps_the_tasks_done_since_the_checkpoint_before_the_previous_one() -> None:
    ledger = Ledger(PermutationSource(10), 10)

    def done(*names: str) -> list[str]:
        for name in names:
            ledger.issue(task(name, "w", Range(0, 0, 1)))
            ledger.complete(name)
        return [t for t, _ in ledger.checkpoint()["recent_done"]]

    assert done("a", "b") == ["a", "b"]
    assert done("c") == ["a", "b", "c"]
    assert done("d") == ["c", "d"]  # a and b were done before the checkpoint before last
    assert done() == ["d"]
    assert ledger.done_by("a") == "w"  # still remembered here, only not written any more
