"""The worker's task loop and one task's run.

The loop long-polls ``GetTask`` and runs each task it gets: fetch the model version the task
starts from, the samples, train with the executor, push the update. The next ``GetTask``
leaves with the push, naming the task being pushed (``after_task_id``): the leader answers it
once the update is taken, so a worker's next task reaches it without a round trip after the
push's reply. A heartbeat reply with ``cancel_task`` cancels the task in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from eddl.log import get_logger
from eddl.net.chunks import MAX_INLINE_MODEL_BYTES
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from eddl.worker.data import SampleSource
from eddl.worker.executor import Executor, TaskSpec
from eddl.worker.session import LeaderSession
from eddl.worker.transfer import Transfers

__all__ = ["TaskLoop", "TaskTiming", "task_from_proto"]

log = get_logger("worker")


@dataclass(frozen=True)
class TaskTiming:
    """How long one task took this node, told to the ``on_task`` hooks once its update was
    taken: ``seconds`` from the task's receipt to the leader's reply (model pull, samples,
    training, update push), ``train_seconds`` the executor's training alone."""

    node_id: str
    samples: int
    seconds: float
    train_seconds: float


def task_from_proto(task: cluster_pb2.Task) -> TaskSpec:
    """The executor's view of a task off the wire (total: checking it is the executor's)."""
    return TaskSpec(
        job_id=task.envelope.job_id,
        task_id=task.task_id,
        version=task.envelope.model_version,
        dataset=task.dataset,
        indexes=tuple(task.indexes),
        algorithm=task.algorithm,
        model_json=task.model_json,
        hyper_json=task.hyper_json,
        epochs=max(1, task.epochs),  # 0 is the wire's "not set"
        layer=task.layer,
        seed=task.seed,
    )


