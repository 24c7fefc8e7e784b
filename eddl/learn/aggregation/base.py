"""The aggregation contract: client updates, the error type, and the rule interfaces.

A rule never mutates the global parameters it is given and never keeps a reference to a
client's arrays: it returns new arrays. Every call validates all of its input before it changes
anything, so a refused call leaves both the caller's model and the rule's buffer as they were.
Rules are plain objects, not thread-safe: the leader calls them from one event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from eddl.learn.params import Params, ParamsError

if TYPE_CHECKING:  # state.py builds on this module's error type
    from eddl.learn.aggregation.state import RuleState

__all__ = [
    "MAX_FOLDS",
    "AggregationError",
    "AggregationRule",
    "AsyncRule",
    "ClientUpdate",
    "SyncRule",
]


#: The most updates one update may stand for (a sub-leader's group of that many devices).
MAX_FOLDS = 256


class AggregationError(ParamsError):
    """An update, a rule parameter or a version was refused; nothing was changed."""


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True samples or version False is always a caller's bug.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


# eq=False: comparing dicts of arrays has no single truth value; updates compare by identity.
@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """What a client sends back after local training.

    ``params`` holds the full parameters after training, or (single-layer TIFeD, with a rule
    built with ``allow_partial=True``) a non-empty subset of the names. ``base_version`` is the
    global model version the client started from; the staleness of the update is
    ``version - base_version`` where ``version`` is the version of the global model it meets.
    ``folds`` is the number of updates it stands for: 1 for a device's own, a sub-leader's
    group update the updates of its members it folded (1..``MAX_FOLDS``, at most one per
    sample); only a rule that weights by it (``fedasync-folds``) reads it.
    """

    params: Params
    num_samples: int
    base_version: int
    folds: int = 1

    def __post_init__(self) -> None:
        check_update_fields(self)


def check_update_fields(update: object) -> ClientUpdate:
    """Raise :class:`AggregationError` unless ``update`` is a well-formed :class:`ClientUpdate`.

    Called at construction and again by every rule, so an object altered after construction
    (frozen dataclasses can still be forced) is refused as well.
    """
    if not isinstance(update, ClientUpdate):
        raise AggregationError(f"expected a ClientUpdate, got {type(update).__name__}")
    if not isinstance(update.params, Mapping):
        raise AggregationError(
            "update params must be a mapping of names to arrays, "
            f"got {type(update.params).__name__}"
        )
    if not _is_int(update.num_samples):
        raise AggregationError(
            f"num_samples must be an int, got {type(update.num_samples).__name__}"
        )
    if update.num_samples <= 0:
        raise AggregationError(f"num_samples must be > 0, got {update.num_samples}")
    if not _is_int(update.base_version):
        raise AggregationError(
            f"base_version must be an int, got {type(update.base_version).__name__}"
        )
    if update.base_version < 0:
        raise AggregationError(f"base_version must be >= 0, got {update.base_version}")
    if not _is_int(update.folds):
        raise AggregationError(f"folds must be an int, got {type(update.folds).__name__}")
    if not 1 <= update.folds <= min(MAX_FOLDS, update.num_samples):
        raise AggregationError(
            f"folds must be 1..{MAX_FOLDS} and at most num_samples ({update.num_samples}), "
            f"got {update.folds}"
        )
    return update


class AggregationRule(ABC):
    """One way of folding client updates into the global model."""

    name: ClassVar[str]
    mode: ClassVar[Literal["sync", "async"]]

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """``{"name": ..., <parameter>: <value>, ...}`` for logs and ``eddl status``.

        Apart from ``name``, the keys are exactly the keyword arguments ``make_rule`` accepts
        for this rule, so ``make_rule(**rule.describe())`` rebuilds an equivalent rule (FedBuff
        also needs its ``base_lookup``, which is not a loggable value).
        """

    def state(self) -> RuleState:
        """What the rule carries from one version to the next (a server optimizer's moments),
        for the leader's checkpoint; empty for rules that keep nothing."""
        from eddl.learn.aggregation.state import RuleState

        return RuleState()

    def load_state(self, state: RuleState) -> None:
        """Continue from :meth:`state`'s output. A state the rule cannot use is refused with
        :class:`AggregationError` and changes nothing."""
        from eddl.learn.aggregation.state import RuleState

        if not isinstance(state, RuleState) or not state.empty:
            raise AggregationError(f"{self.name} keeps no state between versions")


class SyncRule(AggregationRule):
    """Synchronous: one round of updates at a time."""

    mode = "sync"

    @abstractmethod
    def aggregate(
        self, global_params: Params, updates: Sequence[ClientUpdate], version: int
    ) -> Params:
        """Return the new global parameters from one round of ``updates``.

        ``version`` is the version of ``global_params``; updates based on an older version are
        folded in like the others (the leader decides whether it accepts late updates), updates
        based on a newer one are refused.
        """


class AsyncRule(AggregationRule):
    """Asynchronous: one update at a time, possibly buffered."""

    mode = "async"

    @abstractmethod
    def submit(self, global_params: Params, update: ClientUpdate, version: int) -> Params | None:
        """Take one update; return new global parameters, or ``None`` when it only buffered.

        ``version`` is the version of ``global_params``; staleness is
        ``version - update.base_version`` and must be >= 0.
        """

    @abstractmethod
    def pending(self) -> int:
        """Number of updates buffered and not yet applied."""

    @abstractmethod
    def flush(self, global_params: Params) -> Params | None:
        """Apply whatever is buffered now (a policy switch, the end of a job).

        Returns the new global parameters, or ``None`` when nothing was buffered.
        """
