"""A sub-leader: a leader whose work comes from upstream, leading a group of workers.

Upward it is a node of its own leader (:class:`~eddl.leader.uplink.Uplink`): it draws a task,
pulls the task's base version and answers the task with one update. Downward it leads its
group over the ``Cluster`` protocol (:mod:`eddl.leader.servicers.group` translates): the
upstream task is cut into ranges (:class:`~eddl.leader.upstream.UpstreamSource`), one per
group member and round, every range trains from the upstream task's base version, and once all
its positions are done the round is folded into the answer
(:class:`~eddl.leader.relay.RelaySink`). Rounds inside the group are synchronous; the answer
goes up while the group waits for the next upstream task.

:class:`SubLeader` is the one owner of this state; its methods run on the event loop, one at
a time between awaits, and never block. A member silent for ``patience`` beats is dropped and
its range re-queued; an answer for a range the member no longer holds is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import structlog

from eddl.leader.errors import (
    InvalidArgumentError,
    JobNotActiveError,
    UnknownNodeError,
    UnknownTaskError,
)
from eddl.leader.groupsamples import GroupSamples
from eddl.leader.relay import RelaySink
from eddl.leader.source import Range
from eddl.leader.uplink import Uplink, UpstreamJob
from eddl.leader.upstream import UpstreamSource, UpstreamTask
from eddl.learn.params import Params
from eddl.net import REASON_KEY
from eddl.net.redirect import not_leader

__all__ = ["GroupTask", "SubLeader", "SubLeaderSettings"]

log = structlog.get_logger("eddl.leader.subleader")

MAX_MEMBERS = 256


@dataclass(frozen=True)
class SubLeaderSettings:
    node_id: str
    join_token: str
    dataset_size: int = 1 << 24  # the upstream indexes' bound (the dataset is the root's)
    max_task_samples: int = 1 << 16
    heartbeat_s: float = 1.0
    patience: int = 2
    upstream_wait_s: float = 2.0


@dataclass(frozen=True)
class GroupTask:
    """A range of the upstream task, handed to one member."""

    task_id: str
    node_id: str
    job: UpstreamJob
    range: Range
    indexes: tuple[int, ...]
    base_version: int


@dataclass
class _Member:
    session: int
    last_seen: float
    holds: str | None = None  # the task id it trains now


@dataclass
class _Current:
    serial: int
    job: UpstreamJob
    task: UpstreamTask
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answered: UpstreamTask | None = None
    # The members whose updates it folds, with each one's training seconds.
    contributors: dict[str, float] = field(default_factory=dict)


class SubLeader:
    def __init__(self, settings: SubLeaderSettings, uplink: Uplink) -> None:
        self.settings = settings
        self.uplink = uplink
        self.term = 1
        self.members: dict[str, _Member] = {}
        self.source = UpstreamSource(
            settings.dataset_size, max_task_samples=settings.max_task_samples, max_tasks=1
        )
        self.sink: RelaySink | None = None
        self.current: _Current | None = None
        self.in_flight: dict[str, GroupTask] = {}
        self._sessions = itertools.count(1)
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._job_id = ""
        self.samples = GroupSamples(uplink.fetch_samples)
        self.home = ""  # set while its leader sends the group's members home (demoted)
        self.answers = 0  # upstream tasks answered
        self.stopped = False

    # -- members ---------------------------------------------------------------------------
    def join(self, node_id: str) -> int:
        if not node_id or len(node_id) > 128:
            raise InvalidArgumentError("node id must hold 1..128 characters")
        if node_id not in self.members and len(self.members) >= MAX_MEMBERS:
            raise InvalidArgumentError(f"the group holds {MAX_MEMBERS} members already")
        self._drop(node_id, "joined again")
        session = next(self._sessions)
        self.members[node_id] = _Member(session, time.monotonic())
        log.info("member joined", node=node_id, session=session)
        self._wake()
        return session

    def beat(self, node_id: str) -> bool:
        member = self.members.get(node_id)
        if member is None:
            return False
        member.last_seen = time.monotonic()
        return True

    def leave(self, node_id: str) -> None:
        self._drop(node_id, "left")

    def require(self, node_id: str) -> None:
        if node_id not in self.members:
            raise UnknownNodeError(f"node {node_id!r} is not a member of this group")

    def check_fetch(self, node_id: str, job_id: str, indexes: Sequence[int]) -> np.ndarray:
        """A member's sample request, bounded: the group's current job, 1..max_task_samples
        indexes within the dataset's bound."""
        self.require(node_id)
        current = self._job_id or (self.current.job.job_id if self.current else "")
        if not job_id or job_id != current:
            raise JobNotActiveError(f"job {job_id[:64]!r} is not this group's current job")
        count = len(indexes)
        if not 1 <= count <= self.settings.max_task_samples:
            raise InvalidArgumentError(
                f"{count} samples asked for; 1..{self.settings.max_task_samples} per call"
            )
        idx = np.fromiter(indexes, dtype=np.int64, count=count)
        if int(idx.min()) < 0 or int(idx.max()) >= self.settings.dataset_size:
            raise InvalidArgumentError(
                f"sample indexes must lie in 0..{self.settings.dataset_size - 1}"
            )
        return idx

    def expire(self) -> list[str]:
        limit = self.settings.patience * self.settings.heartbeat_s * 1.5
        now = time.monotonic()
        gone = [n for n, m in self.members.items() if now - m.last_seen > limit]
        for node_id in gone:
            self._drop(node_id, "expired")
        return gone

    def _drop(self, node_id: str, why: str) -> None:
        member = self.members.pop(node_id, None)
        if member is None:
            return
        if member.holds is not None:
            task = self.in_flight.pop(member.holds, None)
            if task is not None:
                self.source.give_back(task.range)
        log.info("member gone", node=node_id, why=why)
        self._wake()

    # -- the group's work ------------------------------------------------------------------
    def hand_out(self, node_id: str, after_task: str | None = None) -> GroupTask | None:
        """The member's task: the one it holds (a retried ask), else a new share of the current
        upstream task; None while it holds ``after_task``, whose update it is pushing."""
        self.require(node_id)
        member = self.members[node_id]
        if member.holds is not None:
            return None if member.holds == after_task else self.in_flight.get(member.holds)
        cur = self.current
        if cur is None or cur.answered is not None:
            return None
        size = max(1, math.ceil(cur.task.num_samples / max(1, len(self.members))))
        rng = self.source.take(node_id, size)
        if rng is None:
            return None
        task = GroupTask(
            f"{cur.task.task_id}.{next(self._ids)}",
            node_id,
            cur.job,
            rng,
            tuple(int(i) for i in self.source.indexes(rng)),
            cur.task.base_version,
        )
        self.in_flight[task.task_id] = task
        member.holds = task.task_id
        return task

    async def next_task(
        self, node_id: str, wait_s: float, after_task: str | None = None
    ) -> GroupTask | None:
        deadline = time.monotonic() + max(0.0, min(wait_s, 60.0))
        while True:
            task = self.hand_out(node_id, after_task)
            left = deadline - time.monotonic()
            if task is not None or left <= 0 or self.stopped:
                return task
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    def model(self, version: int) -> tuple[int, Params]:
        if self.sink is None:
            raise JobNotActiveError("this group has no model yet")
        params = self.sink.kept(version)
        if params is None:
            raise JobNotActiveError(f"version {version} is not kept by this sub-leader")
        return version, params

    def submit(
        self,
        node_id: str,
        task_id: str,
        params: Params,
        num_samples: int,
        base_version: int,
        train_seconds: float = 0.0,
    ) -> int:
        """Take a member's update, trained in ``train_seconds``; the group's version after."""
        self.require(node_id)
        task = self.in_flight.get(task_id)
        if task is None or task.node_id != node_id:
            raise UnknownTaskError(f"task {task_id!r} is not held by {node_id!r}")
        if num_samples != len(task.range):
            raise InvalidArgumentError(
                f"task {task_id} holds {len(task.range)} samples, the update says {num_samples}"
            )
        if base_version != task.base_version:
            raise InvalidArgumentError(
                f"task {task_id} starts from version {task.base_version}, the update says "
                f"{base_version}"
            )
        assert self.sink is not None and self.current is not None
        self.sink.add(task_id, params, num_samples, base_version)  # checks before it changes
        del self.in_flight[task_id]
        self.members[node_id].holds = None
        self.current.contributors[node_id] = train_seconds
        complete = self.source.record_done(task.range)
        if complete is not None:
            self.current.answered = complete
            self.current.done.set()
        self._wake()
        return self.sink.version

    def fail(self, node_id: str, task_id: str, why: str) -> None:
        """A member could not run its task: the range goes back for another member."""
        self.require(node_id)
        task = self.in_flight.get(task_id)
        if task is None or task.node_id != node_id:
            raise UnknownTaskError(f"task {task_id!r} is not held by {node_id!r}")
        del self.in_flight[task_id]
        self.members[node_id].holds = None
        self.source.give_back(task.range)
        log.warning("member task failed", node=node_id, task=task_id, why=why)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    # -- upstream --------------------------------------------------------------------------
    async def run(self) -> None:
        """Draw upstream tasks and answer them until cancelled."""
        await self.uplink.join(self.settings.join_token)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._beats())
            tasks.create_task(self._relay())

    async def _beats(self) -> None:
        while True:
            try:
                if not await self.uplink.heartbeat():
                    await self._rejoin("its leader does not know it")
            except grpc.aio.AioRpcError as exc:
                log.warning("upstream heartbeat failed", code=exc.code().name)
            self.expire()
            await asyncio.sleep(self.settings.heartbeat_s / 2)

    async def _rejoin(self, why: str) -> None:
        log.info("joining upstream again", why=why)
        await self.uplink.join(self.settings.join_token)

    async def _draw(self) -> tuple[UpstreamJob, UpstreamTask] | None:
        """The next upstream task, or ``None`` (none now, or its leader refused or is away)."""
        try:
            drawn = await self.uplink.next_task(self.settings.upstream_wait_s)
        except grpc.aio.AioRpcError as exc:
            redirect = not_leader(exc)
            if redirect is not None and redirect.hint:
                if self.home != redirect.hint:
                    log.info("group sent home by its leader", home=redirect.hint)
                self.home = redirect.hint
                await asyncio.sleep(self.settings.heartbeat_s)
                return None
            reason = dict(exc.trailing_metadata() or ()).get(REASON_KEY, "")
            log.warning("upstream task refused", code=exc.code().name, reason=reason)
            if reason in ("unknown-node", "stale-term"):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await self._rejoin(str(reason))
            await asyncio.sleep(self.settings.heartbeat_s)
            return None
        if self.home:
            log.info("group leading again", was_home=self.home)
            self.home = ""
        return drawn

    async def _cannot_run(self, job: UpstreamJob, task: UpstreamTask, why: str) -> None:
        log.warning("upstream task refused here", task=task.task_id, why=why)
        try:
            await self.uplink.fail(job, task, why)
        except grpc.aio.AioRpcError as exc:
            log.warning("failure report refused upstream", code=exc.code().name)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _relay(self) -> None:
        while True:
            if not self.members:
                self._changed.clear()
                await self._changed.wait()
                continue
            drawn = await self._draw()
            if drawn is None:
                continue
            job, upstream = drawn
            try:
                if job.layer != -1:
                    raise InvalidArgumentError(
                        f"task {upstream.task_id} trains layer {job.layer} only; a group "
                        "folds whole models"
                    )
                serial = self.source.accept(upstream)
            except InvalidArgumentError as exc:
                await self._cannot_run(job, upstream, str(exc))
                continue
            try:
                version, base = await self.uplink.pull(job.job_id, upstream.base_version)
            except grpc.aio.AioRpcError as exc:
                log.warning("upstream model refused", code=exc.code().name)
                self.source.release(serial)
                continue
            same_job = job.job_id == self._job_id
            if self.sink is None or not same_job or self.sink.kept(version) is None:
                if self.sink is not None and same_job and version > self.sink.version:
                    self.sink.adopt(version, base)
                else:
                    self.sink = RelaySink(base, version)
            self._job_id = job.job_id
            cur = _Current(serial, job, upstream)
            self.current = cur
            started = time.monotonic()
            self._wake()
            await cur.done.wait()
            assert cur.answered is not None
            update = self.sink.answer(cur.answered)
            self.sink.upward()  # pushed right here, not kept
            try:
                reply = await self.uplink.push(
                    job.job_id,
                    update,
                    seconds=max(cur.contributors.values(), default=0.0),  # members in parallel
                    wall=time.monotonic() - started,
                    workers=len(cur.contributors),
                )
                log.info(
                    "upstream task answered",
                    task=update.task_id,
                    samples=update.num_samples,
                    updates=update.updates,
                    workers=len(cur.contributors),
                    outcome=reply.outcome,
                    version=reply.envelope.model_version,
                    samples_fetched=self.samples.fetched,
                    samples_served=self.samples.served,
                )
            except grpc.aio.AioRpcError as exc:
                # Refused (its leader took the task back) or unreachable: the leader re-queues
                # the task's samples either way; nothing of it stays here.
                log.warning("upstream answer refused", task=update.task_id, code=exc.code().name)
            finally:
                self.source.release(serial)
                self.current = None
                self.answers += 1