class TaskLoop:
    """Asks for tasks and runs them with ``executor``, counting what it did: ``state``
    (idle, training, pushing), tasks done and failed, samples done and the smoothed rate.
    ``on_task`` is told each task's timing once its update was taken; ``stopping`` says
    whether the node is stopping (a failure is then left to the ``Leave`` that follows)."""

    def __init__(
        self,
        session: LeaderSession,
        transfers: Transfers,
        samples: SampleSource,
        executor: Executor,
        *,
        on_task: Callable[[TaskTiming], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.session = session
        self.config = session.config
        self.node_id = session.node_id
        self.transfers = transfers
        self.samples = samples
        self.executor = executor
        self._on_task = on_task
        self._stopping = stopping
        self.state = "idle"
        self.tasks_done = 0
        self.tasks_failed = 0  # reported to the leader as failed
        self.samples_done = 0
        self.samples_per_second = 0.0
        self.current: asyncio.Task[None] | None = None
        # The next GetTask, asked while the last task's update was pushed (see _ask_ahead).
        self._ahead: asyncio.Task[tuple[cluster_pb2.GetTaskReply, float]] | None = None
        self._pushed_task = ""  # the task whose update the leader took last

    def cancel_current(self) -> None:
        """The leader took the task in flight back (or its job ended): stop working on it."""
        if self.current is not None:
            self.current.cancel()

    async def finish_push(self, grace_s: float) -> None:
        """A stop that finds an update on its way lets the leader answer it (bounded): the
        work is done, and the leader's answer is what says whether it was taken."""
        current = self.current
        if current is not None and self.state == "pushing":
            await asyncio.wait({current}, timeout=grace_s)

    async def run(self) -> None:
        try:
            await self._tasks()
        finally:
            self._drop_ahead()

    async def _get_task(
        self, stub: cluster_pb2_grpc.ClusterStub, after_task: str = ""
    ) -> tuple[cluster_pb2.GetTaskReply, float]:
        """The leader's reply and the call's seconds (which time an inline model's download)."""
        # Built per attempt: a rejoin in between changes the term the envelope carries.
        wait_ms = self.config.poll_ms
        held = self.transfers.model
        request = cluster_pb2.GetTaskRequest(
            envelope=self.session.envelope(),
            wait_ms=wait_ms,
            after_task_id=after_task,
            # The task's model inside the reply when small (no PullModel), unless held.
            inline_model_bytes=min(self.config.max_model_bytes, MAX_INLINE_MODEL_BYTES),
            held_job_id=held[0] if held is not None else "",
            held_version=held[1] if held is not None else 0,
        )
        started = time.monotonic()
        reply: cluster_pb2.GetTaskReply = await stub.GetTask(
            request, timeout=wait_ms / 1000.0 + self.config.rpc_timeout_s
        )
        return reply, time.monotonic() - started

    def _ask_ahead(self, task_id: str) -> None:
        """Ask for the next task now, while ``task_id``'s update is pushed: the leader answers
        once it has taken (or refused) that update, as it would a GetTask sent after it."""
        self._drop_ahead()
        self._ahead = asyncio.create_task(
            self.session.call(lambda stub: self._get_task(stub, after_task=task_id))
        )

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None

    async def _next_reply(self) -> tuple[cluster_pb2.GetTaskReply, float]:
        """The answer asked ahead during the last push, else a GetTask sent now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            reply, seconds = await ahead
            # A leader that does not know ``after_task_id`` may answer with the task being
            # pushed (a retried ask gets the task held): it is done now, so ask again.
            if reply.WhichOneof("outcome") != "task" or reply.task.task_id != self._pushed_task:
                return reply, seconds
        return await self.session.call(self._get_task)

    async def _tasks(self) -> None:
        while True:
            reply, seconds = await self._next_reply()
            if self._stopping():  # a stop came during the last push: no new task starts
                return
            outcome = reply.WhichOneof("outcome")
            if outcome == "task":
                task = task_from_proto(reply.task)
                self.transfers.keep_inline(task, reply, seconds)
                await self._run_cancellable(task)
            elif outcome == "retry_after_ms":
                await asyncio.sleep(min(reply.retry_after_ms, 5000) / 1000.0)
            else:
                await asyncio.sleep(self.config.poll_ms / 1000.0)

    async def _run_cancellable(self, task: TaskSpec) -> None:
        """Run ``task``; a heartbeat reply with ``cancel_task`` (the leader took the task back,
        or its job ended) cancels it, so no time goes into work that would be refused."""
        job = asyncio.create_task(self._run_task(task))
        self.current = job
        try:
            await job
        except asyncio.CancelledError:
            self._drop_ahead()
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # the daemon is stopping
            log.info("task cancelled by the leader", task=task.task_id)
        finally:
            self.current = None
            self.state = "idle"

    async def _run_task(self, task: TaskSpec) -> None:
        job_id, version = task.job_id, task.version
        transfers = self.transfers
        started = time.monotonic()
        log.info(
            "task",
            node=self.node_id,
            task=task.task_id,
            job=job_id,
            version=version,
            samples=task.num_samples,
        )
        try:
            self.state = "training"
            self.executor.check(task)
            params = await transfers.pull_model(job_id, version)
            fetch_started = time.monotonic()
            if self.executor.wants_samples(task):
                x, y = await self.samples.get(job_id, task.dataset, list(task.indexes))
            else:  # a device task that holds its own data (meta-learning)
                x, y = np.zeros((0, 0), np.uint8), np.zeros(0, np.int64)
            fetch_s = time.monotonic() - fetch_started
            result = await self.executor.execute(task, params, x, y)
            self.state = "pushing"
            self._ask_ahead(task.task_id)
            reply = await transfers.push(task, result)
            self._pushed_task = task.task_id
        except grpc.aio.AioRpcError as exc:
            self._drop_ahead()  # the push failed: ask afresh, as before the ask ahead
            # The leader refused this task's model or update (stale version, cancelled job):
            # the task is void, the next GetTask brings a fresh one.
            log.warning(
                "task refused",
                node=self.node_id,
                task=task.task_id,
                code=exc.code().name,
                detail=exc.details(),
            )
            return
        except Exception as exc:
            # Whatever went wrong with this task (its model or samples, the trainer, memory),
            # the node stays up: it tells the leader, which re-queues the samples and fails
            # the job if its tasks keep failing, and asks for the next task.
            self._drop_ahead()
            await self._task_failed(task, exc)
            return
        finally:
            self.state = "idle"
        self.tasks_done += 1
        self.samples_done += task.num_samples
        if result.busy_seconds > 0:
            rate = result.samples / result.busy_seconds
            self.samples_per_second = (
                rate if self.samples_per_second == 0 else 0.7 * self.samples_per_second + 0.3 * rate
            )
        timing = TaskTiming(
            self.node_id, result.samples, time.monotonic() - started, result.train_seconds
        )
        self._on_task(timing)
        log.info(
            "update pushed",
            node=self.node_id,
            task=task.task_id,
            outcome=reply.outcome,
            version=reply.envelope.model_version,
            leader=transfers.pushed_to,
            term=reply.envelope.term,
            busy_s=round(result.busy_seconds, 3),
            train_s=round(result.train_seconds, 3),
            link_s=round(result.link_seconds, 3),
            pull_s=round(transfers.pull_s, 3),
            fetch_s=round(fetch_s, 3),
            push_s=round(transfers.push_s, 3),
            samples=result.samples,
        )

    async def _task_failed(self, task: TaskSpec, exc: Exception) -> None:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        log.error("task failed", node=self.node_id, task=task.task_id, error=reason)
        if self._stopping():
            return  # e.g. a lost device: the Leave that follows re-queues the task
        try:
            reply = await self.transfers.report_failure(task, reason)
        except grpc.aio.AioRpcError as exc2:
            # The task was void already (taken back, job over): nothing more to say.
            log.warning("failure report refused", task=task.task_id, detail=exc2.details())
            return
        self.tasks_failed += 1
        log.info("failure reported", task=task.task_id, outcome=reply.outcome)
