"""The coordinator's job-side commands that come from beside the request path: evaluations
posted back by the evaluator, bytes counted by the servicers, a takeover noted by the
election.

A mixin of :class:`~eddl.leader.coordinator.Coordinator` (the same state, under the same
``_op``), like :mod:`eddl.leader.queries`; kept apart so each fits in a module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from eddl.leader import evaluation
from eddl.leader.evaluation import Evaluation, EvaluationRequest
from eddl.leader.events import EventKind
from eddl.leader.jobqueue import JobQueue
from eddl.leader.progress import finish, maybe_finish

__all__ = ["JobCommands"]


class JobCommands:
    job_queue: JobQueue

    def _op(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def note_election(self, message: str, **data: Any) -> str:
        """Record in the running job's events that this leader took over as root (and why);
        returns the job's id ("" when no job runs)."""
        with self._op():
            run = self.job_queue.active
            if run is None:
                return ""
            run._event(EventKind.LEADER_ELECTED, message, **data)
            return run.spec.job_id

    def record_transfer(self, job_id: str, nbytes: int) -> None:
        """Count bytes the leader sent or received for a job (model pulls, samples), for the
        auto policy's bandwidth signal (used when ``link_capacity_bps`` is set)."""
        with self._op():
            run = self.job_queue.active
            if run is not None and run.spec.job_id == job_id:
                run.record_bytes(nbytes)

    def evaluate_beside(self, submit: Callable[[EvaluationRequest], None]) -> None:
        """Send versions to evaluate to ``submit`` (an :class:`Evaluator`) from now on; the
        results come back through :meth:`record_evaluation`."""
        with self._op():
            self.job_queue.evaluate_beside = submit
            for run in self.job_queue.runs():
                run.evaluate_beside = submit

    def record_evaluation(self, result: Evaluation) -> None:
        """A version's evaluation is back: its accuracy (or failure) becomes an event; the
        target accuracy may end the job, and an ``ending`` job completes on its last one."""
        with self._op():
            run = self.job_queue.run_for(result.job_id)
            if run is None:
                return
            if evaluation.record(run, result):
                finish(run, "completed", run.evaluation.ending or "training done")
            else:
                maybe_finish(run)
            self.job_queue.advance()
