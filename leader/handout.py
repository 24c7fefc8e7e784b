"""What the core keeps to hand work out and to describe nodes, beside the coordinator.

* :class:`JobWire` - what every task of a job carries, computed once per job from the stored
  spec (the model the job really runs), and the task-seed rule;
* :class:`ModelCache` - the model versions tasks start from, kept until their workers pulled
  them, bounded in bytes;
* :class:`NodeReports` - what nodes said about themselves (join info, load, network) and the
  rule that merges a heartbeat's profile into what the node said when it joined.

All three live on the owner thread of :class:`~eddl.leader.actor.LeaderCore`.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eddl.leader.jobs import JobSpec
from eddl.leader.membership import NodeProfile
from eddl.learn.params import Params
from eddl.net import params_nbytes

__all__ = ["MODEL_CACHE_BYTES", "JobWire", "ModelCache", "NodeReports", "task_seed"]

# Recent model versions kept for PullModel, bounded in bytes (at least two always stay).
MODEL_CACHE_BYTES = 256 * 1024 * 1024


def task_seed(job_seed: int, task_id: str) -> int:
    """The seed a task trains with: the job's seed mixed with the task id, so two tasks never
    share one and a retried task gets the same."""
    return (job_seed * 1_000_003 + zlib.crc32(task_id.encode())) % 2**63


@dataclass(frozen=True)
class JobWire:
    """What every task of a job carries."""

    spec: JobSpec
    model_json: str
    hyper_json: str

    @classmethod
    def of(cls, stored_spec: Mapping[str, Any]) -> JobWire:
        # The stored spec holds the model the job really runs (defaults resolved from the
        # dataset at submission), so workers build exactly the leader's model.
        spec = JobSpec.from_mapping(stored_spec)
        return cls(
            spec,
            json.dumps(dict(spec.model), sort_keys=True),
            json.dumps(dict(spec.hyper), sort_keys=True),
        )


class ModelCache:
    """Keep the model a task starts from until its worker has pulled it.

    In async mode the global model may move on between handing out a task and the worker's
    PullModel, and the store keeps only a few checkpoints; the aggregator replaces (never
    mutates) its parameter dicts, so holding a reference is enough.
    """

    def __init__(self, max_bytes: int = MODEL_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, int], Params] = OrderedDict()
        self._bytes = 0

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._models

    def touch(self, key: tuple[str, int]) -> bool:
        """Mark ``key`` recently used; False when it is not kept."""
        if key not in self._models:
            return False
        self._models.move_to_end(key)
        return True

    def keep(self, job_id: str, version: int, params: Params) -> None:
        key = (job_id, version)
        if self.touch(key):
            return
        self._models[key] = params
        self._bytes += params_nbytes(params)
        while len(self._models) > 2 and self._bytes > self._max_bytes:
            _, old = self._models.popitem(last=False)
            self._bytes -= params_nbytes(old)

    def get(self, job_id: str, version: int) -> Params | None:
        return self._models.get((job_id, version))


class NodeReports:
    """Per node: its profile as merged from join and heartbeats, and its raw reports."""

    def __init__(self) -> None:
        self._profiles: dict[str, NodeProfile] = {}
        self._reports: dict[str, dict[str, Any]] = {}

    def joined(self, node_id: str, profile: NodeProfile, reports: Mapping[str, Any]) -> None:
        self._profiles[node_id] = profile
        self._reports[node_id] = dict(reports)

    def merged(
        self, node_id: str, dynamic: Mapping[str, Any] | None, bandwidth_bps: float | None
    ) -> NodeProfile:
        """A heartbeat's profile: the benchmark and static profile from the join stay, the
        dynamic part is the beat's, a link estimate replaces the last one."""
        known = self._profiles.get(node_id, NodeProfile())
        return NodeProfile(
            benchmark_sps=known.benchmark_sps,
            static=known.static,
            dynamic=None if dynamic is None else dict(dynamic),
            bandwidth_bps=bandwidth_bps or known.bandwidth_bps,
        )

    def beat(
        self,
        node_id: str,
        profile: NodeProfile,
        load: Mapping[str, Any],
        network: Mapping[str, Any] | None,
    ) -> None:
        self._profiles[node_id] = profile
        entry = self._reports.setdefault(node_id, {})
        entry["load"] = dict(load)
        if network is not None:
            entry["network"] = dict(network)

    def left(self, node_id: str) -> None:
        self._profiles.pop(node_id, None)

    def forget(self, node_id: str) -> None:
        self._profiles.pop(node_id, None)
        self._reports.pop(node_id, None)

    def retain(self, node_ids: set[str]) -> None:
        """Forget every node not in ``node_ids`` (the membership forgot it)."""
        for node_id in [n for n in self._reports if n not in node_ids]:
            self.forget(node_id)

    def of(self, node_id: str) -> Mapping[str, Any]:
        return self._reports.get(node_id, {})

    def nodes(self) -> list[str]:
        """Nodes that reported anything, in the order they first did."""
        return list(self._reports)
