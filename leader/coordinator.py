"""The coordinator: what the leader's servicers call, as one plain synchronous class.

It owns the membership, the job queue (:mod:`eddl.leader.jobqueue`: one job runs at a time,
the others wait in submission order), the checkpoint store and the leader's term, and delegates
the work of the running job to a :class:`~eddl.leader.run.JobRun`. Servicers decode the wire
format, call one method here and map a :class:`~eddl.leader.errors.LeaderError` to its
``code``.

Concurrency: every public method is **synchronous and short**. In the daemon they run on the
owner thread of :class:`~eddl.leader.actor.LeaderCore`, one at a time; a call's store writes
leave through the outbox as one batch (:meth:`take_commit`). A re-entrant lock serialises
direct callers (unit tests). The read side lives in :mod:`eddl.leader.queries`, the replies in
:mod:`eddl.leader.replies`. :meth:`subscribe` notifies listeners of a job's events
(``WatchJob``); :attr:`domain` raises every domain event (long-poll wake-ups).

Every call that carries a term checks it (:class:`StaleTermError` for any other); calls that
carry a job id check it (:class:`UnknownJobError`, :class:`JobNotActiveError`).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from eddl.leader.capability import McuCapabilities
from eddl.leader.errors import InvalidArgumentError, StaleTermError, UnknownJobError
from eddl.leader.events import (
    DomainBus,
    EventFanout,
    Listener,
    NodeChanged,
    UpdateAccepted,
)
from eddl.leader.jobcommands import JobCommands
from eddl.leader.jobqueue import JobQueue, PreparedJob
from eddl.leader.jobs import JobSpec
from eddl.leader.leadership import StaticLeadership
from eddl.leader.membership import Membership, Node, NodeProfile, Role
from eddl.leader.metaruntime import meta_params, meta_upload
from eddl.leader.outbox import Committer, Outbox
from eddl.leader.ports import Clock, Leadership
from eddl.leader.queries import Queries
from eddl.leader.replies import HeartbeatReply, JoinReply, ModelSnapshot
from eddl.leader.run import UpdateAck, Wait
from eddl.leader.runtime import RuntimeFactory, build_runtime
from eddl.leader.scheduler import EstimatorFactory, Task
from eddl.leader.store import CheckpointStore, MemberRecord, WriteBatch
from eddl.learn.params import Params
from eddl.net.sparse import SparseRecord
from eddl.profiler.estimator import RuntimeEstimator

__all__ = [
    "Coordinator",
    "HeartbeatReply",
    "JoinReply",
    "ModelSnapshot",
    "Task",
    "UpdateAck",
    "Wait",
]


# A departed node stays listed (``eddl status`` says why it went) for this long at most.
DEPARTED_RETENTION_S = 3600.0


class Coordinator(JobCommands, Queries):
    """Plain-class leader logic; see the module docstring for the calling conventions."""

    def __init__(
        self,
        store: CheckpointStore,
        *,
        membership: Membership | None = None,
        leadership: Leadership | None = None,
        term: int = 1,
        runtime_factory: RuntimeFactory = build_runtime,
        estimator_factory: EstimatorFactory = RuntimeEstimator,
        now: Clock = time.monotonic,
        link_capacity_bps: float | None = None,
        commit: Committer | None = None,
    ) -> None:
        # Writes of one call are committed together when it returns (see ``_op``): at once,
        # or by ``commit`` (a writer thread beside the owner of this state).
        self.store = self._outbox = Outbox(store, commit)
        self._commit: Future[None] | None = None
        # The term has one source: the leadership port (a static root by default, which
        # claims a term above any stored one, at least ``term``).
        self.leadership = (
            leadership if leadership is not None else StaticLeadership(store, min_term=term)
        )
        self.membership = membership if membership is not None else Membership(now=now)
        self.membership.on_gone(self._on_gone)
        self._clock = now
        self._instant: float | None = None  # the time of the command in progress
        self._link_capacity = link_capacity_bps
        self._lock = threading.RLock()
        self._depth = 0
        # Task ids carry the term and a random tag of this incarnation, so a task id of a
        # previous leader (or a standby) never matches one of ours.
        incarnation = uuid.uuid4().hex[:6]
        self.event_sink = EventFanout()
        # Typed domain events (job events, nodes, accepted updates) wake long-polls.
        self.domain = DomainBus()
        self.event_sink.subscribe(self.domain.emit)
        self.job_queue = JobQueue(
            self._outbox,  # the jobs' writes too leave with their command's batch
            runtime_factory=runtime_factory,
            estimator_factory=estimator_factory,
            now=self._now,
            workers=self._workers,
            task_prefix=lambda job_id: f"{job_id}:{self.term}.{incarnation}.",
            on_event=self.event_sink.emit,
        )

    @property
    def term(self) -> int:
        return self.leadership.term

    def _now(self) -> float:
        """The time of the command in progress (one instant for all it does), else now."""
        return self._clock() if self._instant is None else self._instant

    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        """One command: serialised, at one instant (the jobs' clock: the task sizer reads the
        speeds once per instant), and its store writes committed in one transaction."""
        with self._lock:
            if self._depth == 0:
                self._instant = self._clock()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._instant = None
                    commit = self._outbox.flush()
                    if commit is not None:
                        self._commit = commit

    def together(self) -> contextlib.AbstractContextManager[None]:
        """Several calls as one command: one instant and one transaction (the hand-outs that
        answer every waiting long-poll at once)."""
        return self._op()

    def take_commit(self) -> Future[None] | None:
        """The commit of the writes made since the last call (None: nothing written)."""
        commit, self._commit = self._commit, None
        return commit

    # -- start-up ----------------------------------------------------------------------------
    def resume(self) -> list[str]:
        """Reload unfinished jobs from the store: the running one continues from its last
        checkpointed version, queued ones wait again. Call once before serving."""
        with self._op():
            return self.job_queue.resume()

    # -- membership ------------------------------------------------------------------------
    def join(
        self,
        node_id: str,
        token: str,
        *,
        role: Role | str = Role.WORKER,
        profile: NodeProfile | None = None,
        address: str = "",
        term: int | None = None,
        mcu: McuCapabilities | None = None,
    ) -> JoinReply:
        """Admit a node. ``term`` is the last term the node knew; any older one is fine here
        (the node is learning the new term), a newer one means this leader is stale."""
        with self._op():
            if term is not None and term > self.term:
                raise StaleTermError(f"node knows term {term}, this leader is at {self.term}")
            try:
                node = self.membership.join(
                    node_id, token, role=role, profile=profile, address=address, mcu=mcu
                )
            except ValueError as exc:
                raise InvalidArgumentError(str(exc)) from exc
            self._record_member(node, "alive")
            self.domain.emit(NodeChanged(node_id, "joined"))
            run = self.job_queue.active
            if run is not None:
                run.node_joined(node, self._workers())
            return JoinReply(
                node_id,
                node.session,
                self.term,
                self.membership.heartbeat_interval,
                self.membership.jitter,
                None if run is None else run.spec.job_id,
            )

    def heartbeat(
        self, node_id: str, *, profile: NodeProfile | None = None, term: int | None = None
    ) -> HeartbeatReply:
        with self._op():
            self._check_term(term)
            node = self.membership.heartbeat(node_id, profile=profile)
            self.tick()
            run = self.job_queue.active
            if run is not None and profile is not None and profile.benchmark_sps:
                run.scheduler.set_prior(node_id, profile.benchmark_sps)
            return HeartbeatReply(
                self.term,
                self.membership.heartbeat_interval,
                None if run is None else run.spec.job_id,
                None if run is None else run.version,
                cancel_task=self._task_void(node),
            )

    def leave(self, node_id: str, *, term: int | None = None, reason: str = "") -> int:
        """A clean goodbye (``reason``: the node's, e.g. a gateway's "device lost"); returns
        how many tasks went back to the queue."""
        with self._op():
            self._check_term(term)
            run = self.job_queue.active
            held = None if run is None else run.task_of(node_id)
            self.membership.leave(node_id, reason)  # its task goes back through _on_gone
            return 0 if held is None else 1

    def tick(self) -> None:
        """Expire silent nodes (their tasks go back at once), then round deadlines and policy;
        forget nodes long gone (bounded history of departed nodes)."""
        with self._op():
            self.membership.expire()
            forgotten = self.membership.forget_gone(DEPARTED_RETENTION_S)
            if forgotten:
                self._outbox.commit(WriteBatch(forget_members=forgotten))
            run = self.job_queue.active
            if run is not None:
                run.tick(self._link_capacity)
                self.job_queue.advance()

    # -- admin -----------------------------------------------------------------------------
    def submit_job(self, spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
        """Validate and queue a job (it starts at once if nothing runs); returns its status.

        The spec is checked by building its model and data, so a bad one is refused with
        :class:`JobSpecError` before anything is stored.
        """
        return self.submit_prepared(self.prepare_job(spec))

    def prepare_job(self, spec: JobSpec | dict[str, Any]) -> PreparedJob:
        """The slow half of a submission (load the data, build the model, check the rules);
        reads and changes no state, so it runs beside the owner of this state."""
        if not isinstance(spec, JobSpec):
            spec = JobSpec.from_mapping(spec)
        return self.job_queue.prepare(spec)

    def submit_prepared(self, prepared: PreparedJob) -> dict[str, Any]:
        """The quick half: check the id and the nodes' capabilities, store and queue."""
        with self._op():
            stored = self.job_queue.submit(prepared)
            return self.job_status(stored.job_id)

    def cancel_job(self, job_id: str, reason: str = "cancelled by the user") -> dict[str, Any]:
        with self._op():
            self.job_queue.cancel(job_id, reason)
            return self.job_status(job_id)

    def subscribe(self, job_id: str, listener: Listener) -> Callable[[], None]:
        """Hear every new event of ``job_id`` (also after it starts or resumes)."""
        with self._op():
            if self.store.job(job_id) is None:
                raise UnknownJobError(f"no job {job_id!r}")
            unsubscribe_sink = self.event_sink.subscribe(listener, job_id)

            def unsubscribe() -> None:
                with self._lock:
                    unsubscribe_sink()

            return unsubscribe

    # -- work ------------------------------------------------------------------------------
    def next_task(
        self,
        node_id: str,
        *,
        job_id: str | None = None,
        term: int | None = None,
        after_task: str | None = None,
    ) -> Task | Wait:
        with self._op():
            self._check_term(term)
            # A node asking for work is alive: that counts as a beat (before expiry runs).
            node = self.membership.heartbeat(node_id)
            self.tick()
            run = self.job_queue.active
            if job_id:
                self.job_queue.require(job_id)
            if run is None or (job_id and run.spec.job_id != job_id):
                if job_id:
                    record = self.store.job(job_id)
                    status = "unknown" if record is None else record.status
                    return Wait(f"job {job_id} is {status}", 1.0, done=status != "queued")
                return Wait("no job is running", 0.5)
            return run.next_task(node, after_task=after_task)

    def submit_update(
        self,
        node_id: str,
        task_id: str,
        params: Params,
        *,
        job_id: str,
        base_version: int,
        num_samples: int | None = None,
        seconds: float | None = None,
        overhead: float = 0.0,
        term: int | None = None,
        wire_bytes: int = 0,
        sparse: Mapping[str, SparseRecord] | None = None,
        folds: int = 1,
    ) -> UpdateAck:
        with self._op():
            self._check_term(term)
            node = self.membership.heartbeat(node_id)
            finished = self.job_queue.run_for(job_id)
            if finished is not None and finished.counted(task_id, node_id):
                # A re-sent update (its first push's reply was lost), possibly the one that
                # ended the job: acknowledged again, not refused and not counted twice.
                return UpdateAck(task_id, "duplicate", finished.version, "counted already")
            run = self.job_queue.running(job_id)
            params = meta_params(run, params, sparse, base_version)
            # Counted before the update can end the job (its result reports the bytes).
            with meta_upload(run, base_version, wire_bytes, sparse=sparse is not None):
                ack = run.submit(
                    node,
                    task_id,
                    params,
                    base_version=base_version,
                    num_samples=num_samples,
                    seconds=seconds,
                    overhead=overhead,
                    folds=folds,
                )
            if ack.outcome == "duplicate":  # counted already: nothing new to take in
                return ack
            run.record_bytes(wire_bytes)
            self.job_queue.advance()
            self.domain.emit(UpdateAccepted(job_id, node_id, run.version))
            return ack

    def fail_task(
        self,
        node_id: str,
        task_id: str,
        reason: str,
        *,
        job_id: str,
        base_version: int,
        term: int | None = None,
    ) -> UpdateAck:
        """``node_id`` could not run ``task_id``: re-queue its data; repeated failures end the
        job as ``failed`` (see :meth:`JobRun.fail_task`). The ack's outcome is ``"requeued"``
        or ``"job-failed"``."""
        with self._op():
            self._check_term(term)
            node = self.membership.heartbeat(node_id)
            run = self.job_queue.running(job_id)
            task = run.scheduler.get(task_id)
            if base_version != task.base_version:
                raise InvalidArgumentError(
                    f"task {task_id} starts from version {task.base_version}, "
                    f"the report says {base_version}"
                )
            ack = run.fail_task(node, task_id, reason)
            self.job_queue.advance()
            return ack

    # -- internals -------------------------------------------------------------------------
    def _check_term(self, term: int | None) -> None:
        if term is not None and term != self.term:
            raise StaleTermError(f"message carries term {term}; this leader is at {self.term}")

    def _workers(self) -> list[Node]:
        return [n for n in self.membership.alive() if n.role is not Role.LEADER]

    def _record_member(self, node: Node, status: str) -> None:
        self._outbox.put_member(
            MemberRecord(
                node.node_id, node.role.value, node.session, node.address, status, self._now()
            )
        )

    def _on_gone(self, node: Node, kind: str) -> None:
        self._record_member(node, kind)
        self.domain.emit(NodeChanged(node.node_id, kind))
        run = self.job_queue.active
        if run is not None:
            run.set_nodes(self._workers())
            run.node_gone(node, kind)
