"""What `eddl status` reads after a job, over real gRPC: the mode that ran, who trained what."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.cli.admin_client import job_status, list_nodes
from eddl.cli.statusview import status_dict
from tests.integration.cluster_support import DIGITS_JOB, running_cluster


@pytest.mark.slow
@pytest.mark.parametrize("aggregation", ["sync", "async"])
async def test_a_completed_job_reports_its_mode_and_every_nodes_work(
    tmp_path: Path, aggregation: str
) -> None:
    job = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
    job.update(aggregation=aggregation, rounds=100_000, max_epochs=1.0)
    async with running_cluster(tmp_path) as cluster:
        for i in range(3):
            await cluster.add_worker(f"w{i}")
        job_id = await cluster.submit(job)
        status = await cluster.wait_job(job_id, 90)
        run = cluster.coordinator.job_queue.run_for(job_id)
        assert run is not None
        train_size = run.runtime.num_train
        assert status["status"] == "completed" and "max_epochs" in status["result"]["reason"]
        # What each worker counted itself, once it stopped (its last push is acknowledged).
        daemons = {n: d for n, (d, _) in cluster.workers.items()}
        for name in list(daemons):
            await cluster.stop_worker(name)
        info = status_dict(
            await job_status(cluster.address, job_id), await list_nodes(cluster.address)
        )
    # An async job ends in async: its last updates are flushed, not switched to sync.
    assert info["state"] == "completed" and info["policy"] == aggregation
    assert "fixed by the job" in info["policy_reason"] and info["switches"] == []
    nodes = {n["node_id"]: n for n in info["nodes"]}
    assert set(nodes) == {"w0", "w1", "w2"}
    for name, node in nodes.items():
        assert node["tasks_done"] == daemons[name].tasks_done > 0
        assert node["samples_trained"] == daemons[name].samples_done > 0
    total = sum(n["samples_trained"] for n in nodes.values())
    assert info["samples_trained"] == total == info["detail"]["samples_trained"]
    assert total == train_size  # one epoch: every sample once
