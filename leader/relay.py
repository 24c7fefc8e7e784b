"""A sub-leader's update sink: its group's updates folded into one update for its leader.

Inside a group, rounds are synchronous: a round is the work of one upstream task (see
:mod:`eddl.leader.upstream`), every update of the round starts from that task's base version,
and once all the task's positions are done :meth:`RelaySink.answer` folds the round into one
sample-weighted update, ``x = Σ n_i x_i / Σ n_i`` (FedAvg), with the task's base version and
exactly the task's sample count, for the sub-leader to push upward. The sub-leader makes no
model versions of its own: new versions come from upstream (:meth:`RelaySink.adopt`), so
:meth:`close_round` and :meth:`flush` never produce one.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from eddl.leader.aggregator import NewVersion
from eddl.leader.errors import DuplicateUpdateError, StaleVersionError, UpdateRejectedError
from eddl.leader.policy import Mode
from eddl.leader.upstream import UpstreamTask
from eddl.learn.params import Params, ParamsError, check_like, clone

if TYPE_CHECKING:
    from eddl.leader.updates import UpdateSink

__all__ = ["RelaySink", "UpwardUpdate"]


@dataclass(frozen=True)
class UpwardUpdate:
    """One update for the sub-leader's own leader, answering upstream task ``task_id``."""

    task_id: str
    base_version: int
    num_samples: int
    params: Params
    updates: int  # group updates folded into it


class RelaySink:
    """The :class:`~eddl.leader.updates.UpdateSink` of a sub-leader (always ``sync``)."""

    def __init__(self, params: Params, version: int, *, keep: int = 4) -> None:
        if version < 0 or keep < 1:
            raise ValueError("version must be >= 0 and keep >= 1")
        self._models: OrderedDict[int, Params] = OrderedDict({version: clone(params)})
        self._keep = keep
        self._round: dict[str, int] = {}  # task id -> samples
        self._folds: dict[str, int] = {}  # task id -> the updates it stands for
        self._round_base: int | None = None
        self._sum: dict[str, np.ndarray] = {}
        self._outbox: deque[UpwardUpdate] = deque()

    # -- reading ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return next(reversed(self._models))

    @property
    def params(self) -> Params:
        return self._models[self.version]

    @property
    def mode(self) -> Mode:
        return "sync"

    @property
    def updates_per_version(self) -> int:
        return 1

    def kept(self, version: int) -> Params | None:
        return self._models.get(version)

    def round_size(self) -> int:
        return len(self._round)

    def round_samples(self) -> int:
        return sum(self._round.values())

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "sync",
            "rule": "fedavg, relayed upstream",
            "version": self.version,
            "pending": len(self._round),
            "upward_pending": len(self._outbox),
        }

    # -- versions from upstream ------------------------------------------------------------
    def adopt(self, version: int, params: Mapping[str, np.ndarray]) -> None:
        """A new global version pulled from upstream."""
        if version <= self.version:
            raise StaleVersionError(f"version {version} is not newer than {self.version}")
        try:
            check_like(self.params, params, what="global model")
        except ParamsError as exc:
            raise UpdateRejectedError(str(exc)) from exc
        self._models[version] = clone(params)
        while len(self._models) > self._keep:
            self._models.popitem(last=False)

    # -- updates of the group --------------------------------------------------------------
    def check(self, params: Mapping[str, np.ndarray], num_samples: int, base_version: int) -> int:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
            raise UpdateRejectedError(f"num_samples must be an integer, got {num_samples!r}")
        if num_samples <= 0:
            raise UpdateRejectedError(f"num_samples must be > 0, got {num_samples}")
        base = self._models.get(base_version)
        if base is None:
            raise StaleVersionError(f"version {base_version} is not kept by this sub-leader")
        if self._round_base is not None and base_version != self._round_base:
            raise UpdateRejectedError(
                f"the open round starts from version {self._round_base}, "
                f"the update from {base_version}"
            )
        try:
            check_like(base, params, what="update")
        except ParamsError as exc:
            raise UpdateRejectedError(str(exc)) from exc
        return self.version - base_version

    def add(
        self, task_id: str, params: Params, num_samples: int, base_version: int, *, folds: int = 1
    ) -> NewVersion | None:
        """A member's update into the open round (``folds``: the updates it stands for, 1
        for a device's own; the round's upward update stands for their sum)."""
        self.check(params, num_samples, base_version)
        if task_id in self._round:
            raise DuplicateUpdateError(f"task {task_id} is already in the open round")
        if isinstance(folds, bool) or not isinstance(folds, int) or not 1 <= folds <= num_samples:
            raise UpdateRejectedError(f"an update of {num_samples} samples folds 1..{num_samples}"
                                      f" updates, got {folds!r}")  # fmt: skip
        for name, value in params.items():
            term = value.astype(np.float64) * float(num_samples)
            self._sum[name] = self._sum[name] + term if name in self._sum else term
        self._round[task_id] = int(num_samples)
        self._folds[task_id] = folds
        self._round_base = base_version
        return None

    def answer(self, task: UpstreamTask) -> UpwardUpdate:
        """Fold the round into one update answering ``task``; the round must hold exactly its
        samples, from its base version. A refusal changes nothing."""
        samples = self.round_samples()
        if samples != task.num_samples:
            raise UpdateRejectedError(
                f"upstream task {task.task_id} holds {task.num_samples} samples, "
                f"the round {samples}"
            )
        if self._round_base != task.base_version:
            raise UpdateRejectedError(
                f"upstream task {task.task_id} starts from version {task.base_version}, "
                f"the round from {self._round_base}"
            )
        like = self.params  # the base version may have left the kept ones: same names, dtypes
        params = {k: (self._sum[k] / samples).astype(like[k].dtype) for k in like}
        folded = sum(self._folds.values())
        update = UpwardUpdate(task.task_id, task.base_version, samples, params, folded)
        self._round, self._folds, self._sum, self._round_base = {}, {}, {}, None
        self._outbox.append(update)
        return update

    def upward(self) -> list[UpwardUpdate]:
        """The folded updates not pushed yet, oldest first (they leave the outbox)."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def close_round(self) -> NewVersion | None:
        """A group's round ends with :meth:`answer`; versions come from upstream."""
        return None

    def switch(self, mode: Mode) -> NewVersion | None:
        if mode != "sync":
            raise ValueError("a sub-leader's group runs synchronous rounds only")
        return None

    def flush(self) -> NewVersion | None:
        return None


if TYPE_CHECKING:

    def _is_a_sink(sink: RelaySink) -> UpdateSink:
        return sink  # mypy checks that RelaySink meets the UpdateSink protocol
