"""What a job did, kept for its status while it runs and after it ends.

* :class:`ModeSwitch` - one change between sync and async aggregation (the auto policy's
  decision, with its reason and the model version it happened at). The end of a job is no
  switch: the last updates are flushed in the mode that ran.
* :class:`WorkTally` - tasks and samples per node whose updates the job took in. A task whose
  update was refused, or that was taken back, trained nothing the model kept and is not
  counted, so the per-node samples add up to the scheduler's samples done.

Both go into every checkpoint (a resumed job keeps them) and into the job's stored result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["ModeSwitch", "NodeWork", "WorkTally"]

_MODES = ("sync", "async")


@dataclass(frozen=True)
class ModeSwitch:
    """The job moved from ``previous`` to ``mode`` at leader time ``at``, when the model was
    at ``version``."""

    at: float
    version: int
    previous: Literal["sync", "async"]
    mode: Literal["sync", "async"]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModeSwitch:
        previous, mode = raw.get("previous"), raw.get("mode")
        if previous not in _MODES or mode not in _MODES or previous == mode:
            raise ValueError(f"a mode switch needs two different modes, got {dict(raw)!r}")
        return cls(
            float(raw["at"]), int(raw["version"]), previous, mode, str(raw.get("reason", ""))
        )


@dataclass(frozen=True)
class NodeWork:
    """Tasks and samples of one node that went into the model."""

    tasks: int = 0
    samples: int = 0


class WorkTally:
    """Per-node counts of the tasks and samples a job took in."""

    def __init__(self) -> None:
        self._by_node: dict[str, NodeWork] = {}

    def record(self, node_id: str, samples: int) -> None:
        """``node_id`` finished a task of ``samples`` samples and its update was taken in."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"a task holds at least one sample, got {samples!r}")
        old = self._by_node.get(node_id, NodeWork())
        self._by_node[node_id] = NodeWork(old.tasks + 1, old.samples + samples)

    def of(self, node_id: str) -> NodeWork:
        return self._by_node.get(node_id, NodeWork())

    def by_node(self) -> dict[str, NodeWork]:
        return dict(sorted(self._by_node.items()))

    @property
    def tasks(self) -> int:
        return sum(w.tasks for w in self._by_node.values())

    @property
    def samples(self) -> int:
        return sum(w.samples for w in self._by_node.values())

    def to_dict(self) -> dict[str, dict[str, int]]:
        """JSON-safe: ``{node_id: {"tasks": n, "samples": n}}`` (checkpoints and status)."""
        return {node: asdict(work) for node, work in self.by_node().items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WorkTally:
        tally = cls()
        for node, work in raw.items():
            tasks, samples = int(work["tasks"]), int(work["samples"])
            if tasks < 0 or samples < tasks:
                raise ValueError(f"node {node!r}: {tasks} task(s) with {samples} sample(s)")
            tally._by_node[str(node)] = NodeWork(tasks, samples)
        return tally
