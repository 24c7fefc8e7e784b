"""A sync round's close and the next round's tasks, against the version's durable commit.

Without standbys (``replies_before_commit``) the waiting workers' next tasks and the closing
update's acknowledgement leave while the new version's commit is still held; with standbys every
answer waits for it, as before. A leader that crashes before the commit loses that version only:
restarted, it resumes from the version before, refuses the updates of the tasks it handed out
from the lost one (old term, then unknown task ids) and hands their data out again, nothing
counted twice.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from eddl.leader.actor import LeaderCore, StoreWriter
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import StaleTermError, StoreError, UnknownTaskError
from eddl.leader.membership import Membership, Role
from eddl.leader.run import Wait
from eddl.leader.service import LeaderService
from eddl.leader.store import SqliteStore, WriteBatch
from eddl.leader.views import TaskOut
from tests.unit.test_leader_support import Clock, float_runtime, spec, train


class HeldWriter(StoreWriter):
    """Commits pass while ``open`` is set; a commit that finds it clear waits for it (``held``
    says one does, ``released`` that it reached the store), and once ``crashed`` is set no
    batch reaches the store any more."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()
        self.released = threading.Event()
        self.crashed = False

    def commit(self, batch: WriteBatch) -> None:
        was_held = not self.open.is_set()
        if was_held:
            self.held.set()
            self.open.wait(10)
        if self.crashed:
            raise StoreError("the leader crashed before this commit")
        self.store.commit(batch)
        if was_held:
            self.released.set()


@dataclass
class Leader:
    core: LeaderCore
    service: LeaderService
    writer: HeldWriter
    store: SqliteStore


@asynccontextmanager
async def leader(
    tmp_path: Path,
    *,
    replies_before_commit: bool,
    on_command: Callable[[str, float], None] | None = None,
) -> AsyncIterator[Leader]:
    store = SqliteStore(tmp_path)
    writer = HeldWriter(store)
    clock = Clock()
    membership = Membership(heartbeat_interval=60.0, now=clock, join_tokens={"tok": Role.WORKER})
    coordinator = Coordinator(
        store, membership=membership, runtime_factory=float_runtime, now=clock, commit=writer.submit
    )
    core = LeaderCore(coordinator, on_command, replies_before_commit=replies_before_commit)
    service = LeaderService(core)
    try:
        yield Leader(core, service, writer, store)
    finally:
        writer.open.set()
        service.close()
        core.close()
        writer.close()
        store.close()


async def start_two_workers(lead: Leader) -> tuple[TaskOut, TaskOut]:
    """w0 and w1 joined, a sync job submitted, and their round-0 tasks."""
    c = lead.core.coordinator
    for node in ("w0", "w1"):
        await lead.core.call(c.join, node, "tok")
    await lead.core.call(c.submit_job, spec(rounds=50, task_seconds=1.0))
    tasks = [
        await lead.service.next_task(node, job_id="job1", term=None, wait_s=5.0)
        for node in ("w0", "w1")
    ]
    assert all(isinstance(t, TaskOut) and t.base_version == 0 for t in tasks)
    return tasks[0], tasks[1]  # type: ignore[return-value]


async def push(lead: Leader, task: TaskOut, *, term: int | None = None) -> str:
    assert task.base_params is not None
    params = train(task.base_params, task.indexes)
    ack = await lead.service.submit_update(
        task.node_id,
        task.task_id,
        params,
        job_id="job1",
        base_version=task.base_version,
        num_samples=len(task.indexes),
        seconds=0.1,
        overhead=0.0,
        term=term,
        wire_bytes=0,
    )
    return ack.outcome


