"""What a job does with work coming back: the replies, the sink of updates, the checks.

* :class:`Wait` and :class:`UpdateAck` - the answers of ``next_task`` and of an update.
* :class:`UpdateSink` - where a job's accepted updates go. On the root it is the
  :class:`~eddl.leader.aggregator.Aggregator` (the global model and its versions); a
  sub-leader's sink would fold its group's updates into one sample-weighted update and push it
  to its own leader. :class:`~eddl.leader.run.JobRun` only talks to this interface.
* :func:`check_update` - the refusals that depend on the task an update answers, made before
  the sink sees the update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from eddl.leader.aggregator import NewVersion
from eddl.leader.errors import UnknownTaskError, UpdateRejectedError
from eddl.leader.ledger import Task
from eddl.leader.membership import Node
from eddl.leader.policy import Mode
from eddl.learn.aggregation import MAX_FOLDS
from eddl.learn.params import Params

__all__ = ["UpdateAck", "UpdateSink", "Wait", "check_update"]


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


class UpdateSink(Protocol):
    """Takes a job's updates in sync rounds or asynchronously; makes model versions."""

    @property
    def version(self) -> int: ...

    @property
    def params(self) -> Params: ...

    @property
    def mode(self) -> Mode: ...

    @property
    def updates_per_version(self) -> int: ...

    def kept(self, version: int) -> Params | None: ...

    def round_size(self) -> int: ...

    def describe(self) -> dict[str, Any]: ...

    def check(self, params: Mapping[str, np.ndarray], num_samples: int, base_version: int) -> int:
        """Refuse (before any change) an update that does not fit; its staleness."""
        ...

    def add(
        self, task_id: str, params: Params, num_samples: int, base_version: int, *, folds: int = 1
    ) -> NewVersion | None: ...

    def close_round(self) -> NewVersion | None: ...

    def switch(self, mode: Mode) -> NewVersion | None: ...

    def flush(self) -> NewVersion | None: ...


def check_update(
    task: Task,
    node: Node,
    params: Params,
    *,
    base_version: int,
    num_samples: int | None,
    seconds: float | None,
    folds: int = 1,
) -> None:
    """Refuse an update that does not answer ``task`` as it was handed to ``node`` (``folds``,
    the updates a group update stands for: 1..``MAX_FOLDS``, at most one per sample)."""
    task_id = task.task_id
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
    if isinstance(folds, bool) or not isinstance(folds, int) or not 1 <= folds <= MAX_FOLDS:
        raise UpdateRejectedError(f"an update stands for 1..{MAX_FOLDS} updates, got {folds!r}")
    if folds > task.num_samples:
        raise UpdateRejectedError(
            f"task {task_id} holds {task.num_samples} samples; an update of it cannot fold "
            f"{folds} updates"
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
