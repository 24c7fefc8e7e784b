"""A leader and workers in one process over real gRPC: a job trains to its target."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from eddl.worker.daemon import JoinRefusedError, WorkerDaemon
from eddl.worker.link import Backoff
from tests.integration.cluster_support import DIGITS_JOB, running_cluster, wait_until


@pytest.mark.slow
async def test_three_workers_train_digits_to_target_accuracy_sync(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        # No standby: a round's next tasks leave before its version is written.
        assert cluster.leader.core is not None and cluster.leader.core.replies_before_commit
        for i in range(3):
            await cluster.add_worker(f"w{i}")
        job_id = await cluster.submit(DIGITS_JOB)
        status = await cluster.wait_job(job_id, 90)
        assert status["status"] == "completed", status
        assert status["accuracy"] >= 0.9
        assert status["version"] >= 1
        done = [d.tasks_done for d, _ in cluster.workers.values()]
        assert all(n > 0 for n in done), done


async def test_worker_with_a_wrong_token_stops_with_join_refused(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        daemon = WorkerDaemon(cluster.worker_config("intruder", join_token="wrong"))
        with pytest.raises(BaseExceptionGroup) as info:
            await asyncio.wait_for(daemon.run(), 10)
        assert info.group_contains(JoinRefusedError)
        assert "intruder" not in cluster.coordinator.membership


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(0))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(1.0, 0.1 * 2**i) for i in range(8)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.1


async def test_worker_rejoins_a_restarted_leader_on_the_same_address(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as first:
        port = first.address.rsplit(":", 1)[1]
        worker = await first.add_worker("w0")
        first_term = worker.term
        # Take the worker out of the helper's hands so it survives this leader.
        _, task = first.workers.pop("w0")
    async with running_cluster(tmp_path, bind=f"127.0.0.1:{port}") as second:
        await wait_until(lambda: "w0" in second.coordinator.membership, 20, "rejoin")
        assert second.coordinator.term == first_term + 1
        await wait_until(lambda: worker.term == second.coordinator.term, 10, "new term")
        worker.request_stop()
        await asyncio.wait_for(task, 10)
