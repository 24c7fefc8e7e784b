"""The leader's aggregator: the global model, its version, and the rules of ``eddl.learn``.

Two modes, switchable at run time (the auto policy decides, :mod:`eddl.leader.policy`):

* **sync** - updates of the open round are collected with :meth:`Aggregator.add`, and
  :meth:`Aggregator.close_round` folds them with the job's sync rule (weighted FedAvg, or
  TIFeD's truncating integer mean) into version ``v + 1``. The coordinator closes a round when
  every task handed out for it is back, or at the round deadline with whatever arrived.
  **Late updates are folded in as stale, not re-queued**: an update based on an older version
  that arrives while a later round is open joins that round with its sample weight divided by
  ``sqrt(1 + s)`` (s = staleness, the same discount FedBuff uses), so slow work is kept but
  counts for less. An update more than ``max_staleness`` versions behind is refused
  (:class:`StaleVersionError`) and the coordinator re-queues its data instead.
* **async** - each update goes straight to the async rule (FedBuff: K buffered deltas weighted
  ``1/sqrt(1+s)``, summed up to the sync rule's ``sum_samples`` when it has one and the job
  sets no FedBuff rate of its own; FedAsync or EDDL's ``(global + incoming) / 2``) and a new
  version exists whenever the rule returns one. FedBuff's deltas need the base models of
  recent versions; the aggregator keeps the last ``max_staleness + 1`` versions for its
  ``base_lookup``.

Switching: sync -> async closes the open round with what it holds; async -> sync flushes the
rule's buffer. Either may produce a version, which the switch returns. :meth:`Aggregator.flush`
does the same without changing mode (the end of a job).

Every update is validated (names, shapes, dtypes, finiteness, sample count, version) before any
state changes; a refused update leaves the model, the round and the rule's buffer untouched.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from eddl.leader.errors import StaleVersionError, UpdateRejectedError
from eddl.learn.aggregation import (
    BASE_LOOKUP_RULES,
    AggregationError,
    AsyncRule,
    ClientUpdate,
    SyncRule,
    make_rule,
)
from eddl.learn.params import Params, ParamsError, check_like, clone

__all__ = ["Aggregator", "NewVersion"]

Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class NewVersion:
    """A model version the aggregator just produced."""

    version: int
    params: Params
    updates: int
    samples: int
    how: str


class Aggregator:
    """Owns the global parameters and version; synchronous and pure CPU work."""

    def __init__(
        self,
        params: Params,
        version: int = 0,
        *,
        sync_rule: str = "fedavg",
        async_rule: str = "fedbuff",
        async_params: Mapping[str, Any] | None = None,
        sync_params: Mapping[str, Any] | None = None,
        mode: Mode = "sync",
        max_staleness: int = 8,
        partial: bool = False,
    ) -> None:
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be sync or async, got {mode!r}")
        if version < 0 or max_staleness < 0:
            raise ValueError("version and max_staleness must be >= 0")
        self._params = clone(params)
        self._version = version
        self.max_staleness = max_staleness
        self.partial = partial
        self._history: OrderedDict[int, Params] = OrderedDict()
        extra: dict[str, object] = dict(async_params or {})
        if async_rule == "fedbuff":
            extra.setdefault("buffer_size", 3)
            budget = (sync_params or {}).get("sum_samples")
            if budget and not {"server_lr", "weight_by_samples", "sum_samples"} & set(extra):
                # The job's round budget (summed deltas) holds for its async buffer too.
                extra["sum_samples"] = budget
        if async_rule in BASE_LOOKUP_RULES:
            extra["base_lookup"] = self._base
        if partial:
            extra.setdefault("allow_partial", True)
        try:
            sync_extra: dict[str, object] = dict(sync_params or {})
            if partial:
                sync_extra["allow_partial"] = True
            sync = make_rule(sync_rule, **sync_extra)
            asyn = make_rule(async_rule, **extra)
        except AggregationError as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(sync, SyncRule):
            raise ValueError(f"{sync_rule!r} is not a synchronous rule")
        if not isinstance(asyn, AsyncRule):
            raise ValueError(f"{async_rule!r} is not an asynchronous rule")
        self.sync_rule: SyncRule = sync
        self.async_rule: AsyncRule = asyn
        self._keep_history = async_rule in BASE_LOOKUP_RULES
        self.mode: Mode = mode
        self._round: list[tuple[str, ClientUpdate]] = []
        # Samples in the async rule's buffer, so a version says how much data it holds.
        self._buffered_samples = 0
        self._remember()

    # -- reading ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @property
    def params(self) -> Params:
        """The current global parameters (read-only by convention; copy before changing)."""
        return self._params

    def kept(self, version: int) -> Params | None:
        """Parameters of a recent ``version`` if still kept (for FedBuff's deltas)."""
        return self._history.get(version)

    @property
    def updates_per_version(self) -> int:
        """How many updates the async rule folds into one version (FedBuff's K, else 1)."""
        size = getattr(self.async_rule, "buffer_size", 1)
        return size if isinstance(size, int) and size >= 1 else 1

    def round_size(self) -> int:
        """Updates collected for the open sync round."""
        return len(self._round)

    def pending(self) -> int:
        """Updates received but not yet in a version (round or async buffer)."""
        return len(self._round) + self.async_rule.pending()

    def describe(self) -> dict[str, Any]:
        rule = self.sync_rule if self.mode == "sync" else self.async_rule
        return {
            "mode": self.mode,
            "rule": rule.describe(),
            "version": self._version,
            "pending": self.pending(),
            "max_staleness": self.max_staleness,
            "late_updates": "folded into the open round, sample weight / sqrt(1 + staleness)",
        }

    # -- updates ---------------------------------------------------------------------------
    def check(self, params: Mapping[str, np.ndarray], num_samples: int, base_version: int) -> int:
        """Validate an update without changing anything; returns its staleness."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
            raise UpdateRejectedError(f"num_samples must be an integer, got {num_samples!r}")
        if num_samples <= 0:
            raise UpdateRejectedError(f"num_samples must be > 0, got {num_samples}")
        if base_version > self._version:
            raise StaleVersionError(
                f"update is based on version {base_version}, but the model is at version "
                f"{self._version}"
            )
        staleness = self._version - base_version
        if staleness > self.max_staleness:
            raise StaleVersionError(
                f"update is {staleness} versions old (based on {base_version}, model at "
                f"{self._version}); at most {self.max_staleness} are accepted"
            )
        try:
            check_like(self._params, params, subset=self.partial, what="update")
        except ParamsError as exc:
            raise UpdateRejectedError(str(exc)) from exc
        return staleness

    def add(
        self, task_id: str, params: Params, num_samples: int, base_version: int, *, folds: int = 1
    ) -> NewVersion | None:
        """Take one validated update; in async mode it may produce a new version at once.
        ``folds``: the updates it stands for (a sub-leader's group update), read by the async
        rule ``fedasync-folds`` only; a sync round weights every update by its samples."""
        staleness = self.check(params, num_samples, base_version)
        if self.mode == "sync":
            weight = (
                num_samples
                if staleness == 0
                else max(1, round(num_samples / math.sqrt(1 + staleness)))
            )
            update = self._update(params, weight, base_version)
            self._round.append((task_id, update))
            return None
        update = self._update(params, int(num_samples), base_version, folds)
        buffered = self.async_rule.pending()
        try:
            result = self.async_rule.submit(self._params, update, self._version)
        except AggregationError as exc:
            raise UpdateRejectedError(str(exc)) from exc
        if result is None:
            self._buffered_samples += int(num_samples)
            return None
        samples = self._buffered_samples + int(num_samples)
        self._buffered_samples = 0
        return self._commit(result, buffered + 1, samples, f"{self.async_rule.name} (async)")

    def close_round(self) -> NewVersion | None:
        """Aggregate the open sync round; ``None`` if it holds no update."""
        if not self._round:
            return None
        updates = [u for _, u in self._round]
        try:
            result = self.sync_rule.aggregate(self._params, updates, self._version)
        except AggregationError as exc:  # every update was checked on arrival
            raise UpdateRejectedError(str(exc)) from exc
        samples = sum(u.num_samples for u in updates)
        self._round = []
        return self._commit(result, len(updates), samples, f"{self.sync_rule.name} (sync)")

    def switch(self, mode: Mode) -> NewVersion | None:
        """Change mode; whatever the old mode held goes into a version first."""
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be sync or async, got {mode!r}")
        if mode == self.mode:
            return None
        produced = self.flush()
        self.mode = mode
        return produced

    def flush(self) -> NewVersion | None:
        """Put whatever the current mode holds (the open round, the async rule's buffer) into
        a version, staying in that mode; ``None`` if nothing was pending."""
        if self.mode == "sync":
            return self.close_round()
        buffered = self.async_rule.pending()
        try:
            flushed = self.async_rule.flush(self._params)
        except AggregationError as exc:
            raise UpdateRejectedError(str(exc)) from exc
        samples, self._buffered_samples = self._buffered_samples, 0
        if flushed is None:
            return None
        return self._commit(flushed, buffered, samples, f"{self.async_rule.name} flush")

    # -- internals -------------------------------------------------------------------------
    def _update(
        self, params: Params, num_samples: int, base_version: int, folds: int = 1
    ) -> ClientUpdate:
        try:
            return ClientUpdate(
                params=dict(params),
                num_samples=int(num_samples),
                base_version=int(base_version),
                folds=folds,
            )
        except AggregationError as exc:
            raise UpdateRejectedError(str(exc)) from exc

    def _commit(self, params: Params, updates: int, samples: int, how: str) -> NewVersion:
        self._params = params
        self._version += 1
        self._remember()
        return NewVersion(self._version, params, updates, samples, how)

    def recall(self, older: Mapping[int, Params]) -> None:
        """Versions before the current one, read back from the store by a resumed job: the
        bases of updates to tasks handed out before a restart or failover."""
        if not self._keep_history:
            return
        merged = {**older, **self._history}
        keep = sorted(v for v in merged if v <= self._version)[-(self.max_staleness + 1) :]
        self._history = OrderedDict((v, merged[v]) for v in keep)

    def _remember(self) -> None:
        if not self._keep_history:
            return
        self._history[self._version] = self._params
        while len(self._history) > self.max_staleness + 1:
            self._history.popitem(last=False)

    def _base(self, version: int) -> Params | None:
        return self._history.get(version)
