"""Evaluation of model versions beside the owner of the leader's state.

Evaluating a version (test accuracy over the whole test set) takes from milliseconds to
seconds; inside the owner it would hold every heartbeat and task hand-out behind it. So:

* a new version to evaluate leaves the owner as an :class:`EvaluationRequest`;
* the :class:`Evaluator` thread evaluates requests one at a time. It **coalesces**: when it
  falls behind, only the newest pending version of each job is evaluated (the versions in
  between are skipped, counted in :attr:`Evaluator.skipped`);
* each result, an :class:`Evaluation`, comes back to the owner as a command
  (:meth:`~eddl.leader.coordinator.Coordinator.record_evaluation`), which applies it with
  :func:`record` and raises a typed ``model_evaluated`` or ``evaluation_failed`` event.

A job whose training is done waits, as ``ending``, for the evaluation of its last version
(:func:`end_training`), so its final accuracy is the last version's. A coordinator used
without an evaluator (direct callers, unit tests) evaluates at once, inside the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eddl.leader.events import EventKind
from eddl.learn.params import Params
from eddl.log import get_logger

if TYPE_CHECKING:
    from eddl.leader.run import JobRun

__all__ = [
    "Evaluation",
    "EvaluationRequest",
    "EvaluationTrack",
    "Evaluator",
    "ask",
    "end_training",
    "evaluate_now",
    "record",
]

log = get_logger("leader.evaluation")


@dataclass(frozen=True)
class EvaluationRequest:
    """Evaluate ``params``, version ``version`` of ``job_id``, with ``evaluate``."""

    job_id: str
    version: int
    params: Params
    evaluate: Callable[[Params], float | None]  # None: scored otherwise (a meta job's MSE)


@dataclass(frozen=True)
class Evaluation:
    """The test accuracy of a version, or why it could not be measured (``error``)."""

    job_id: str
    version: int
    accuracy: float | None
    seconds: float
    error: str = ""


def evaluate_now(request: EvaluationRequest) -> Evaluation:
    """Run one evaluation; a failure is a result (``error``), never an exception."""
    started = time.perf_counter()
    try:
        score = request.evaluate(request.params)
        accuracy = None if score is None else float(score)
        error = ""
    except Exception as exc:  # a broken evaluation must not take the leader down
        accuracy, error = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    return Evaluation(request.job_id, request.version, accuracy, seconds, error)


class Evaluator:
    """Evaluates requests on its own thread, newest pending version per job first served;
    hands each :class:`Evaluation` to ``deliver`` (from that thread)."""

    def __init__(self, deliver: Callable[[Evaluation], None]) -> None:
        self._deliver = deliver
        self._ready = threading.Condition()
        self._pending: dict[str, EvaluationRequest] = {}  # job id -> its newest request
        self._closed = False
        self.skipped = 0  # versions never evaluated: a newer one of the same job came first
        self._thread = threading.Thread(target=self._work, name="leader-evaluator", daemon=True)
        self._thread.start()

    def submit(self, request: EvaluationRequest) -> None:
        """Queue ``request``; it replaces a request of the same job still waiting."""
        with self._ready:
            if self._closed:
                return
            older = self._pending.pop(request.job_id, None)
            if older is not None:
                self.skipped += 1
                log.debug("evaluation_skipped", job_id=older.job_id, version=older.version)
            self._pending[request.job_id] = request
            self._ready.notify()

    def close(self) -> None:
        """Drop what waits, let the evaluation in progress finish, stop the thread."""
        with self._ready:
            self._closed = True
            self._pending.clear()
            self._ready.notify()
        self._thread.join()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                job_id = next(iter(self._pending))  # the job waiting longest
                request = self._pending.pop(job_id)
            self._deliver(evaluate_now(request))


@dataclass
class EvaluationTrack:
    """A job's evaluations: the newest version asked for, the newest answered, and why its
    training ended while it waits for the last one (``ending``)."""

    asked: int = -1
    answered: int = -1
    ending: str | None = None

    @property
    def waiting(self) -> bool:
        return self.answered < self.asked


def ask(run: JobRun, version: int, params: Params) -> Evaluation | None:
    """Have ``version`` evaluated: beside the owner when the run has an evaluator (returns
    None; the result comes back through :func:`record`), else at once (returns it)."""
    evaluate = run.runtime.evaluate
    if evaluate is None:
        return None
    run.evaluation.asked = max(run.evaluation.asked, version)
    request = EvaluationRequest(run.spec.job_id, version, params, evaluate)
    if run.evaluate_beside is not None:
        run.evaluate_beside(request)
        return None
    return evaluate_now(request)


def record(run: JobRun, evaluation: Evaluation) -> bool:
    """Apply ``evaluation`` to ``run`` (an older one than already applied, or one for a job
    that ended, is dropped); True when an ``ending`` run has its last answer and may end."""
    track = run.evaluation
    if run.status not in ("running", "ending") or evaluation.version < track.answered:
        return False
    track.answered = evaluation.version
    if evaluation.error:
        run._event(
            EventKind.EVALUATION_FAILED,
            f"version {evaluation.version} could not be evaluated: {evaluation.error}",
            version=evaluation.version,
            reason=evaluation.error,
        )
    else:
        run.accuracy = evaluation.accuracy
        if run.accuracy is not None and (
            run.best_accuracy is None or run.accuracy > run.best_accuracy
        ):
            run.best_accuracy = run.accuracy
        run._event(
            EventKind.MODEL_EVALUATED,
            f"version {evaluation.version}: "
            + ("scored" if evaluation.accuracy is None else f"accuracy {evaluation.accuracy:.4f}"),
            version=evaluation.version,
            accuracy=evaluation.accuracy,
            best_accuracy=run.best_accuracy,
            seconds=round(evaluation.seconds, 4),
        )
    return run.status == "ending" and not track.waiting


def end_training(run: JobRun, reason: str) -> bool:
    """Training is over (``reason``): make sure the last version is evaluated. True when the
    job may complete now; False when it waits, ``ending``, for that evaluation."""
    track = run.evaluation
    if run.runtime.evaluate is not None and run.version > max(track.asked, 0):
        done = ask(run, run.version, run.aggregator.params)
        if done is not None:
            record(run, done)
    if not track.waiting:
        return True
    run.status = "ending"
    track.ending = reason
    log.info("job_ending", job_id=run.spec.job_id, reason=reason, waiting_for=track.asked)
    return False
