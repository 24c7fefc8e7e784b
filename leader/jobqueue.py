"""The job queue: jobs run one at a time, in submission order, each as a :class:`JobRun`.

It validates and stores submitted jobs, starts the next one when the running one ends, resumes
unfinished jobs from the checkpoint store after a restart, and keeps the last few finished runs
in memory (older ones are answered from the store). A job that can no longer be built (its data
is gone, its spec no longer valid) fails with the reason instead of blocking the queue.
The :class:`~eddl.leader.coordinator.Coordinator` owns one and serialises calls to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eddl.leader import capability
from eddl.leader.aggregator import Aggregator
from eddl.leader.errors import (
    JobNotActiveError,
    JobSpecError,
    NoCapableNodeError,
    StoreError,
    UnknownJobError,
)
from eddl.leader.evaluation import EvaluationRequest
from eddl.leader.events import Event, EventKind, EventLog, Listener
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import Node
from eddl.leader.run import JobRun
from eddl.leader.runtime import JobRuntime, RuntimeFactory
from eddl.leader.scheduler import EstimatorFactory
from eddl.leader.store import CheckpointStore, VersionRecord
from eddl.log import get_logger

__all__ = ["JobQueue", "PreparedJob"]

log = get_logger("leader.jobs")

KEEP_FINISHED = 4
# Nodes named in a NoCapableNodeError message (a large fleet of one board says the same).
_SHOW_REASONS = 8


@dataclass(frozen=True)
class PreparedJob:
    """A job whose model and data are built and checked, ready to be queued."""

    spec: JobSpec
    runtime: JobRuntime


class JobQueue:
    """Queued, running and recently finished jobs."""

    def __init__(
        self,
        store: CheckpointStore,
        *,
        runtime_factory: RuntimeFactory,
        estimator_factory: EstimatorFactory,
        now: Callable[[], float],
        workers: Callable[[], list[Node]],
        task_prefix: Callable[[str], str],
        on_event: Listener,
    ) -> None:
        self.store = store
        self._runtime_factory = runtime_factory
        self._estimator_factory = estimator_factory
        self._now = now
        self._workers = workers
        self._task_prefix = task_prefix
        self._on_event = on_event
        self.active: JobRun | None = None
        self._queue: list[tuple[JobSpec, JobRuntime]] = []
        self._finished: dict[str, JobRun] = {}
        self._submitted_logs: dict[str, EventLog] = {}
        # Where runs send versions to evaluate (None: they evaluate at once).
        self.evaluate_beside: Callable[[EvaluationRequest], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def resume(self) -> list[str]:
        """Reload unfinished jobs: the running one continues from its latest stored version."""
        resumed: list[str] = []
        for record in self.store.jobs():
            if record.status not in ("running", "queued"):
                continue
            try:
                spec = JobSpec.from_mapping(record.spec)
                runtime = self._runtime_factory(spec)
            except JobSpecError as exc:
                self._fail(record.job_id, f"cannot resume: {exc}")
                continue
            if record.status == "queued" or self.active is not None:
                self._queue.append((spec, runtime))
                continue
            latest = self.store.latest_version(spec.job_id)
            if latest is None:
                raise StoreError(f"running job {spec.job_id} has no stored version")
            self.active = self._make_run(spec, runtime, latest)
            resumed.append(spec.job_id)
        self.advance()
        return resumed

    def prepare(self, spec: JobSpec) -> PreparedJob:
        """Build and check ``spec``'s model, data and rules: the slow part of a submission,
        which touches no state of the queue (it runs beside the owner of the state)."""
        runtime = self._runtime_factory(spec)
        try:  # the same rule checks the run will do
            Aggregator(
                runtime.initial_params,
                0,
                sync_rule=runtime.sync_rule,
                async_rule=spec.async_rule,
                async_params=spec.async_params,
                sync_params=spec.sync_params
                if runtime.sync_params is None
                else runtime.sync_params,
                max_staleness=spec.max_staleness,
                partial=runtime.single_layer,
            )
        except ValueError as exc:
            raise JobSpecError(f"job aggregation: {exc}") from exc
        return PreparedJob(spec, runtime)

    def submit(self, prepared: PreparedJob) -> JobSpec:
        """Store and queue a prepared job.

        Returns the spec as stored: with the model the job really runs (defaults filled in
        from the dataset), so workers and a restarted leader build exactly the same one.

        When nodes are joined and none of them can run the job (a cluster of microcontrollers
        whose firmware lacks the algorithm or whose arena is too small), the job is refused
        with :class:`NoCapableNodeError`, saying why for each node. An empty cluster accepts
        any valid job: nodes may join later.
        """
        spec, runtime = prepared.spec, prepared.runtime
        if self.store.job(spec.job_id) is not None:
            raise JobSpecError(f"job id {spec.job_id!r} is already taken")
        resolved = runtime.info.get("model")
        self._check_capable(spec, resolved if isinstance(resolved, dict) else dict(spec.model))
        if isinstance(resolved, dict) and resolved != dict(spec.model):
            spec = replace(spec, model=resolved)
        now = self._now()
        self.store.add_job(spec.job_id, spec.to_dict(), "queued", now)
        events = EventLog(spec.job_id)
        events.subscribe(lambda e: self.store.append_events([e]))
        events.append(
            EventKind.JOB_SUBMITTED,
            now,
            f"job {spec.job_id} submitted",
            algorithm=spec.algorithm,
            dataset=spec.dataset,
            aggregation=spec.aggregation,
        )
        self._submitted_logs[spec.job_id] = events
        self._queue.append((spec, runtime))
        self.advance()
        return spec

    def cancel(self, job_id: str, reason: str) -> None:
        run = self.active
        if run is not None and run.spec.job_id == job_id:
            run.cancel(reason)
            self.advance()
            return
        for entry in self._queue:
            if entry[0].job_id == job_id:
                self._queue.remove(entry)
                self.store.set_job_status(job_id, "cancelled", self._now(), {"reason": reason})
                return
        self.require(job_id)
        raise JobNotActiveError(f"job {job_id!r} is already over")

    def advance(self) -> None:
        """Retire the running job once it ended, then start the next queued one, if any."""
        run = self.active
        if run is not None and run.status not in ("running", "ending"):
            self.store.set_job_status(run.spec.job_id, run.status, self._now(), run.result)
            self._finished[run.spec.job_id] = run
            while len(self._finished) > KEEP_FINISHED:
                del self._finished[next(iter(self._finished))]
            self.active = None
        if self.active is None and self._queue:
            # Queued jobs keep the runtime built when they were checked, ready to start.
            spec, runtime = self._queue.pop(0)
            self.store.set_job_status(spec.job_id, "running", self._now())
            self.active = self._make_run(spec, runtime)

    # -- lookups -----------------------------------------------------------------------------
    def require(self, job_id: str) -> None:
        """Refuse an unknown job id (the jobs in memory are known without reading the store,
        which would wait for the writes in flight)."""
        active = self.active
        if (active is not None and active.spec.job_id == job_id) or job_id in self._finished:
            return
        if any(spec.job_id == job_id for spec, _ in self._queue):
            return
        if self.store.job(job_id) is None:
            raise UnknownJobError(f"no job {job_id!r}")

    def running(self, job_id: str) -> JobRun:
        run = self.active
        if run is not None and run.spec.job_id == job_id:
            return run
        self.require(job_id)
        raise JobNotActiveError(f"job {job_id!r} is not running")

    def run_for(self, job_id: str) -> JobRun | None:
        """The live or recently finished run of ``job_id`` (None: ask the store)."""
        run = self.active
        if run is not None and run.spec.job_id == job_id:
            return run
        return self._finished.get(job_id)

    def runs(self) -> list[JobRun]:
        return [r for r in (self.active, *self._finished.values()) if r is not None]

    def stored_status(self, job_id: str) -> dict[str, Any]:
        record = self.store.job(job_id)
        if record is None:
            raise UnknownJobError(f"no job {job_id!r}")
        versions = self.store.versions(job_id)
        result = dict(record.result)
        status: dict[str, Any] = {
            "job_id": job_id,
            "status": record.status,
            "version": versions[-1] if versions else 0,
            "result": result,
        }
        # A finished job's result holds what its status said at the end (JobRun._finish).
        for key in ("epochs", "accuracy", "best_accuracy", "mode", "mode_reason"):
            if key in result:
                status[key] = result[key]
        status["switches"] = list(result.get("switches") or [])
        status["samples_trained"] = int(result.get("samples_trained") or 0)
        status["work"] = dict(result.get("work") or {})
        return status

    # -- internals ---------------------------------------------------------------------------
    def _check_capable(self, spec: JobSpec, model: dict[str, Any]) -> None:
        nodes = self._workers()
        reasons = []
        for node in nodes:
            why = capability.unable(node, spec.algorithm, model, spec.hyper)
            if why is None:
                return
            reasons.append(f"{capability.describe_node(node)}: {why}")
        if not reasons:
            return  # nobody joined yet
        shown = "; ".join(reasons[:_SHOW_REASONS])
        more = len(reasons) - _SHOW_REASONS
        if more > 0:
            shown += f"; and {more} more"
        raise NoCapableNodeError(f"no node can run this job ({spec.algorithm}): {shown}")

    def _fail(self, job_id: str, reason: str) -> None:
        log.warning("job_failed", job_id=job_id, reason=reason)
        now = self._now()
        self.store.set_job_status(job_id, "failed", now, {"reason": reason})
        # The final event, so that a watcher of this job ends too.
        seq = self.store.last_event_seq(job_id) + 1
        event = Event(job_id, seq, now, EventKind.JOB_FAILED, f"job failed: {reason}", {})
        self.store.append_events([event])
        self._on_event(event)

    def _make_run(
        self, spec: JobSpec, runtime: JobRuntime, latest: VersionRecord | None = None
    ) -> JobRun:
        first = self.store.last_event_seq(spec.job_id) + 1
        submitted = self._submitted_logs.pop(spec.job_id, None)
        if submitted is not None:
            first = max(first, submitted.last_seq + 1)
        run = JobRun(
            spec,
            runtime,
            self.store,
            now=self._now,
            resume_from=latest,
            first_event_seq=first,
            estimator_factory=self._estimator_factory,
            task_prefix=self._task_prefix(spec.job_id),
        )
        run.evaluate_beside = self.evaluate_beside
        run.events.subscribe(self._on_event)
        workers = self._workers()
        for node in workers:
            run.scheduler.set_prior(node.node_id, node.profile.benchmark_sps)
        run.set_nodes(workers)
        return run
