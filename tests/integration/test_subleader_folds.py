"""A root on ``fedasync-folds`` over real gRPC: a sub-leader's group update counts for the
updates it folds (``stats.workers``); a declaration out of bounds is refused and changes
nothing; a worker (no admitted offer to lead) that declares folds counts as one update."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from structlog.testing import capture_logs

from eddl.leader.config import LeaderConfig
from eddl.leader.groupedge import split_edge
from eddl.leader.relay import UpwardUpdate
from eddl.leader.server import LeaderDaemon
from eddl.leader.splitting import SplitPolicy
from eddl.leader.syncmeter import SyncMeter
from eddl.leader.uplink import Uplink
from eddl.learn.aggregation import MAX_FOLDS
from eddl.learn.params import Params
from tests.integration.cluster_support import (
    DIGITS_JOB,
    TOKEN,
    Cluster,
    cluster_stub,
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


@contextlib.asynccontextmanager
async def split_root(tmp: Path) -> AsyncIterator[Cluster]:
    """A root wired as ``eddl-leader`` wires it: its group edge admits offers to lead, and
    only a node whose offer it admitted may push for several updates."""
    config = LeaderConfig(
        bind="127.0.0.1:0", state_dir=tmp / "leader", join_token=TOKEN, security="off",
        heartbeat_interval_s=5.0, admin_token="admin",
    )  # fmt: skip
    holder: list[LeaderDaemon] = []
    edge = split_edge(config, SyncMeter(SplitPolicy(), lambda d: None), lambda: holder[0].server)
    daemon = LeaderDaemon(config, authorized_interceptors=[edge], leads=edge.leads)
    holder.append(daemon)
    server = await daemon.start()
    try:
        yield Cluster(daemon, server.address, tmp)
    finally:
        await daemon.stop(0.2)


async def _draw(uplink: Uplink) -> tuple[UpwardUpdate, int, Params]:
    """A task for ``uplink``: an update whose own step from the task's base is +0.01
    everywhere, the version it starts from and that version's model."""
    drawn = None
    for _ in range(20):  # bounded: the job may need a moment to start
        drawn = await uplink.next_task(0.5)
        if drawn is not None:
            break
    assert drawn is not None
    job, task = drawn
    version, base = await uplink.pull(job.job_id, task.base_version)
    stepped = {n: v + np.float32(0.01) for n, v in base.items()}
    return UpwardUpdate(task.task_id, version, task.num_samples, stepped, updates=4), version, base


async def test_a_group_update_counts_for_its_folds_and_bad_declarations_change_nothing(
    tmp_path: Path,
) -> None:
    async with split_root(tmp_path) as cluster:
        job_id = await cluster.submit(ASYNC_JOB, token="admin")
        async with cluster_stub(cluster.address) as stub:
            sub = Uplink(stub, "sub-1")
            sub.lead_address = "127.0.0.1:7001"  # a sub-leader daemon offers its group
            liar = Uplink(stub, "w-liar")
            await sub.join(TOKEN)
            await liar.join(TOKEN)
            update, version, base = await _draw(sub)
            before = _snapshot(cluster, job_id)
            assert before[0] == version  # no other update: staleness 0 at the push
            assert await _refused(sub, job_id, update, MAX_FOLDS + 1) == "INVALID_ARGUMENT"
            too_many = update.num_samples + 1  # more updates than the task has samples
            assert too_many <= MAX_FOLDS
            assert await _refused(sub, job_id, update, too_many) == "INVALID_ARGUMENT"
            assert _snapshot(cluster, job_id) == before  # nothing changed

            reply = await sub.push(job_id, update, seconds=0.2, workers=4)
            assert reply.outcome == "aggregated"
            after = cluster.coordinator.model(job_id)
            assert after.version == version + 1
            # staleness 0, so x = x_b: x + a g (x_in - x) with a = 0.6 and g = sqrt(4) = 2,
            # twice FedAsync's 0.6 step
            for name, value in base.items():
                np.testing.assert_allclose(after.params[name] - value, 0.012, atol=1e-5)

            # A worker declaring the same: its update is one device's, FedAsync's 0.6 step.
            lie, version, _ = await _draw(liar)
            assert version == after.version
            with capture_logs() as logs:
                reply = await liar.push(job_id, lie, seconds=0.2, workers=4)
            assert reply.outcome == "aggregated"
            moved = cluster.coordinator.model(job_id)
            assert moved.version == version + 1
            for name, value in after.params.items():
                np.testing.assert_allclose(moved.params[name] - value, 0.006, atol=1e-5)
            ignored = [e for e in logs if e["event"] == "declared folds ignored"]
            assert [(e["node"], e["folds"]) for e in ignored] == [("w-liar", 4)]
