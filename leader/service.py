"""``LeaderService``: the leader's use cases, as the servicers call them.

Each method is one command on the :class:`~eddl.leader.actor.LeaderCore` (run in order on its
owner thread, with the caches of :mod:`eddl.leader.handout`) and returns typed results
(:mod:`eddl.leader.views`, the coordinator's replies); the servicers only decode requests,
call one method and encode its answer. Long-polls wait here, woken by the core's domain events.

Task traffic (a task handed out, an update or a failure reported, the long-polls' wake-ups) goes
through :meth:`LeaderCore.call_before_commit`: on a leader without standbys its answers leave
before the commit of what the command wrote (see :mod:`eddl.leader.actor`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from eddl.leader.actor import LeaderCore
from eddl.leader.capability import McuCapabilities
from eddl.leader.coordinator import HeartbeatReply, JoinReply, ModelSnapshot
from eddl.leader.errors import (
    InvalidArgumentError,
    NodeExpiredError,
    UnknownJobError,
    UnknownNodeError,
)
from eddl.leader.events import DomainEvent, Event, Listener, NodeChanged
from eddl.leader.handout import JobWire, ModelCache, NodeReports, task_seed
from eddl.leader.jobs import JobSpec
from eddl.leader.longpoll import LongPolls
from eddl.leader.membership import NodeProfile
from eddl.leader.run import UpdateAck, Wait
from eddl.leader.scheduler import Task
from eddl.leader.views import JobView, NodeView, TaskOut, job_view, node_view
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.net.sparse import SparseRecord

__all__ = ["LeaderService"]

# A GetTask: node id, job id, term, and the task whose update the node is pushing meanwhile.
_Ask = tuple[str, str | None, int | None, str | None]

log = get_logger("leader.service")


class LeaderService:
    """Typed use cases over one :class:`LeaderCore`; create it on the serving loop."""

    def __init__(self, core: LeaderCore) -> None:
        self.core = core
        self.coordinator = c = core.coordinator
        self._call = core.call
        self._task_call = core.call_before_commit
        # An elected candidate's view of the cluster (root, term, standbys), for the status.
        self.ha_status: Callable[[], dict[str, Any]] | None = None
        self._c = c
        # Waiting GetTask calls, asked again together (one command) after each domain event.
        self.polls: LongPolls[_Ask, TaskOut | Wait] = LongPolls(self._ask_many)
        # Loop-side views fed by domain events (the owner's word stays final): the members
        # alive, to refuse a stranger's update before reading it, and the models tasks start
        # from (immutable), to serve PullModel without a command.
        self._members: set[str] = set()
        self._models = ModelCache()
        self._unsubscribe = core.on_event(
            self._on_event, before_commit=True, answer=self._answer_waiting
        )
        self.reports = self._reports = NodeReports()
        self._wires: dict[str, JobWire] = {}
        # Whether a node leads a group of this root (a sub-leader whose offer to lead was
        # admitted): only its update may stand for several (``folds``). Nobody by default.
        self.leads: Callable[[str], bool] = _nobody

    @property
    def term(self) -> int:
        return self._c.term

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: DomainEvent) -> None:  # on the loop (see ``before_commit``)
        if isinstance(event, NodeChanged):
            if event.change == "joined":
                self._members.add(event.node_id)
            else:
                self._members.discard(event.node_id)
        self.polls.wake()

    # -- nodes -----------------------------------------------------------------------------
    async def join(
        self,
        node_id: str,
        token: str,
        *,
        role: str,
        profile: NodeProfile,
        reports: Mapping[str, Any],
        address: str,
        term: int | None,
        mcu: McuCapabilities | None,
    ) -> JoinReply:
        def join() -> JoinReply:
            reply = self._c.join(
                node_id, token, role=role, profile=profile, address=address, term=term, mcu=mcu
            )
            self._reports.joined(node_id, profile, reports)
            # Reports follow the membership's bounded history of departed nodes.
            self._reports.retain({n.node_id for n in self._c.membership.nodes()})
            return reply

        return await self._call(join)

    async def heartbeat(
        self,
        node_id: str,
        *,
        term: int | None,
        load: Mapping[str, Any],
        dynamic: Mapping[str, Any] | None,
        network: Mapping[str, Any] | None,
        bandwidth_bps: float | None,
    ) -> HeartbeatReply | None:
        """The reply, or ``None`` for a node the leader does not know (it must join again)."""

        def beat() -> HeartbeatReply | None:
            profile = self._reports.merged(node_id, dynamic, bandwidth_bps)
            try:
                reply = self._c.heartbeat(node_id, profile=profile, term=term)
            except (UnknownNodeError, NodeExpiredError):
                return None
            self._reports.beat(node_id, profile, load, network)
            return reply

        return await self._call(beat)

    async def leave(self, node_id: str, *, term: int | None, reason: str) -> int:
        def leave() -> int:
            requeued = self._c.leave(node_id, term=term, reason=reason)
            self._reports.left(node_id)
            return requeued

        return await self._call(leave)

    async def require_member(self, node_id: str) -> None:
        """Refuse a node that is not a live member (the update command checks again)."""
        if node_id not in self._members:  # unknown here: the owner says why
            await self._call(self._c.membership.require, node_id)

    async def nodes(self) -> list[NodeView]:
        def nodes() -> list[NodeView]:
            return [
                node_view(row, self._reports.of(str(row["node_id"])))
                for row in self._c.list_nodes()
            ]

        return await self._call(nodes)

    # -- work ------------------------------------------------------------------------------
    async def next_task(
        self,
        node_id: str,
        *,
        job_id: str | None,
        term: int | None,
        wait_s: float,
        after_task: str | None = None,
    ) -> TaskOut | Wait:
        """A task, or after up to ``wait_s`` (woken by domain events) the last ``Wait``;
        never ``after_task``, whose update the node is pushing (see ``JobRun.next_task``)."""
        deadline = time.monotonic() + wait_s
        ask = (node_id, job_id, term, after_task)
        since = self.polls.generation
        outcome = self._kept(await self._task_call(self._hand_out, *ask))
        while True:
            if isinstance(outcome, TaskOut):
                return outcome
            left = deadline - time.monotonic()
            if (outcome.done and job_id) or left <= 0:
                return outcome
            woken = await self.polls.wait(
                ask, min(left, max(outcome.retry_after, 0.01)), since=since
            )
            if woken is None:  # nothing happened before the retry time: ask again
                since = self.polls.generation
                outcome = self._kept(await self._task_call(self._hand_out, *ask))
            else:
                outcome, since = woken
                outcome = self._kept(outcome)

    def _answer_waiting(self) -> Callable[[], None] | None:  # on the owner (``on_event``)
        return self.polls.answer_beside(self._hand_out_many)

    async def _ask_many(self, asks: Sequence[_Ask]) -> list[TaskOut | Wait | BaseException]:
        return await self._task_call(self._hand_out_many, asks)

    def _hand_out_many(self, asks: Sequence[_Ask]) -> list[TaskOut | Wait | BaseException]:
        answers: list[TaskOut | Wait | BaseException] = []
        with self._c.together():  # one instant: the cluster's speeds are read once
            for ask in asks:
                try:
                    answers.append(self._hand_out(*ask))
                except Exception as exc:  # this call's own refusal, mapped to its status code
                    answers.append(exc)
        return answers

    def _kept(self, outcome: TaskOut | Wait) -> TaskOut | Wait:
        """Keep the model a task starts from (on the loop) until its worker pulled it."""
        if isinstance(outcome, TaskOut) and outcome.base_params is not None:
            self._models.keep(outcome.job_id, outcome.base_version, outcome.base_params)
        return outcome

    def _hand_out(
        self, node_id: str, job_id: str | None, term: int | None, after_task: str | None = None
    ) -> TaskOut | Wait:
        outcome = self._c.next_task(node_id, job_id=job_id, term=term, after_task=after_task)
        if isinstance(outcome, Wait):
            return outcome
        run = self._c.job_queue.active
        assert run is not None  # a task always belongs to the running job
        version, params = run.model()
        task = self._task_out(outcome, run.spec.job_id)
        # The aggregator replaces (never changes) its parameters: a reference is enough.
        return replace(task, base_params=params) if version == outcome.base_version else task

    def _task_out(self, task: Task, job_id: str) -> TaskOut:
        wire = self._wire(job_id)
        spec = wire.spec
        return TaskOut(
            task_id=task.task_id,
            job_id=job_id,
            node_id=task.node_id,
            base_version=task.base_version,
            indexes=np.asarray(task.indexes, dtype=np.int64),
            layer=task.layer,
            dataset=spec.dataset,
            algorithm=spec.algorithm,
            local_epochs=spec.local_epochs,
            model_json=wire.model_json,
            hyper_json=wire.hyper_json,
            seed=task_seed(spec.seed, task.task_id),
            target_seconds=spec.task_seconds,
            deadline_seconds=spec.round_deadline,
        )

    def _wire(self, job_id: str) -> JobWire:
        wire = self._wires.get(job_id)
        if wire is None:
            record = self._c.store.job(job_id)
            if record is None:
                raise UnknownJobError(f"no job {job_id!r}")
            wire = self._wires[job_id] = JobWire.of(record.spec)
        return wire

    async def model(self, job_id: str, version: int | None) -> ModelSnapshot:
        """Model ``version`` of a job (``None``: the latest), from the cache when kept."""

        kept = None if version is None else self._models.get(job_id, version)
        if kept is not None and version is not None:
            return ModelSnapshot(job_id, version, kept)
        return await self._call(self._c.model, job_id, version)

    async def submit_update(
        self,
        node_id: str,
        task_id: str,
        params: Params,
        *,
        job_id: str,
        base_version: int,
        num_samples: int | None,
        seconds: float | None,
        overhead: float,
        term: int | None,
        wire_bytes: int,
        sparse: Mapping[str, SparseRecord] | None = None,
        folds: int = 1,
    ) -> UpdateAck:
        if folds > 1 and not self.leads(node_id):
            log.warning(
                "declared folds ignored",
                node=node_id[:128],
                folds=folds,
                reason="only a sub-leader of this root may push for several updates",
            )
            folds = 1
        return await self._task_call(
            self._c.submit_update,
            node_id,
            task_id,
            params,
            job_id=job_id,
            base_version=base_version,
            num_samples=num_samples,
            seconds=seconds,
            overhead=overhead,
            term=term,
            wire_bytes=wire_bytes,
            sparse=sparse,
            folds=folds,
        )

    async def fail_task(
        self,
        node_id: str,
        task_id: str,
        reason: str,
        *,
        job_id: str,
        base_version: int,
        term: int | None,
    ) -> UpdateAck:
        return await self._task_call(
            self._c.fail_task,
            node_id,
            task_id,
            reason,
            job_id=job_id,
            base_version=base_version,
            term=term,
        )

    async def samples(
        self, node_id: str, job_id: str, dataset: str, indexes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        def samples() -> tuple[np.ndarray, np.ndarray]:
            self._c.membership.require(node_id)
            trains = self._wire(job_id).spec.dataset
            if dataset and dataset != trains:
                raise InvalidArgumentError(f"job {job_id} trains on {trains!r}, not {dataset!r}")
            return self._c.samples(job_id, indexes)

        return await self._call(samples)

    # -- jobs ------------------------------------------------------------------------------
    async def submit_job(self, spec: JobSpec | dict[str, Any]) -> JobView:
        return job_view(await self.core.submit_job(spec))

    async def cancel_job(self, job_id: str) -> JobView:
        return job_view(await self._call(self._c.cancel_job, job_id))

    async def job_status(self, job_id: str | None = None) -> JobView:
        view = job_view(await self._call(self._c.job_status, job_id))
        if self.ha_status is not None:
            view = replace(view, detail={**view.detail, "ha": self.ha_status()})
        return view

    async def events(self, job_id: str, since: int) -> list[Event]:
        return await self._call(self._c.events, job_id, since)

    async def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        return await self.core.subscribe(job_id, listener)


def _nobody(node_id: str) -> bool:
    return False
