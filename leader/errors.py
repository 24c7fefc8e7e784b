"""Typed errors of the leader's logic, each carrying the gRPC status code it maps to.

Servicers stay thin: they catch :class:`LeaderError` and abort with ``exc.code`` (the name of a
``grpc.StatusCode`` member) and ``str(exc)`` as the message. Every error is raised *before* any
state changes, so a refused call leaves the leader exactly as it was.
"""

from __future__ import annotations

from typing import ClassVar

# Shared with the CLI, which checks a job before sending it; it names INVALID_ARGUMENT itself.
from eddl.jobspec import JobSpecError

__all__ = [
    "DuplicateUpdateError",
    "InvalidArgumentError",
    "JobNotActiveError",
    "JobSpecError",
    "JoinRefusedError",
    "LeaderError",
    "NoCapableNodeError",
    "NodeExpiredError",
    "StaleTermError",
    "StaleVersionError",
    "StoreError",
    "UnknownJobError",
    "UnknownNodeError",
    "UnknownTaskError",
    "UpdateRejectedError",
]


class LeaderError(Exception):
    """Base of every error the leader's logic raises on purpose."""

    #: Name of the ``grpc.StatusCode`` member a servicer answers with.
    code: ClassVar[str] = "INTERNAL"


class InvalidArgumentError(LeaderError, ValueError):
    """The request itself is malformed (names, dtypes, shapes, NaN, bad values)."""

    code = "INVALID_ARGUMENT"


class UpdateRejectedError(InvalidArgumentError):
    """A pushed update does not match the global model or carries non-finite values."""


class JoinRefusedError(LeaderError):
    """A join token is missing, unknown or wrong."""

    code = "UNAUTHENTICATED"


class UnknownJobError(LeaderError, KeyError):
    """No job with this id exists on this leader."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown job"


class UnknownNodeError(LeaderError, KeyError):
    """The node never joined (or left cleanly): it must join before anything else."""

    code = "NOT_FOUND"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown node"


class UnknownTaskError(LeaderError, KeyError):
    """The task id was never handed out by this leader for this job."""

    code = "NOT_FOUND"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class NodeExpiredError(LeaderError):
    """The node missed its heartbeats and was declared gone; its work was re-queued.

    This is the explicit reply to work sent by a dead node, so it rejoins at once instead of
    waiting for a timeout.
    """

    code = "FAILED_PRECONDITION"


class StaleTermError(LeaderError):
    """The message carries a leader term other than the current one."""

    code = "FAILED_PRECONDITION"


class StaleVersionError(LeaderError):
    """The message refers to a model version the rule in force cannot use any more."""

    code = "FAILED_PRECONDITION"


class DuplicateUpdateError(LeaderError):
    """An update for this task was already received, or the task was taken back."""

    code = "FAILED_PRECONDITION"


class JobNotActiveError(LeaderError):
    """The job exists but is not running (queued, finished or cancelled)."""

    code = "FAILED_PRECONDITION"


class NoCapableNodeError(LeaderError):
    """Nodes are joined but none of them can run the submitted job (algorithm or memory).

    The job itself is valid, so this is not a :class:`JobSpecError`: the cluster, as it is,
    cannot run it. With no node joined at all a job is accepted (nodes may join later).
    """

    code = "FAILED_PRECONDITION"


class StoreError(LeaderError):
    """The checkpoint store is unreadable or inconsistent."""

    code = "INTERNAL"
