"""A TinyMetaFed job driven through the coordinator: sampled devices per round, sparse
uploads turned into models, the few-shot score, and a killed leader that resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eddl.jobspec import JobSpec
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import UpdateRejectedError
from eddl.leader.membership import Membership, NodeProfile, Role
from eddl.leader.runtime import build_runtime
from eddl.leader.scheduler import Task
from eddl.leader.store import SqliteStore
from eddl.net.sparse import SparseRecord
from tests.unit.test_leader_support import Clock

JOB = {
    "job_id": "meta1",
    "dataset": "digits",
    "algorithm": "tinymetafed",
    "aggregation": "sync",
    "rounds": 6,
    "task_seconds": 0.5,
    "model": {"devices": 4, "held_out": 2, "samples": 4},
    "hyper": {"devices_per_round": 2, "local_layers": 1, "shots": 2},
}


def _coordinator(clock: Clock, tmp: Path) -> Coordinator:
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    return Coordinator(
        SqliteStore(tmp), membership=membership, runtime_factory=build_runtime, now=clock
    )


def _round(c: Coordinator, clock: Clock, nodes: list[str]) -> dict[str, Task]:
    """Every node asks; the sampled ones push a small sparse delta on b0."""
    handed = {}
    for n in nodes:
        out = c.next_task(n)
        if isinstance(out, Task):
            handed[n] = out
    for n, t in handed.items():
        delta = {
            "b0": SparseRecord("b0", (40,), np.array([int(t.indexes[0])]), np.ones(1, np.float32))
        }
        c.submit_update(
            n,
            t.task_id,
            {},
            job_id="meta1",
            base_version=t.base_version,
            wire_bytes=100,
            sparse=delta,
        )
    clock.advance(1.0)
    c.tick()
    return handed


def test_a_meta_job_samples_devices_takes_sparse_updates_and_resumes(tmp_path: Path) -> None:
    clock = Clock()
    c = _coordinator(clock, tmp_path)
    nodes = [f"w{i}" for i in range(3)]
    for n in nodes:
        c.join(n, "tok", profile=NodeProfile(benchmark_sps=50))
    c.submit_job(JobSpec.from_mapping(JOB))
    theta0 = c.model("meta1").params
    assert set(theta0) == {"W0", "b0", "W1", "b1"}
    first = _round(c, clock, nodes)
    assert len(first) == 2
    st = c.job_status("meta1")
    assert st["version"] == 1 and st["accuracy"] is not None
    b0 = c.model("meta1").params["b0"] - theta0["b0"]
    assert sorted(np.flatnonzero(b0).tolist()) == sorted(int(t.indexes[0]) for t in first.values())
    np.testing.assert_allclose(b0[np.flatnonzero(b0)], 0.5)  # ε = 1, mean over 2 devices
    _round(c, clock, nodes)
    devices = dict(c.job_status("meta1")["meta"]["device_of"])
    del c

    c2 = _coordinator(clock, tmp_path)
    assert c2.resume() == ["meta1"]
    for n in nodes:
        c2.join(n, "tok", profile=NodeProfile(benchmark_sps=50))
    handed = _round(c2, clock, nodes)
    # Each node keeps the device task it held before the restart.
    assert handed and all(
        int(t.indexes[0]) == devices.get(n, int(t.indexes[0])) for n, t in handed.items()
    )
    while c2.job_status("meta1")["status"] == "running":
        assert _round(c2, clock, nodes), "every round hands out work"
    st = c2.job_status("meta1")
    assert st["status"] == "completed" and st["version"] == 6


def test_dense_tensors_to_a_tinymetafed_job_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    c = _coordinator(clock, tmp_path)
    c.join("w0", "tok", profile=NodeProfile(benchmark_sps=50))
    c.submit_job(JobSpec.from_mapping({**JOB, "hyper": {**JOB["hyper"], "devices_per_round": 1}}))
    t = c.next_task("w0")
    assert isinstance(t, Task)
    theta = c.model("meta1").params
    with pytest.raises(UpdateRejectedError, match="sparse records"):
        c.submit_update("w0", t.task_id, dict(theta), job_id="meta1", base_version=0)
    assert c.job_status("meta1")["version"] == 0 and c.job_status("meta1")["tasks_in_flight"] == 1
