"""One running job: scheduler + aggregator + auto policy + checkpoints, behind plain methods.

:class:`JobRun` is driven by the :class:`~eddl.leader.coordinator.Coordinator` (which owns the
membership and job queue and checks envelopes first); everything here is synchronous and short.

Synchronous rounds follow :mod:`eddl.leader.rounds`; late updates fold into the open round as
stale (:mod:`eddl.leader.aggregator`). A task out after ``2 × round_deadline`` is taken back,
its data re-queued and its update refused; a task reported failed (:meth:`JobRun.fail_task`)
is re-queued at once. ``spec.max_task_failures`` failures in a row with no update taken in
between end the job as ``failed`` (else a job whose every task fails runs on at version 0).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from eddl.leader import capability
from eddl.leader.aggregator import Aggregator
from eddl.leader.errors import DuplicateUpdateError, StaleVersionError, UnknownTaskError
from eddl.leader.evaluation import EvaluationRequest, EvaluationTrack
from eddl.leader.events import EventKind, EventLog
from eddl.leader.history import ModeSwitch, WorkTally
from eddl.leader.jobs import JobSpec
from eddl.leader.layers import LayerGroups
from eddl.leader.membership import Node
from eddl.leader.policy import AutoPolicy, Mode
from eddl.leader.progress import (
    close_round,
    finish,
    layer_of,
    maybe_finish,
    new_version,
    node_gone,
    node_joined,
    start_or_resume,
    sync_target,
    tick,
)
from eddl.leader.rounds import SyncRound
from eddl.leader.runstatus import summary
from eddl.leader.runtime import JobRuntime
from eddl.leader.sanity import UpdateSanity, screen_update
from eddl.leader.scheduler import EstimatorFactory, Task, job_scheduler
from eddl.leader.store import CheckpointStore, VersionRecord
from eddl.leader.updates import UpdateAck, UpdateSink, Wait, check_update
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.profiler.estimator import RuntimeEstimator

__all__ = ["JobRun", "UpdateAck", "Wait"]

log = get_logger("leader.run")


class JobRun:
    """The live state of one job; see the module docstring for the rules it follows."""

    def __init__(
        self,
        spec: JobSpec,
        runtime: JobRuntime,
        store: CheckpointStore,
        *,
        now: Callable[[], float],
        resume_from: VersionRecord | None = None,
        first_event_seq: int = 1,
        estimator_factory: EstimatorFactory = RuntimeEstimator,
        task_prefix: str | None = None,
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.store = store
        self._now = now
        self.status = "running"
        self.result: dict[str, Any] = {}
        self.events = EventLog(spec.job_id, first_seq=first_event_seq)
        self.events.subscribe(lambda e: store.append_events([e]))
        meta: dict[str, Any] = dict(resume_from.meta) if resume_from else {}
        params = resume_from.params if resume_from else runtime.initial_params
        version = resume_from.version if resume_from else 0
        start: Mode = "async" if spec.aggregation == "async" else "sync"
        if spec.aggregation == "auto" and meta.get("mode") in ("sync", "async"):
            start = meta["mode"]
        self.aggregator: UpdateSink = Aggregator(
            params,
            version,
            sync_rule=runtime.sync_rule,
            async_rule=spec.async_rule,
            async_params=spec.async_params,
            sync_params=spec.sync_params if runtime.sync_params is None else runtime.sync_params,
            mode=start,
            max_staleness=spec.max_staleness,
            partial=runtime.single_layer,
        )
        self.scheduler = job_scheduler(
            spec,
            runtime,
            now=now,
            estimator_factory=estimator_factory,
            task_prefix=task_prefix or f"{spec.job_id}:{uuid.uuid4().hex[:8]}:",
            version=lambda: self.aggregator.version,
        )
        if "scheduler" in meta:
            self.scheduler.restore(meta["scheduler"])
        # Kept in every checkpoint: a resumed job still reports who trained what, mode changes.
        self.work = WorkTally.from_dict(meta.get("work") or {})
        self.switches = [ModeSwitch.from_dict(s) for s in meta.get("switches") or []]
        self.policy = (
            AutoPolicy(
                spec.policy,
                start=start,
                started_at=now(),
                async_buffer=self.aggregator.updates_per_version,
            )
            if spec.aggregation == "auto"
            else None
        )
        self.accuracy: float | None = meta.get("accuracy")
        self.best_accuracy: float | None = meta.get("best_accuracy")
        # Evaluated beside the owner once the job queue sets ``evaluate_beside``, else at once.
        self.evaluation = EvaluationTrack()
        self.evaluate_beside: Callable[[EvaluationRequest], None] | None = None
        self._round = SyncRound(version)
        # Single-layer mode: node -> the layer it trains, fixed while the node stays.
        self.layers = LayerGroups(runtime.num_layers)  # single-layer mode only
        # node -> (session, why it cannot run this job or None): computed once per session.
        self._fit: dict[str, tuple[int, str | None]] = {}
        self._model_spec: dict[str, Any] = dict(runtime.info.get("model") or spec.model)
        self._workers: set[str] = set()
        self._saved_version = version if resume_from else -1
        self._bytes = 0
        self._bytes_since = now()
        # Task failures reported by workers: in a row since the last update taken, and in all.
        self._failures_in_a_row = 0
        self.failed_tasks = 0
        # When each worker's last update arrived: the wait until its next task is idle time
        # (unless that update was a warm-up probe's).
        self._free_since: dict[str, tuple[float, bool]] = {}
        self.sanity = UpdateSanity.for_job(spec.max_update_ratio, spec.quarantine_after, meta)
        start_or_resume(self, start, resumed=resume_from is not None)

    # -- reading ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.aggregator.version

    @property
    def mode(self) -> Mode:
        return self.aggregator.mode

    @property
    def mode_reason(self) -> str:
        if self.policy is not None:
            return self.policy.reason
        return f"fixed by the job (aggregation = {self.spec.aggregation!r})"

    def model(self) -> tuple[int, Params]:
        return self.aggregator.version, self.aggregator.params

    def model_at(self, version: int | None) -> tuple[int, Params] | None:
        """The current model (``None``), or an older version still held in memory."""
        if version is None or version == self.version:
            return self.model()
        if version == 0:
            return 0, self.runtime.initial_params
        kept = self.aggregator.kept(version)
        return None if kept is None else (version, kept)

    def task_of(self, node_id: str) -> Task | None:
        for task in self.scheduler.in_flight():
            if task.node_id == node_id:
                return task
        return None

    def summary(self) -> dict[str, Any]:
        return summary(self)

    def unable(self, node: Node) -> str | None:
        """Why ``node`` cannot run this job (None: it can), once per node session: the one place
        the capability rule meets a running job (hand-out, a round's roll, static shards)."""
        if node.node_id in self.sanity.quarantined:
            return f"quarantined: {self.sanity.quarantined[node.node_id]}"
        known = self._fit.get(node.node_id)
        if known is not None and known[0] == node.session:
            return known[1]
        reason = capability.unable(node, self.spec.algorithm, self._model_spec, self.spec.hyper)
        self._fit[node.node_id] = (node.session, reason)
        if reason is not None:
            log.info(
                "node_cannot_run_job",
                job_id=self.spec.job_id,
                node_id=node.node_id,
                node=capability.describe_node(node),
                reason=reason,
            )
        return reason

    # -- work ------------------------------------------------------------------------------
    def next_task(self, node: Node, *, after_task: str | None = None) -> Task | Wait:
        """The node's next task, or why it waits. ``after_task``: a task whose update the node
        is pushing as it asks; never the answer (the node waits until the update is decided)."""
        if self.status != "running":
            return Wait(f"job {self.spec.job_id} is {self.status}", 1.0, done=True)
        cannot = self.unable(node)
        if cannot is not None:
            # Nothing of this job will ever suit the node; it keeps polling for the next job.
            who = capability.describe_node(node)
            return Wait(f"{who} cannot run job {self.spec.job_id}: {cannot}", 1.0)
        held = self.task_of(node.node_id)
        if held is not None and held.session == node.session:
            if held.task_id == after_task:  # woken again once its update is in
                return Wait(f"the update of task {after_task} is on its way", self._retry())
            return held  # a retried GetTask gets the same task, never a second one
        now = self._now()
        target = sync_target(self, node.node_id, now) if self.mode == "sync" else None
        if isinstance(target, Wait):
            return target
        # A worker's first task is a probe sized before its speed is known, and carries its
        # cold start: the auto policy does not take it (or the wait after it) as evidence.
        warmup = not self.scheduler.measured(node.node_id)
        task = self.scheduler.assign(node.node_id, node.session, target=target)
        if task is None:
            if self.mode == "sync":
                self._round.nothing_for(node.node_id)
            return Wait("no data left to hand out for now", self._retry())
        task.base_version = self.version
        task.layer = layer_of(self, node)
        task.meta["deadline_seconds"] = self.spec.round_deadline
        if warmup:
            task.meta["warmup"] = True
        if self.mode == "sync":
            self._round.handed(node.node_id, task.task_id, now)
        free_since = self._free_since.pop(node.node_id, None)
        if self.policy is not None and free_since is not None:
            self.policy.observe_wait(max(0.0, now - free_since[0]), now, warmup=free_since[1])
        return task

    def counted(self, task_id: str, node_id: str) -> bool:
        """Whether ``node_id``'s update for ``task_id`` is in (among the recent tasks done)."""
        return self.scheduler.ledger.done_by(task_id) == node_id

    def submit(
        self,
        node: Node,
        task_id: str,
        params: Params,
        *,
        base_version: int,
        num_samples: int | None = None,
        seconds: float | None = None,
        overhead: float = 0.0,
        folds: int = 1,
    ) -> UpdateAck:
        if self.counted(task_id, node.node_id):  # re-sent, counted already
            return UpdateAck(task_id, "duplicate", self.version, "counted already")
        if self.status != "running":
            raise DuplicateUpdateError(f"job {self.spec.job_id} is {self.status}; update ignored")
        verify = partial(check_update, node=node, params=params, base_version=base_version,
                         num_samples=num_samples, seconds=seconds, folds=folds)  # fmt: skip
        task = self.scheduler.adopt(task_id, node.node_id, node.session, verify)
        took = self._now() - task.issued_at
        stale = task.base_version < self.version
        staleness = self.version - task.base_version
        screen_update(self, node, task, params)  # finite, near its base, or refused
        try:
            # The sink validates and refuses before it changes anything; only once it has
            # taken the update is the task marked done (so a refusal never loses the data).
            produced = self.aggregator.add(
                task_id, params, task.num_samples, task.base_version, folds=folds
            )
        except StaleVersionError as exc:
            # Too old to use: the data is done again by someone else.
            self._free_since[node.node_id] = (self._now(), False)
            self._event(
                EventKind.UPDATE_REFUSED,
                f"task {task_id} of {node.node_id}: {exc}",
                task_id=task_id,
                node_id=node.node_id,
            )
            self._take_back(task, "update too stale", f"task {task_id} re-queued (stale update)")
            raise
        self.scheduler.complete(task_id, seconds=seconds, overhead=overhead)
        self.work.record(node.node_id, task.num_samples)
        self._failures_in_a_row = 0
        self.sanity.accept(node.node_id)
        warmup = bool(task.meta.get("warmup"))
        self._free_since[node.node_id] = (self._now(), warmup)
        if self.policy is not None:
            self.policy.observe_task(took, self._now(), warmup=warmup)
            self.policy.observe_staleness(staleness, self._now())
        if self.mode == "sync":
            self._round.settle(task_id)
            produced = produced or close_round(self, "every task of the round is back")
        outcome = (
            "aggregated"
            if produced
            else "stale-folded"
            if stale and self.mode == "sync"
            else "round"
            if self.mode == "sync"
            else "buffered"
        )
        if produced:
            new_version(self, produced)
        maybe_finish(self)
        return UpdateAck(task_id, outcome, self.version)

    def fail_task(self, node: Node, task_id: str, reason: str) -> UpdateAck:
        """``node`` could not run ``task_id`` (``reason``: its one-line error). The task's data
        goes back to the queue at once; after ``max_task_failures`` failures in a row with no
        update taken in between, the job ends as ``failed`` with the last reason."""
        if self.status != "running":
            raise DuplicateUpdateError(f"job {self.spec.job_id} is {self.status}; report ignored")
        task = self.scheduler.get(task_id)
        if task.node_id != node.node_id or task.session != node.session:
            raise UnknownTaskError(
                f"task {task_id} was not handed to node {node.node_id!r} (session {node.session})"
            )
        self._free_since[node.node_id] = (self._now(), False)
        self.failed_tasks += 1
        self._failures_in_a_row += 1
        self._event(
            EventKind.TASK_FAILED,
            f"task {task_id} failed on {node.node_id}: {reason}",
            task_id=task_id,
            node_id=node.node_id,
            reason=reason,
            in_a_row=self._failures_in_a_row,
        )
        self._take_back(
            task,
            f"failed on {node.node_id}",
            f"task {task_id} re-queued (failed on {node.node_id})",
            node_id=node.node_id,
        )
        limit = self.spec.max_task_failures
        if self._failures_in_a_row >= limit:
            finish(
                self,
                "failed",
                f"{self._failures_in_a_row} tasks failed in a row with no update taken "
                f"(max_task_failures = {limit}); last, on {node.node_id}: {reason}",
            )
            return UpdateAck(task_id, "job-failed", self.version, reason)
        if self.mode == "sync":
            produced = close_round(self, "the rest of the round is back")
            if produced:
                new_version(self, produced)
        return UpdateAck(task_id, "requeued", self.version, reason)

    def node_gone(self, node: Node, kind: str) -> None:
        node_gone(self, node, kind)  # its tasks go back at once, its layer group place is free

    def node_joined(self, node: Node, workers: list[Node]) -> None:
        node_joined(self, node, workers)

    def set_nodes(self, nodes: list[Node]) -> None:
        """The live nodes; only those that can run this job count as its workers."""
        self.set_workers([n.node_id for n in nodes if self.unable(n) is None])

    def set_workers(self, node_ids: list[str]) -> None:
        """The live workers (a sync round waits for each of them to ask, for a while)."""
        self._workers = set(node_ids)
        self.scheduler.set_static_workers(node_ids)
        if self.policy is not None:
            self.policy.set_workers(len(self._workers))

    def record_bytes(self, nbytes: int) -> None:
        self._bytes += max(0, int(nbytes))

    def tick(self, link_capacity_bps: float | None = None) -> None:
        tick(self, link_capacity_bps)  # deadlines, overdue tasks, the policy, the end; often

    def cancel(self, reason: str) -> None:
        if self.status not in ("running", "ending"):
            return
        finish(self, "cancelled", reason)

    # -- internals -------------------------------------------------------------------------
    def _take_back(self, task: Task, reason: str, message: str, **data: Any) -> None:
        """The one way work goes back: range re-queued first, out of the round, lost for the
        policy, a ``task_requeued`` event."""
        self.scheduler.take_back(task.task_id, reason)
        self._round.settle(task.task_id)
        now = self._now()
        if self.policy is not None:
            self.policy.observe_task(max(0.0, now - task.issued_at), now, lost=True)
        self._event(
            EventKind.TASK_REQUEUED, message, task_id=task.task_id, **data, samples=task.num_samples
        )

    def _retry(self) -> float:
        return min(0.5, max(0.02, self.spec.task_seconds / 10))

    def _event(self, kind: EventKind, message: str, **data: Any) -> None:
        self.events.append(kind, self._now(), message, **data)
        log.info(kind.value, job_id=self.spec.job_id, message=message)
