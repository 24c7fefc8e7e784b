"""Evaluation beside the owner: the coalescing evaluator, and how results end a job."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from eddl.leader.coordinator import Coordinator
from eddl.leader.evaluation import Evaluation, EvaluationRequest, Evaluator, evaluate_now
from eddl.leader.events import EventKind
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.run import Wait
from eddl.leader.runtime import JobRuntime
from eddl.leader.store import MemoryStore
from eddl.learn.params import Params
from tests.unit.test_leader_support import Clock, accuracy, float_runtime, spec, train

WAIT_S = 10.0  # generous: each wait below ends as soon as the event it waits for happens


def request(version: int, job_id: str = "j", evaluate: object = None) -> EvaluationRequest:
    params = {"W0": np.full((2, 2), float(version), np.float32)}
    fn = evaluate if callable(evaluate) else (lambda p: float(p["W0"][0, 0]) / 100)
    return EvaluationRequest(job_id, version, params, fn)


class Collected:
    """What an evaluator delivered, with a way to wait for ``n`` results."""

    def __init__(self) -> None:
        self.results: list[Evaluation] = []
        self._changed = threading.Condition()

    def __call__(self, result: Evaluation) -> None:
        with self._changed:
            self.results.append(result)
            self._changed.notify_all()

    def wait_for(self, n: int) -> list[Evaluation]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.results) >= n, WAIT_S), self.results
            return list(self.results)


def test_an_evaluator_that_falls_behind_evaluates_only_the_newest_pending_version() -> None:
    gate = threading.Event()
    started = threading.Event()

    def slow(p: Params) -> float:
        started.set()
        assert gate.wait(WAIT_S)
        return float(p["W0"][0, 0]) / 100

    got = Collected()
    evaluator = Evaluator(got)
    try:
        evaluator.submit(request(1, evaluate=slow))
        assert started.wait(WAIT_S)  # version 1 is being evaluated; 2, 3, 4 pile up
        for version in (2, 3, 4):
            evaluator.submit(request(version, evaluate=slow))
        gate.set()
        results = got.wait_for(2)
    finally:
        evaluator.close()
    assert [(r.version, r.accuracy) for r in results] == [(1, 0.01), (4, 0.04)]
    assert evaluator.skipped == 2


def test_each_job_keeps_its_own_newest_request() -> None:
    gate = threading.Event()

    def held(p: Params) -> float:
        assert gate.wait(WAIT_S)
        return 0.5

    got = Collected()
    evaluator = Evaluator(got)
    try:
        evaluator.submit(request(1, "a", held))
        evaluator.submit(request(1, "b", held))
        evaluator.submit(request(2, "b", held))
        gate.set()
        results = got.wait_for(2)
    finally:
        evaluator.close()
    assert sorted((r.job_id, r.version) for r in results) == [("a", 1), ("b", 2)]


def test_a_failing_evaluation_is_a_result_with_its_reason() -> None:
    def broken(p: Params) -> float:
        raise RuntimeError("test set missing")

    result = evaluate_now(request(3, evaluate=broken))
    assert result.accuracy is None and result.version == 3
    assert result.error == "RuntimeError: test set missing"


def test_a_closed_evaluator_drops_new_requests() -> None:
    got = Collected()
    evaluator = Evaluator(got)
    evaluator.close()
    evaluator.submit(request(1))
    assert got.results == []


# -- through the coordinator ---------------------------------------------------------------------
def coordinator(clock: Clock) -> tuple[Coordinator, list[EvaluationRequest]]:
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    c = Coordinator(MemoryStore(), membership=membership, runtime_factory=float_runtime, now=clock)
    asked: list[EvaluationRequest] = []
    c.evaluate_beside(asked.append)  # the evaluator's queue, answered by hand below
    return c, asked


def run_rounds(c: Coordinator, clock: Clock, rounds: int) -> None:
    for _ in range(rounds):
        got = c.next_task("w0")
        clock.advance(0.5)
        model = c.model("job1")
        c.submit_update(
            "w0",
            got.task_id,  # type: ignore[union-attr]
            train(model.params, got.indexes),  # type: ignore[union-attr]
            job_id="job1",
            base_version=model.version,
        )


def kinds(c: Coordinator) -> list[EventKind]:
    return [e.kind for e in c.events("job1")]


def test_a_job_whose_training_is_done_stays_ending_until_its_last_version_is_evaluated() -> None:
    clock = Clock()
    c, asked = coordinator(clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=3))
    run_rounds(c, clock, 3)
    assert [r.version for r in asked] == [1, 2, 3]  # nothing evaluated inside the owner
    assert c.job_status("job1")["status"] == "ending"
    assert EventKind.JOB_COMPLETED not in kinds(c)
    wait = c.next_task("w0")
    assert isinstance(wait, Wait) and wait.done and "ending" in wait.reason
    c.record_evaluation(evaluate_now(asked[0]))  # an older version: still waiting
    assert c.job_status("job1")["status"] == "ending"
    c.record_evaluation(evaluate_now(asked[2]))
    status = c.job_status("job1")
    assert status["status"] == "completed"
    assert status["accuracy"] == pytest.approx(accuracy(asked[2].params))
    assert kinds(c)[-2:] == [EventKind.MODEL_EVALUATED, EventKind.JOB_COMPLETED]
    evaluated = [e.data["version"] for e in c.events("job1") if e.kind is EventKind.MODEL_EVALUATED]
    assert evaluated == [1, 3]
    c.record_evaluation(evaluate_now(asked[1]))  # too late for an ended job: dropped
    assert c.job_status("job1")["accuracy"] == pytest.approx(accuracy(asked[2].params))


def test_the_last_version_is_evaluated_even_when_eval_every_skips_it() -> None:
    clock = Clock()
    c, asked = coordinator(clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=3, eval_every=2))
    run_rounds(c, clock, 3)
    assert [r.version for r in asked] == [2, 3]
    c.record_evaluation(evaluate_now(asked[-1]))
    assert c.job_status("job1")["status"] == "completed"


def test_a_failed_evaluation_raises_its_event_and_the_ending_job_still_completes() -> None:
    clock = Clock()
    c, asked = coordinator(clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=2))
    run_rounds(c, clock, 2)
    c.record_evaluation(evaluate_now(asked[0]))
    c.record_evaluation(Evaluation("job1", 2, None, 0.0, "MemoryError: test set"))
    status = c.job_status("job1")
    assert status["status"] == "completed"
    assert status["accuracy"] == pytest.approx(accuracy(asked[0].params))  # the last measured
    failed = [e for e in c.events("job1") if e.kind is EventKind.EVALUATION_FAILED]
    assert [(e.data["version"], e.data["reason"]) for e in failed] == [(2, "MemoryError: test set")]


def test_the_target_accuracy_ends_a_job_when_the_evaluation_comes_back() -> None:
    clock = Clock()
    c, _ = coordinator(clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=50, target_accuracy=0.5))
    run_rounds(c, clock, 2)
    assert c.job_status("job1")["status"] == "running"
    c.record_evaluation(Evaluation("job1", 2, 0.9, 0.0))  # the newest version: nothing waits
    status = c.job_status("job1")
    assert status["status"] == "completed" and status["accuracy"] == 0.9
    assert "target" in status["result"]["reason"]


def test_an_ending_job_can_be_cancelled() -> None:
    clock = Clock()
    c, asked = coordinator(clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=1))
    run_rounds(c, clock, 1)
    assert c.cancel_job("job1")["status"] == "cancelled"
    c.record_evaluation(evaluate_now(asked[0]))  # the job is over: nothing changes
    assert c.job_status("job1")["status"] == "cancelled"


def test_without_an_evaluator_versions_are_evaluated_at_once() -> None:
    clock = Clock()
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    c = Coordinator(MemoryStore(), membership=membership, runtime_factory=float_runtime, now=clock)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=2))
    run_rounds(c, clock, 2)
    assert c.job_status("job1")["status"] == "completed"
    events = c.events("job1")
    updated = [e for e in events if e.kind is EventKind.MODEL_UPDATED]
    evaluated = [e for e in events if e.kind is EventKind.MODEL_EVALUATED]
    assert [e.data["version"] for e in evaluated] == [1, 2]
    # The version's own accuracy rides on its model_updated event too.
    assert [e.data["accuracy"] for e in updated] == [e.data["accuracy"] for e in evaluated]


def test_a_runtime_without_evaluation_asks_for_none() -> None:
    def no_eval(s: object = None) -> JobRuntime:
        runtime = float_runtime()
        runtime.evaluate = None
        return runtime

    clock = Clock()
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    c = Coordinator(MemoryStore(), membership=membership, runtime_factory=no_eval, now=clock)
    asked: list[EvaluationRequest] = []
    c.evaluate_beside(asked.append)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=40))
    c.submit_job(spec(rounds=2))
    run_rounds(c, clock, 2)
    assert asked == [] and c.job_status("job1")["status"] == "completed"
