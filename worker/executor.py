"""What a node runs tasks with: the :class:`Executor` interface and its typed task and result.

A :class:`~eddl.worker.daemon.WorkerDaemon` does the talking (join, heartbeats, model pulls,
update pushes) and hands each task to its executor: the numpy trainer on this host
(:class:`~eddl.worker.training.NumpyExecutor`) or a microcontroller behind a gateway
(:class:`~eddl.worker.mcu_executor.McuExecutor`). Executors see :class:`TaskSpec`, never the
protobuf ``Task``: the daemon converts at the wire edge, so an executor can be tested, or
reused by a node of another kind, without gRPC.

A task fails by raising: :class:`TaskError` for a task the executor refuses (unknown algorithm,
a model the device cannot hold), anything else for a task that broke on the way. The daemon
reports either to the leader as a failed task and stays up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eddl.learn.params import Params
from eddl.learn.topp import SparseDelta
from eddl.proto.v1 import common_pb2

__all__ = ["Executor", "TaskError", "TaskResult", "TaskSpec"]


class TaskError(ValueError):
    """A task cannot be run: unknown algorithm, bad model spec or hyper-parameters."""


@dataclass(frozen=True)
class TaskSpec:
    """One task as the leader handed it out: train a copy of model ``version`` of job
    ``job_id`` on the samples ``indexes`` of ``dataset``, in that order."""

    job_id: str
    task_id: str
    version: int  # the model version the task starts from
    dataset: str
    indexes: tuple[int, ...]
    algorithm: str
    model_json: str  # model spec (JSON object) for eddl.learn.get_algorithm
    hyper_json: str  # hyper-parameters (JSON object)
    epochs: int = 1
    layer: int = -1  # TIFeD single-layer: the layer to train; -1: all layers
    seed: int = 0  # the seed of the sample order within each epoch

    @property
    def num_samples(self) -> int:
        return len(self.indexes)


@dataclass(frozen=True)
class TaskResult:
    params: Params  # what to upload: all layers, or the task's layer only
    samples: int
    steps: int
    train_seconds: float  # the training itself
    busy_seconds: float  # training plus the throttle's idle time
    state_bytes: int
    link_seconds: float = 0.0  # of busy_seconds, moving data over a device link (gateways)
    # Of busy_seconds, the task's fixed cost on the device (SETUP, model in, update out):
    # reported apart so the leader sizes tasks as overhead + samples / speed.
    overhead_seconds: float = 0.0
    kernel_ticks: int = 0  # device timer ticks inside the training kernel (gateways)
    # TinyMetaFed: the top-P entries of φ − θ to upload as sparse records (``params`` empty),
    # their values encoded as ``value_dtype`` (float32 or int8).
    sparse: Mapping[str, SparseDelta] | None = None
    value_dtype: str = "float32"
    # Records already encoded where the update was made (a device's int8 values and scales):
    # uploaded as they are, ``sparse`` being their decoded values.
    records: Sequence[common_pb2.SparseTensor] | None = None


class Executor(ABC):
    """Runs one node's tasks, one at a time; the daemon calls :meth:`check` before it fetches
    anything for a task and :meth:`execute` once the model and the samples are here."""

    def wants_samples(self, task: TaskSpec) -> bool:
        """Whether the daemon fetches the task's samples by index before :meth:`execute`
        (a meta-learning device task holds its own data: no)."""
        return True

    def check(self, task: TaskSpec) -> None:  # noqa: B027 - a no-op is the right default
        """Raise :class:`TaskError` for a task this executor cannot run, so it is reported
        failed before any model or sample crosses the network."""

    @abstractmethod
    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        """Train ``task`` on ``(x, y)`` (uint8 rows and labels, in the task's index order) from
        the global model ``params``, which the executor must not modify."""
