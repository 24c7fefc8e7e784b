"""One running job: scheduler + aggregator + auto policy + checkpoints, behind plain methods.

:class:`JobRun` is driven by the :class:`~eddl.leader.coordinator.Coordinator`, which owns the
membership and the job queue and checks envelopes first. Everything here is synchronous and
short (numpy work on one update, a small SQLite write per version).

Synchronous rounds follow :mod:`eddl.leader.rounds`. Updates that arrive after their round
closed are folded into the open round as stale (see :mod:`eddl.leader.aggregator`); a task still
out after ``2 × round_deadline`` is taken back and its data re-queued, and its update would then
be refused. A task a worker reports as failed (:meth:`JobRun.fail_task`) is re-queued at once;
``spec.max_task_failures`` failures in a row, with no update taken in between, end the job as
``failed``: a job whose every task fails would otherwise run, at version 0, forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eddl.leader import capability
from eddl.leader.aggregator import Aggregator, NewVersion
from eddl.leader.errors import (
    DuplicateUpdateError,
    StaleVersionError,
    UnknownTaskError,
    UpdateRejectedError,
)
from eddl.leader.events import EventKind, EventLog
from eddl.leader.history import ModeSwitch, WorkTally
from eddl.leader.jobs import JobSpec
from eddl.leader.layers import LayerGroups
from eddl.leader.membership import Node
from eddl.leader.policy import AutoPolicy, Mode
from eddl.leader.rounds import SyncRound
from eddl.leader.runtime import JobRuntime
from eddl.leader.scheduler import EstimatorFactory, Scheduler, Task
from eddl.leader.store import CheckpointStore, VersionRecord, WriteBatch
from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.profiler.estimator import RuntimeEstimator

__all__ = ["JobRun", "UpdateAck", "Wait"]

log = get_logger("leader.run")


@dataclass(frozen=True)
class Wait:
    """No task now: ask again after ``retry_after`` seconds (``done``: the job is over)."""

    reason: str
    retry_after: float
    done: bool = False


@dataclass(frozen=True)
class UpdateAck:
    """How an update was taken in; ``version`` is the model version after it."""

    task_id: str
    outcome: str  # "aggregated" | "buffered" | "stale-folded" | "round" | "requeued" | "job-failed"
    version: int
    detail: str = ""


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
        self.aggregator = Aggregator(
            params,
            version,
            sync_rule=runtime.sync_rule,
            async_rule=spec.async_rule,
            async_params=spec.async_params,
            mode=start,
            max_staleness=spec.max_staleness,
            partial=runtime.single_layer,
        )
        self.scheduler = Scheduler(
            runtime.num_train,
            seed=spec.seed,
            task_seconds=spec.task_seconds,
            min_samples=spec.min_task_samples,
            max_samples=spec.max_task_samples,
            default_samples=spec.default_task_samples,
            granularity=runtime.granularity,
            distribution=spec.distribution,
            estimator_factory=estimator_factory,
            now=now,
            task_prefix=task_prefix or f"{spec.job_id}:{uuid.uuid4().hex[:8]}:",
            limit_epochs=spec.max_epochs,
        )
        if "scheduler" in meta:
            self.scheduler.restore(meta["scheduler"])
        # Kept in every checkpoint, so a resumed job still reports who trained what and how
        # its mode changed.
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
        if resume_from and self.policy is not None:
            self.policy.reason = f"resumed in {start} mode, the mode at the checkpoint"
        if resume_from:
            self._event(
                EventKind.JOB_RESUMED,
                f"resumed from checkpoint version {version}",
                version=version,
                mode=start,
            )
        else:
            self._event(
                EventKind.JOB_STARTED,
                f"started {spec.algorithm} on {spec.dataset}, {start} aggregation",
                version=0,
                mode=start,
                rule=self.aggregator.describe()["rule"],
            )
            self._checkpoint(force=True)

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
        now = self._now()
        return {
            "job_id": self.spec.job_id,
            "status": self.status,
            "version": self.version,
            "epochs": round(self.scheduler.epochs, 4),
            "accuracy": self.accuracy,
            "best_accuracy": self.best_accuracy,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "switches": [s.to_dict() for s in self.switches],
            "samples_trained": self.scheduler.samples_done,
            "work": self.work.to_dict(),
            "aggregation": self.aggregator.describe(),
            "policy": (None if self.policy is None else self.policy.metrics(now).to_dict()),
            "tasks_in_flight": len(self.scheduler.in_flight()),
            "requeued_ranges": len(self.scheduler.requeued()),
            "round": {
                "version": self._round.version,
                "tasks": len(self._round.tasks),
                "back": len(self._round.settled),
            }
            if self.mode == "sync"
            else None,
            "result": dict(self.result),
            "layer_groups": self.layer_groups() if self.runtime.single_layer else None,
            "unable_nodes": {n: r for n, (_, r) in sorted(self._fit.items()) if r is not None},
            "failed_tasks": self.failed_tasks,
        }

    def layer_groups(self) -> dict[int, list[str]]:
        """Single-layer mode: the nodes training each layer (every layer listed)."""
        return self.layers.groups()

    def unable(self, node: Node) -> str | None:
        """Why ``node`` cannot run this job (None: it can); decided once per node session.

        The one place the capability rule is applied to a running job: task hand-out, the
        sync round's roll of expected workers and the static shards all ask here.
        """
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
    def next_task(self, node: Node) -> Task | Wait:
        if self.status != "running":
            return Wait(f"job {self.spec.job_id} is {self.status}", 1.0, done=True)
        cannot = self.unable(node)
        if cannot is not None:
            # Nothing of this job will ever suit the node; it keeps polling for the next job.
            who = capability.describe_node(node)
            return Wait(f"{who} cannot run job {self.spec.job_id}: {cannot}", 1.0)
        held = self.task_of(node.node_id)
        if held is not None and held.session == node.session:
            return held  # a retried GetTask gets the same task, never a second one
        now = self._now()
        seconds: float | None = None
        if self.mode == "sync":
            if node.node_id in self._round.asked:
                return Wait(f"waiting for round {self.version} to close", self._retry())
            seconds = self._round.budget(now, self.spec.task_seconds)
        # A worker's first task is a probe sized before its speed is known, and carries its
        # cold start: the auto policy does not take it (or the wait after it) as evidence.
        warmup = not self.scheduler.measured(node.node_id)
        task = self.scheduler.assign(node.node_id, node.session, seconds=seconds)
        if task is None:
            if self.mode == "sync":
                self._round.nothing_for(node.node_id)
            return Wait("no data left to hand out for now", self._retry())
        task.base_version = self.version
        task.layer = self._layer_of(node)
        task.meta["deadline_seconds"] = self.spec.round_deadline
        if warmup:
            task.meta["warmup"] = True
        if self.mode == "sync":
            self._round.handed(node.node_id, task.task_id, now)
        free_since = self._free_since.pop(node.node_id, None)
        if self.policy is not None and free_since is not None:
            self.policy.observe_wait(max(0.0, now - free_since[0]), now, warmup=free_since[1])
        return task

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
    ) -> UpdateAck:
        if self.status != "running":
            raise DuplicateUpdateError(f"job {self.spec.job_id} is {self.status}; update ignored")
        task = self.scheduler.get(task_id)
        if task.node_id != node.node_id or task.session != node.session:
            raise UnknownTaskError(
                f"task {task_id} was not handed to node {node.node_id!r} (session {node.session})"
            )
        if base_version != task.base_version:
            raise UpdateRejectedError(
                f"task {task_id} starts from version {task.base_version}, "
                f"the update says {base_version}"
            )
        if num_samples is not None and num_samples != task.num_samples:
            raise UpdateRejectedError(
                f"task {task_id} holds {task.num_samples} samples, the update says {num_samples}"
            )
        if seconds is not None and not (seconds >= 0 and np.isfinite(seconds)):
            raise UpdateRejectedError(f"task seconds must be finite and >= 0, got {seconds!r}")
        if task.layer is not None:
            allowed = {f"W{task.layer}", f"b{task.layer}"}
            extra = sorted(set(params) - allowed)
            if extra:
                raise UpdateRejectedError(
                    f"task {task_id} trains layer {task.layer}; the update also holds {extra}"
                )
        try:
            self.aggregator.check(params, task.num_samples, task.base_version)
        except StaleVersionError as exc:
            # Too old to use: the data is done again by someone else.
            self.scheduler.take_back(task_id, "update too stale")
            self._round.settle(task_id)
            now = self._now()
            self._free_since[node.node_id] = (now, False)
            if self.policy is not None:
                self.policy.observe_task(max(0.0, now - task.issued_at), now, lost=True)
            self._event(
                EventKind.UPDATE_REFUSED,
                f"task {task_id} of {node.node_id}: {exc}",
                task_id=task_id,
                node_id=node.node_id,
            )
            self._event(
                EventKind.TASK_REQUEUED,
                f"task {task_id} re-queued (stale update)",
                task_id=task_id,
                samples=task.num_samples,
            )
            raise
        took = self._now() - task.issued_at
        stale = task.base_version < self.version
        staleness = self.version - task.base_version
        # The aggregator validates again and refuses before it changes anything; only once it
        # has taken the update is the task marked done (so a refusal never loses the data).
        produced = self.aggregator.add(task_id, params, task.num_samples, task.base_version)
        self.scheduler.complete(task_id, seconds=seconds, overhead=overhead)
        self.work.record(node.node_id, task.num_samples)
        self._failures_in_a_row = 0
        warmup = bool(task.meta.get("warmup"))
        self._free_since[node.node_id] = (self._now(), warmup)
        if self.policy is not None:
            self.policy.observe_task(took, self._now(), warmup=warmup)
            self.policy.observe_staleness(staleness, self._now())
        if self.mode == "sync":
            self._round.settle(task_id)
            produced = produced or self._maybe_close_round("every task of the round is back")
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
            self._new_version(produced)
        self._maybe_finish()
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
        now = self._now()
        self.scheduler.take_back(task_id, f"failed on {node.node_id}")
        self._round.settle(task_id)
        self._free_since[node.node_id] = (now, False)
        if self.policy is not None:
            self.policy.observe_task(max(0.0, now - task.issued_at), now, lost=True)
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
        self._event(
            EventKind.TASK_REQUEUED,
            f"task {task_id} re-queued (failed on {node.node_id})",
            task_id=task_id,
            node_id=node.node_id,
            samples=task.num_samples,
        )
        limit = self.spec.max_task_failures
        if self._failures_in_a_row >= limit:
            self._finish(
                "failed",
                f"{self._failures_in_a_row} tasks failed in a row with no update taken "
                f"(max_task_failures = {limit}); last, on {node.node_id}: {reason}",
            )
            return UpdateAck(task_id, "job-failed", self.version, reason)
        if self.mode == "sync":
            produced = self._maybe_close_round("the rest of the round is back")
            if produced:
                self._new_version(produced)
        return UpdateAck(task_id, "requeued", self.version, reason)

    def node_gone(self, node: Node, kind: str) -> None:
        """A node left or expired: its in-flight task goes back to the queue at once, and its
        place in a layer group is free."""
        self._free_since.pop(node.node_id, None)
        self._fit.pop(node.node_id, None)
        if self.layers.release(node.node_id):
            self._event(
                EventKind.LAYER_GROUPS,
                f"{node.node_id} left its layer group",
                groups=self.layer_groups(),
            )
        now = self._now()
        for task in self.scheduler.take_back_node(node.node_id, f"node {kind}"):
            self._round.settle(task.task_id)
            if self.policy is not None:
                self.policy.observe_task(max(0.0, now - task.issued_at), now, lost=True)
            self._event(
                EventKind.TASK_REQUEUED,
                f"task {task.task_id} of {node.node_id} re-queued ({kind})",
                task_id=task.task_id,
                node_id=node.node_id,
                samples=task.num_samples,
            )
        self._round.forget(node.node_id)
        if self.policy is not None:
            # A clean leave costs sync no more than async; an expiry stalled the round.
            self.policy.observe_churn(self._now(), expiry=kind != "left")
        if self.mode == "sync":
            produced = self._maybe_close_round("the rest of the round is back")
            if produced:
                self._new_version(produced)

    def node_joined(self) -> None:
        if self.policy is not None:
            self.policy.observe_churn(self._now())

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
        """Deadlines, overdue tasks, the auto policy and the end of the job; call often."""
        if self.status != "running":
            return
        now = self._now()
        lease = 2.0 * self.spec.round_deadline
        for task in self.scheduler.overdue(lease):
            self.scheduler.take_back(task.task_id, f"out for more than {lease:g} s")
            self._round.settle(task.task_id)
            if self.policy is not None:
                self.policy.observe_task(now - task.issued_at, now, lost=True)
            self._event(
                EventKind.TASK_REQUEUED,
                f"task {task.task_id} of {task.node_id} re-queued (out for more than {lease:g} s)",
                task_id=task.task_id,
                node_id=task.node_id,
                samples=task.num_samples,
            )
        if self.mode == "sync":
            produced = (
                self._maybe_close_round("round deadline", deadline=True)
                if self._round.past(now, self.spec.round_deadline)
                else self._maybe_close_round("every task of the round is back")
            )
            if produced:
                self._new_version(produced)
        if link_capacity_bps and now - self._bytes_since >= 1.0:
            busy = self._bytes * 8.0 / (now - self._bytes_since) / link_capacity_bps
            if self.policy is not None:
                self.policy.observe_bandwidth(min(1.0, busy), now)
            self._bytes, self._bytes_since = 0, now
        if self.policy is not None:
            switch = self.policy.decide(now)
            if switch is not None:
                produced = self.aggregator.switch(switch.mode)
                self._round = SyncRound(self.version)
                self.switches.append(
                    ModeSwitch(now, self.version, switch.previous, switch.mode, switch.reason)
                )
                self._event(
                    EventKind.POLICY_SWITCHED,
                    f"{switch.previous} -> {switch.mode}: {switch.reason}",
                    previous=switch.previous,
                    mode=switch.mode,
                    reason=switch.reason,
                    metrics=switch.metrics.to_dict(),
                )
                if produced:
                    self._new_version(produced)
        self._maybe_finish()

    def cancel(self, reason: str) -> None:
        if self.status != "running":
            return
        self._finish("cancelled", reason)

    # -- internals -------------------------------------------------------------------------
    def _retry(self) -> float:
        return min(0.5, max(0.02, self.spec.task_seconds / 10))

    def _layer_of(self, node: Node) -> int | None:
        """Single-layer mode: the layer ``node`` trains (:class:`~eddl.leader.layers.LayerGroups`
        chooses among the layers the node can train, by group speed)."""
        if not self.runtime.single_layer:
            return None
        new = node.node_id not in self.layers
        trainable = capability.trainable_layers(
            node, self.spec.algorithm, self._model_spec, self.spec.hyper, self.runtime.num_layers
        )
        # Not empty: next_task hands nothing to a node that cannot run the job.
        layer, was = self.layers.assign(
            node.node_id,
            trainable,
            self.scheduler.samples_per_second,
            self.scheduler.measured(node.node_id),
        )
        if new or was is not None:
            moved = "" if was is None else f" (was {was}; its speed is now measured)"
            self._event(
                EventKind.LAYER_GROUPS,
                f"{node.node_id} trains layer {layer}{moved}",
                node_id=node.node_id,
                layer=layer,
                groups=self.layer_groups(),
            )
        return layer

    def _maybe_close_round(self, why: str, *, deadline: bool = False) -> NewVersion | None:
        r = self._round
        if self.mode != "sync" or not r.tasks:
            return None
        outstanding = r.outstanding
        if not deadline and not r.complete(self._now(), self._workers, self.spec.task_seconds):
            return None
        if self.aggregator.round_size() == 0:
            if not outstanding:  # everything was taken back: start the round afresh
                self._round = SyncRound(self.version)
            return None
        produced = self.aggregator.close_round()
        if produced is not None:
            self._event(
                EventKind.ROUND_CLOSED,
                f"round {r.version} closed ({why}) with {produced.updates} update(s)",
                version=r.version,
                updates=produced.updates,
                late=len(outstanding),
                reason=why,
            )
        return produced

    def _new_version(self, produced: NewVersion) -> None:
        self._round = SyncRound(produced.version)
        if self.runtime.evaluate is not None and produced.version % self.spec.eval_every == 0:
            self.accuracy = float(self.runtime.evaluate(produced.params))
            if self.best_accuracy is None or self.accuracy > self.best_accuracy:
                self.best_accuracy = self.accuracy
        self._event(
            EventKind.MODEL_UPDATED,
            f"version {produced.version} by {produced.how}",
            version=produced.version,
            updates=produced.updates,
            samples=produced.samples,
            accuracy=self.accuracy,
            mode=self.mode,
            epochs=round(self.scheduler.epochs, 4),
        )
        self._checkpoint()

    def _checkpoint(self, *, force: bool = False) -> None:
        # Called right after a version is made, when the round or the async buffer has just
        # been emptied into it: every task the scheduler counts as done is in this version, and
        # everything in flight is written as "to do", so a resumed job loses no sample.
        v = self.version
        if v <= self._saved_version:
            return
        if not force and v % self.spec.checkpoint_every != 0:
            return
        meta = {
            "scheduler": self.scheduler.checkpoint(),
            "work": self.work.to_dict(),
            "switches": [s.to_dict() for s in self.switches],
            "mode": self.mode,
            "accuracy": self.accuracy,
            "best_accuracy": self.best_accuracy,
        }
        # One batch: through the coordinator's outbox, the version, its prune and the events of
        # the same command are committed in one transaction.
        record = VersionRecord(self.spec.job_id, v, self.aggregator.params, meta, self._now())
        self.store.commit(WriteBatch(versions=[record], prunes=[(self.spec.job_id, 3)]))
        self._saved_version = v

    def _maybe_finish(self) -> None:
        if self.status != "running":
            return
        s = self.spec
        reason = None
        if (
            s.target_accuracy is not None
            and self.accuracy is not None
            and self.accuracy >= s.target_accuracy
        ):
            reason = f"test accuracy {self.accuracy:.4f} >= target {s.target_accuracy}"
        elif s.rounds is not None and self.version >= s.rounds:
            reason = f"{self.version} model versions >= rounds {s.rounds}"
        elif self.scheduler.exhausted:
            # The last updates go into a version in the mode that ran: the job's status keeps
            # saying which mode that was, and why.
            last = self.aggregator.flush()
            if last is not None:
                self._new_version(last)
            reason = f"{self.scheduler.epochs:.2f} epochs >= max_epochs {s.max_epochs}"
        if reason is not None:
            self._finish("completed", reason)

    def _finish(self, status: str, reason: str) -> None:
        self.status = status
        self.result = {
            "reason": reason,
            "version": self.version,
            "accuracy": self.accuracy,
            "best_accuracy": self.best_accuracy,
            "epochs": round(self.scheduler.epochs, 4),
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "switches": [s.to_dict() for s in self.switches],
            "samples_trained": self.scheduler.samples_done,
            "work": self.work.to_dict(),
        }
        self._checkpoint(force=True)
        kind = {
            "completed": EventKind.JOB_COMPLETED,
            "failed": EventKind.JOB_FAILED,
        }.get(status, EventKind.JOB_CANCELLED)
        self._event(kind, f"job {status}: {reason}", **self.result)

    def _event(self, kind: EventKind, message: str, **data: Any) -> None:
        event = self.events.append(kind, self._now(), message, **data)
        log.info(kind.value, job_id=self.spec.job_id, message=message)
        del event
