"""The daemon's task loop with an executor of the test's own, against a real leader.

The daemon is the wire edge: its executor gets typed tasks and the task's samples in index
order, never protobuf. A task the executor refuses (``check``) or that breaks (``execute``) is
reported to the leader as failed and the worker goes on with the next task.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from eddl.data import load_dataset
from eddl.learn.params import Params
from eddl.worker.daemon import WorkerDaemon
from eddl.worker.executor import Executor, TaskError, TaskResult, TaskSpec
from eddl.worker.training import NumpyExecutor
from tests.integration.cluster_support import DIGITS_JOB, running_cluster, wait_until

SHORT_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}


class ScriptedExecutor(Executor):
    """Refuses its first task, breaks during its second, trains the others with numpy; keeps
    every task it saw and checks the samples it was given against the dataset."""

    def __init__(self) -> None:
        self.numpy = NumpyExecutor()
        self.checked: list[TaskSpec] = []
        self.executed: list[TaskSpec] = []
        self.wrong_samples: list[str] = []

    def check(self, task: TaskSpec) -> None:
        self.checked.append(task)
        if len(self.checked) == 1:
            raise TaskError("the first task is refused")
        self.numpy.check(task)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        self.executed.append(task)
        ds = load_dataset(task.dataset)
        rows = list(task.indexes)
        if not (np.array_equal(x, ds.x_train[rows]) and np.array_equal(y, ds.y_train[rows])):
            self.wrong_samples.append(task.task_id)
        if len(self.executed) == 1:
            raise RuntimeError("the second task breaks")
        return await self.numpy.execute(task, params, x, y)


async def test_the_daemon_hands_typed_tasks_to_its_executor_and_reports_failures(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        executor = ScriptedExecutor()
        daemon = WorkerDaemon(cluster.worker_config("w0"), executor)
        # Registered with the cluster, which stops it on the way out.
        cluster.workers["w0"] = (daemon, asyncio.create_task(daemon.run()))
        await wait_until(lambda: "w0" in cluster.coordinator.membership, 10, "w0 joined")
        job = await cluster.submit({**SHORT_JOB, "rounds": 3})
        status = await cluster.wait_job(job, 60)
        running = cluster.workers["w0"][1]
        assert daemon.joined and not running.done()
    assert status["status"] == "completed", status
    assert daemon.tasks_failed == 2 and daemon.tasks_done == len(executor.executed) - 1
    assert len(executor.checked) == len(executor.executed) + 1
    first = executor.checked[0]
    assert first.job_id == job and first.algorithm == "sgd" and first.dataset == "digits"
    assert first.num_samples > 0 and first.epochs == 1 and first.layer == -1
    assert [t.version for t in executor.executed] == sorted(t.version for t in executor.executed)
    assert executor.wrong_samples == []


class PullWatcher(Executor):
    """Trains with numpy; notes each task's id and the model pull it needed (0: none)."""

    def __init__(self) -> None:
        self.numpy = NumpyExecutor()
        self.daemon: WorkerDaemon | None = None
        self.runs: list[tuple[str, float]] = []

    def check(self, task: TaskSpec) -> None:
        self.numpy.check(task)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        assert self.daemon is not None
        self.runs.append((task.task_id, self.daemon.transfers.pull_s))
        return await self.numpy.execute(task, params, x, y)


async def test_each_task_runs_once_with_its_model_inline_and_no_pull(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        executor = PullWatcher()
        daemon = executor.daemon = WorkerDaemon(cluster.worker_config("w0"), executor)
        cluster.workers["w0"] = (daemon, asyncio.create_task(daemon.run()))
        await wait_until(lambda: "w0" in cluster.coordinator.membership, 10, "w0 joined")
        job = await cluster.submit({**SHORT_JOB, "rounds": 4})
        status = await cluster.wait_job(job, 60)
    assert status["status"] == "completed", status
    ids = [task_id for task_id, _ in executor.runs]
    assert len(ids) == len(set(ids)) == daemon.tasks_done >= 4  # none run twice
    assert all(pull == 0.0 for _, pull in executor.runs), executor.runs  # never pulled


class StopsAfterTraining(PullWatcher):
    """Asks its daemon to stop as it hands back its first update: the stop finds it pushing."""

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        result = await super().execute(task, params, x, y)
        assert self.daemon is not None
        self.daemon.request_stop()
        return result


async def test_a_worker_stopped_while_pushing_waits_for_the_answer_and_counts_it(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        executor = StopsAfterTraining()
        daemon = executor.daemon = WorkerDaemon(cluster.worker_config("w0"), executor)
        running = asyncio.create_task(daemon.run())
        await wait_until(lambda: "w0" in cluster.coordinator.membership, 10, "w0 joined")
        job = await cluster.submit({**SHORT_JOB, "rounds": 4})
        await asyncio.wait_for(running, 30)  # it stops after its first task's push
        run = cluster.coordinator.job_queue.run_for(job)
        assert run is not None
        taken = run.work.of("w0").tasks  # the leader took the update the worker counted
    assert len(executor.runs) == 1 and daemon.tasks_done == 1 == taken
