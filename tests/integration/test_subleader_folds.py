"""A root on ``fedasync-folds`` over real gRPC: a sub-leader's group update counts for the
updates it folds (``stats.workers``); a declaration out of bounds is refused and changes
nothing."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from eddl.leader.relay import UpwardUpdate
from eddl.leader.uplink import Uplink
from eddl.learn.aggregation import MAX_FOLDS
from tests.integration.cluster_support import (
    DIGITS_JOB,
    TOKEN,
    Cluster,
    cluster_stub,
    running_cluster,
)

ASYNC_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
ASYNC_JOB.update(
    rounds=1000, max_epochs=10000.0, default_task_samples=96, aggregation="async",
    async_rule="fedasync-folds",
)  # fmt: skip


def _snapshot(cluster: Cluster, job_id: str) -> tuple[int, dict[str, bytes]]:
    params = cluster.coordinator.model(job_id).params
    return cluster.status(job_id)["version"], {k: v.tobytes() for k, v in params.items()}


async def _refused(uplink: Uplink, job_id: str, update: UpwardUpdate, workers: int) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await uplink.push(job_id, update, seconds=0.1, workers=workers)
    return info.value.code().name


async def test_a_group_update_counts_for_its_folds_and_bad_declarations_change_nothing(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, admin_token="admin", heartbeat_interval_s=5.0) as cluster:
        job_id = await cluster.submit(ASYNC_JOB, token="admin")
        async with cluster_stub(cluster.address) as stub:
            uplink = Uplink(stub, "sub-1")
            await uplink.join(TOKEN)
            drawn = None
            for _ in range(20):  # bounded: the job may need a moment to start
                drawn = await uplink.next_task(0.5)
                if drawn is not None:
                    break
            assert drawn is not None
            _, task = drawn
            version, base = await uplink.pull(job_id, task.base_version)
            # The group's mean model: its own step from the base is +0.01 everywhere.
            group = {n: v + np.float32(0.01) for n, v in base.items()}
            update = UpwardUpdate(task.task_id, version, task.num_samples, group, updates=4)

            before = _snapshot(cluster, job_id)
            assert before[0] == version  # no other update: staleness 0 at the push
            assert await _refused(uplink, job_id, update, MAX_FOLDS + 1) == "INVALID_ARGUMENT"
            too_many = task.num_samples + 1  # more updates than the task has samples
            assert too_many <= MAX_FOLDS
            assert await _refused(uplink, job_id, update, too_many) == "INVALID_ARGUMENT"
            assert _snapshot(cluster, job_id) == before  # nothing changed

            reply = await uplink.push(job_id, update, seconds=0.2, workers=4)
            assert reply.outcome == "aggregated"
            after = cluster.coordinator.model(job_id)
            assert after.version == version + 1
            # staleness 0, so x = x_b: x + a g (x_in - x) with a = 0.6 and g = sqrt(4) = 2,
            # twice FedAsync's 0.6 step
            for name, value in base.items():
                np.testing.assert_allclose(after.params[name] - value, 0.012, atol=1e-5)
