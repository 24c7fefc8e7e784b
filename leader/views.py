"""Typed results the leader's core hands to its servicers (and the servicers put on the wire).

The coordinator's status is a nested dict, because it is also the JSON ``detail`` that
``eddl status --json`` shows; what the wire needs from it is lifted into these dataclasses
here, once, instead of each servicer picking at ``dict[str, Any]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eddl.learn.params import Params

__all__ = ["JobView", "NodeView", "SwitchView", "TaskOut", "job_view", "node_view"]


@dataclass(frozen=True)
class SwitchView:
    at: float  # leader time
    version: int
    previous: str
    mode: str
    reason: str


@dataclass(frozen=True)
class JobView:
    job_id: str
    state: str
    version: int
    accuracy: float | None
    mode: str
    mode_reason: str
    rule: Any  # the aggregation rule in force: a name, or a mapping of its parameters
    workers: int
    samples_trained: int
    switches: tuple[SwitchView, ...]
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class NodeView:
    node_id: str
    role: str
    alive: bool
    why_gone: str  # the node's own word when it left, else how it went
    last_seen: float  # leader time
    samples_per_second: float
    task: str
    tasks_done: int
    samples_trained: int
    detail: Mapping[str, Any]  # the node's row and its reports (join info, load, network)


@dataclass(frozen=True)
class TaskOut:
    """A task as a worker receives it: the range and everything to train it."""

    task_id: str
    job_id: str
    node_id: str
    base_version: int
    indexes: np.ndarray
    layer: int | None
    dataset: str
    algorithm: str
    local_epochs: int
    model_json: str
    hyper_json: str
    seed: int
    target_seconds: float
    deadline_seconds: float
    # The model the task starts from, when still the current one (kept for its PullModel).
    base_params: Params | None = field(default=None, repr=False, compare=False)


def job_view(status: Mapping[str, Any]) -> JobView:
    accuracy = status.get("accuracy")
    aggregation = status.get("aggregation") or {}
    rule = aggregation.get("rule", "") if isinstance(aggregation, Mapping) else aggregation
    return JobView(
        job_id=str(status["job_id"]),
        state=str(status.get("status", "")),
        version=int(status.get("version", 0)),
        accuracy=None if accuracy is None else float(accuracy),
        mode=str(status.get("mode") or ""),
        mode_reason=str(status.get("mode_reason") or ""),
        rule=rule,
        workers=int(status.get("workers") or 0),
        samples_trained=int(status.get("samples_trained") or 0),
        switches=tuple(
            SwitchView(
                float(s["at"]),
                int(s["version"]),
                str(s["previous"]),
                str(s["mode"]),
                str(s["reason"]),
            )
            for s in status.get("switches") or []
        ),
        detail=status,
    )


def node_view(row: Mapping[str, Any], reports: Mapping[str, Any]) -> NodeView:
    sps = row.get("samples_per_second")
    return NodeView(
        node_id=str(row["node_id"]),
        role=str(row.get("role", "")),
        alive=bool(row.get("alive")),
        why_gone=str(row.get("leave_reason") or row.get("gone_reason") or ""),
        last_seen=float(row.get("last_seen") or 0.0),
        samples_per_second=float(sps) if sps else 0.0,
        task=str(row.get("task") or ""),
        tasks_done=int(row.get("tasks_done") or 0),
        samples_trained=int(row.get("samples_trained") or 0),
        detail={**reports, "node": dict(row)},
    )
