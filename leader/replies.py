"""The coordinator's typed replies to the commands of nodes."""

from __future__ import annotations

from dataclasses import dataclass

from eddl.learn.params import Params

__all__ = ["HeartbeatReply", "JoinReply", "ModelSnapshot"]


@dataclass(frozen=True)
class JoinReply:
    node_id: str
    session: int
    term: int
    heartbeat_interval: float
    heartbeat_jitter: float
    job_id: str | None


@dataclass(frozen=True)
class HeartbeatReply:
    term: int
    heartbeat_interval: float
    job_id: str | None
    model_version: int | None
    cancel_task: bool  # the node's task is void (taken back, or its job is over)


@dataclass(frozen=True)
class ModelSnapshot:
    job_id: str
    version: int
    params: Params
