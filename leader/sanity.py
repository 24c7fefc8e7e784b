"""Update sanity: refuse an update that is not finite or too far from the model it started from,
count refusals per node, and quarantine a node that keeps sending them.

The bound is relative to the model the task started from (its base version):

    ratio = ||update - base|| / ||base||

over the tensors the update holds (all of them, or one layer's in TIFeD single-layer mode), in
the model's float dtype (integer models in float64). Real updates of the jobs ``eddl local``
runs stay below 1 (``bench/update_ratio.py`` measures them; docs/reliability.md has the
figures), so the default bound,
``max_update_ratio = 100``, leaves a wide margin. A base of all zeros (TIFeD's integer model
starts so) gives no reference: against it only finiteness is checked. ``quarantine_after``
refusals in a row (default 3) quarantine the node for the rest of the job: no more tasks, a
``node_quarantined`` event with the reason, listed in the job's status (``eddl status``).

This *limits* what a malicious worker that holds valid credentials can do; it does not prevent
it: an update just under the bound, sent every task, still pulls the model its way. Robust
aggregation (``sync_params.robust = "median" | "trimmed-mean"``) bounds the pull of a minority
of such workers in a sync round (``eddl.learn.aggregation.robust``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eddl.leader.errors import UpdateRejectedError
from eddl.leader.events import EventKind
from eddl.leader.ledger import Task
from eddl.leader.membership import Node
from eddl.learn.params import Params

if TYPE_CHECKING:
    from eddl.leader.run import JobRun

__all__ = ["UpdateSanity", "screen_update", "update_ratio"]


def update_ratio(update: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> float:
    """``||update - base|| / ||base||`` over the tensors of ``update``: inf when a value of
    ``update`` is not finite, NaN when ``base`` is all zeros (no reference to be relative to).

    Float tensors are compared in their own dtype (one subtraction and two dot products per
    tensor: no float64 copies of the model on the owner's path); a result that is not finite
    there (a NaN, or float32 overflowing on huge values) is computed again in float64.
    Integer tensors (TIFeD) are compared in float64 from the start."""
    diff = 0.0
    norm = 0.0
    for name, value in update.items():
        u = np.asarray(value).ravel()
        b = np.asarray(base[name]).ravel() if name in base else None
        if b is not None and np.shape(base[name]) != np.shape(value):
            b = None  # the aggregator refuses the shape; no ratio to speak of
        if u.dtype.kind != "f" or (b is not None and b.dtype != u.dtype):
            u = u.astype(np.float64)
            b = None if b is None else b.astype(np.float64)
        d = u if b is None else u - b
        part = float(np.dot(d, d))
        if not math.isfinite(part):
            part = _exact_square_distance(u, b)
            if not math.isfinite(part):
                return math.inf
        diff += part
        if b is not None:
            squared = float(np.dot(b, b))
            norm += squared if math.isfinite(squared) else _exact_square_distance(b, None)
    return math.sqrt(diff) / math.sqrt(norm) if norm > 0 else math.nan


def _exact_square_distance(u: np.ndarray, b: np.ndarray | None) -> float:
    """``||u - b||^2`` (``||u||^2`` without ``b``) in float64: inf when ``u`` holds a value
    that is not finite."""
    u64 = u.astype(np.float64)
    if not np.isfinite(u64).all():
        return math.inf
    d = u64 if b is None else u64 - b.astype(np.float64)
    return float(np.dot(d, d))


@dataclass
class UpdateSanity:
    """Per-job refusal counts and quarantine; plain state, owned by its :class:`JobRun`."""

    max_update_ratio: float = 100.0
    quarantine_after: int = 3
    refused: dict[str, int] = field(default_factory=dict)  # node -> refusals in all
    in_a_row: dict[str, int] = field(default_factory=dict)  # node -> refusals since an accept
    quarantined: dict[str, str] = field(default_factory=dict)  # node -> why

    def problem(self, update: Params, base: Params) -> str | None:
        """Why ``update`` is refused (None: it passes)."""
        ratio = update_ratio(update, base)
        if math.isinf(ratio):
            return "the update holds NaN or infinite values"
        if ratio > self.max_update_ratio:  # False for NaN: no reference, no bound
            return (
                f"the update is {ratio:.3g} times the model's norm away from it; at most "
                f"{self.max_update_ratio:g} (max_update_ratio)"
            )
        return None

    def refuse(self, node_id: str) -> bool:
        """Count a refusal of ``node_id``; True when it now reaches the quarantine."""
        self.refused[node_id] = self.refused.get(node_id, 0) + 1
        self.in_a_row[node_id] = self.in_a_row.get(node_id, 0) + 1
        return node_id not in self.quarantined and self.in_a_row[node_id] >= self.quarantine_after

    def accept(self, node_id: str) -> None:
        self.in_a_row.pop(node_id, None)

    def describe(self) -> dict[str, Any]:
        return {
            "max_update_ratio": self.max_update_ratio,
            "quarantine_after": self.quarantine_after,
            "refused": dict(sorted(self.refused.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
        }

    @classmethod
    def for_job(
        cls, max_update_ratio: float, quarantine_after: int, meta: Mapping[str, Any]
    ) -> UpdateSanity:
        """A job's sanity state, with the counts and quarantine of its checkpoint ``meta``
        (``describe``'s form under ``"sanity"``) when it resumes."""
        sanity = cls(max_update_ratio, quarantine_after)
        stored = meta.get("sanity")
        if isinstance(stored, Mapping):
            for name, target in (("refused", sanity.refused), ("quarantined", sanity.quarantined)):
                value = stored.get(name)
                if isinstance(value, Mapping):
                    target.update({str(k): v for k, v in value.items()})
        return sanity


def screen_update(run: JobRun, node: Node, task: Task, params: Params) -> None:
    """Refuse ``params`` (the answer of ``task`` by ``node``) when it fails the sanity bound:
    the task goes back to the queue (no sample is lost), the refusal is counted, and the node
    is quarantined after ``quarantine_after`` refusals in a row. Raises UpdateRejectedError."""
    sanity = run.sanity
    kept = run.model_at(task.base_version)
    base = kept[1] if kept is not None else run.aggregator.params
    if any(name not in base or np.shape(v) != base[name].shape for name, v in params.items()):
        return  # not this model's tensors: the aggregator refuses it for that
    why = sanity.problem(params, base)
    if why is None:
        return
    node_id = node.node_id
    quarantine = sanity.refuse(node_id)
    run._event(
        EventKind.UPDATE_REFUSED,
        f"task {task.task_id} of {node_id}: {why}",
        task_id=task.task_id,
        node_id=node_id,
        reason="sanity",
        refused=sanity.refused[node_id],
    )
    run._take_back(task, "update refused", f"task {task.task_id} re-queued (update refused)")
    if quarantine:
        sanity.quarantined[node_id] = (
            f"{sanity.in_a_row[node_id]} updates refused in a row; last: {why}"
        )
        run._fit.pop(node_id, None)
        run.set_workers(sorted(set(run._workers) - {node_id}))
        run._event(
            EventKind.NODE_QUARANTINED,
            f"node {node_id} quarantined: {sanity.quarantined[node_id]}",
            node_id=node_id,
            reason=sanity.quarantined[node_id],
        )
    raise UpdateRejectedError(f"task {task.task_id}: {why}")