async def round_about_to_close(lead: Leader, t0: TaskOut) -> asyncio.Future[TaskOut | Wait]:
    """w0's update in and w0 waiting for its next task (a round's one task each), then the
    commits held: the next update, w1's, closes the round. Returns w0's wait."""
    assert await push(lead, t0) == "round"
    waiting = asyncio.ensure_future(
        lead.service.next_task("w0", job_id="job1", term=None, wait_s=10.0)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()  # one task per worker and round: w0 waits for the close
    lead.writer.open.clear()
    return waiting


async def test_without_standbys_the_next_tasks_leave_before_the_versions_commit(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path, replies_before_commit=True) as lead:
        t0, t1 = await start_two_workers(lead)
        waiting = await round_about_to_close(lead, t0)
        # The closing update's ack and w0's next task (from version 1) arrive while the
        # commit of version 1 is held.
        assert await push(lead, t1) == "aggregated"
        task = await waiting
        assert isinstance(task, TaskOut) and task.base_version == 1
        assert await asyncio.to_thread(lead.writer.held.wait, 2.0)  # bounded: at the gate
        assert max(lead.store.versions("job1")) == 0  # not durable yet
        lead.writer.open.set()
        nxt = await lead.service.next_task("w1", job_id="job1", term=None, wait_s=5.0)
        assert isinstance(nxt, TaskOut) and nxt.base_version == 1
        # The held commit runs on the writer's thread once the gate opens: wait for it.
        assert await asyncio.to_thread(lead.writer.released.wait, 2.0)  # bounded
        assert max(lead.store.versions("job1")) == 1


async def test_the_closing_turn_answers_the_waiting_worker_with_no_second_command(
    tmp_path: Path,
) -> None:
    commands: list[str] = []
    async with leader(
        tmp_path, replies_before_commit=True, on_command=lambda name, _: commands.append(name)
    ) as lead:
        t0, t1 = await start_two_workers(lead)
        waiting = await round_about_to_close(lead, t0)
        lead.writer.open.set()
        asked = lead.service.polls.batches
        commands.clear()
        assert await push(lead, t1) == "aggregated"
        task = await waiting
        assert isinstance(task, TaskOut) and task.base_version == 1
        # w0's task was worked out in the turn of w1's update: no ``ask_many`` command, and
        # the metrics count that hand-out as the scheduler's.
        assert lead.service.polls.batches == asked
        assert commands[:2] == ["submit_update", "_hand_out_woken"]
        assert "_hand_out_many" not in commands


async def test_with_standbys_the_next_tasks_wait_for_the_versions_commit(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path, replies_before_commit=False) as lead:
        t0, t1 = await start_two_workers(lead)
        waiting = await round_about_to_close(lead, t0)
        closing = asyncio.ensure_future(push(lead, t1))
        # Until the version's commit waits at the gate (bounded).
        assert await asyncio.to_thread(lead.writer.held.wait, 2.0)
        await asyncio.sleep(0.1)
        # Version 1 exists but is not durable: neither the ack nor a task from it is out.
        assert not closing.done() and not waiting.done()
        assert max(lead.store.versions("job1")) == 0
        lead.writer.open.set()
        assert await closing == "aggregated"
        task = await waiting
        assert isinstance(task, TaskOut) and task.base_version == 1
        assert max(lead.store.versions("job1")) == 1


async def test_a_crash_before_the_commit_loses_that_version_and_its_tasks_only(
    tmp_path: Path,
) -> None:
    async with leader(tmp_path, replies_before_commit=True) as lead:
        t0, t1 = await start_two_workers(lead)
        # Round 0 closes durably: version 1, its checkpoint says what round 0 trained.
        assert await push(lead, t0) == "round"
        assert await push(lead, t1) == "aggregated"
        for _ in range(200):  # bounded: version 1's commit is in
            if 1 in lead.store.versions("job1"):
                break
            await asyncio.sleep(0.01)
        run = lead.core.coordinator.job_queue.active
        assert run is not None
        trained_at_1 = run.work.samples
        term = lead.core.coordinator.term
        t0, t1 = [  # type: ignore[assignment]
            await lead.service.next_task(n, job_id="job1", term=None, wait_s=5.0)
            for n in ("w0", "w1")
        ]
        assert isinstance(t0, TaskOut) and isinstance(t1, TaskOut) and t1.base_version == 1
        # Round 1 closes while its commit is held, w0 gets a task from version 2; the leader
        # crashes before that commit.
        waiting = await round_about_to_close(lead, t0)
        assert await push(lead, t1) == "aggregated"
        lost = await waiting
        assert isinstance(lost, TaskOut) and lost.base_version == 2
        lead.writer.crashed = True
        lead.writer.open.set()
    assert max(SqliteStore(tmp_path).versions("job1")) == 1

    async with leader(tmp_path, replies_before_commit=True) as again:
        c = again.core.coordinator
        assert await again.core.call(c.resume) == ["job1"]
        run = c.job_queue.active
        assert run is not None and run.version == 1 and c.term > term
        assert run.work.samples == trained_at_1
        # w0's update of its task from the lost version 2: refused for its old term, then,
        # rejoined, as a task this leader never handed out. Nothing changes.
        with pytest.raises(StaleTermError):
            await push(again, lost, term=term)
        await again.core.call(c.join, "w0", "tok", term=term)
        await again.core.call(c.join, "w1", "tok", term=term)
        with pytest.raises(UnknownTaskError):
            await push(again, lost, term=c.term)
        assert run.version == 1 and run.work.samples == trained_at_1
        # Round 1's data is handed out again from version 1, and counted once when it is in.
        redo = [
            await again.service.next_task(n, job_id="job1", term=c.term, wait_s=5.0)
            for n in ("w0", "w1")
        ]
        assert all(isinstance(t, TaskOut) and t.base_version == 1 for t in redo)
        # The queue starts again where round 1 started (the tasks' sizes may differ).
        again_idx = {int(i) for t in redo for i in t.indexes}  # type: ignore[union-attr]
        lost_idx = {int(i) for i in np.concatenate([t0.indexes, t1.indexes])}
        assert len(again_idx & lost_idx) == min(len(again_idx), len(lost_idx)) > 0
        assert run.scheduler.samples_done == trained_at_1
        outcomes = [await push(again, t, term=c.term) for t in redo]  # type: ignore[arg-type]
        assert outcomes == ["round", "aggregated"] and run.version == 2
        assert run.work.samples == run.scheduler.samples_done == trained_at_1 + len(again_idx)
