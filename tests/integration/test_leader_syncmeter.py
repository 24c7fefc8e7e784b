"""The root's sync meter over real gRPC: workers' syncs and bytes feed the split policy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from eddl.leader.config import LeaderConfig
from eddl.leader.server import LeaderDaemon
from eddl.leader.splitting import SplitConfig, SplitDecision, SplitPolicy
from eddl.leader.syncmeter import SyncMeter
from eddl.worker.daemon import WorkerDaemon
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, Cluster, wait_until

SLOW_JOB = {k: v for k, v in DIGITS_JOB.items() if k != "target_accuracy"}
SLOW_JOB.update(rounds=1000, max_epochs=10000.0)


def test_a_link_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SyncMeter(SplitPolicy(), print, capacity_bytes_per_s=0.0)


async def test_syncs_over_a_busy_link_make_a_promotion_with_the_figures(tmp_path: Path) -> None:
    decisions: list[SplitDecision] = []
    policy = SplitPolicy(SplitConfig(window=3, busy_for=0, hold=0, min_group=1, max_groups=2))
    # A 2 kB/s link: every model pulled or update pushed keeps it full.
    meter = SyncMeter(policy, decisions.append, capacity_bytes_per_s=2000.0, period=0.2)
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="off",
        heartbeat_interval_s=1.0,
        admin_token="admin",
    )
    daemon = LeaderDaemon(config, interceptors=[meter])
    server = await daemon.start()
    cluster = Cluster(daemon, server.address, tmp_path)
    workers: list[tuple[WorkerDaemon, asyncio.Task[None]]] = []
    try:
        await cluster.submit(SLOW_JOB, token="admin")
        for i in range(4):
            w = WorkerDaemon(cluster.worker_config(f"w{i}"))
            workers.append((w, asyncio.create_task(w.run())))
        await wait_until(lambda: bool(decisions), 60.0, "a split decision")
        # With the four workers steady, BUC = n / t_sync comes out of the window.
        measured: list[tuple[int, float]] = []

        def buc() -> bool:
            got = policy.buc(time.monotonic())
            if got is not None and got[0] == 4:
                measured.append(got)
            return bool(measured)

        await wait_until(buc, 60.0, "BUC at four workers")
    finally:
        for w, task in workers:
            w.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await daemon.stop(0.2)
    first = decisions[0]
    assert first.action == "promote" and first.groups == 2
    assert first.figures.link_busy == 1.0 and "root link >= 85% busy" in first.reason
    assert first.figures.workers >= 4
    assert measured[0][1] > 0
