"""Leader candidates on a real etcd expose their term, role and replication on /metrics
(checked by promtool), and say role and term in their systemd status line; after the root
stops, the standby that takes over shows a higher term and a second root change. The Grafana
dashboard's leader election row asks only for metrics these candidates expose."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from eddl.leader.server import LeaderDaemon
from eddl.ops.wiring import LeaderOps
from tests.e2e.test_ops_dashboard import dashboard_exprs, exposed_names, metric_names
from tests.etcd_procs import EtcdMember, free_port
from tests.integration.cluster_support import ha_candidate, wait_until
from tests.integration.test_ha_daemon import ha, join

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (prometheus)"),
]


@contextlib.asynccontextmanager
async def metered(
    tmp: Path, etcd: EtcdMember, name: str
) -> AsyncIterator[tuple[LeaderDaemon, LeaderOps]]:
    """A candidate with its metrics endpoint, wired as ``eddl-leader`` wires it."""
    async with ha_candidate(tmp, etcd, name, free_port()) as daemon:
        ops = LeaderOps("127.0.0.1:0", lambda: daemon.coordinator, ha=lambda: daemon.ha)
        try:
            yield daemon, ops
        finally:
            await ops.close()


async def scrape(ops: LeaderOps, names: set[str] | None = None) -> dict[str, float]:
    """Every sample of the endpoint, by its name and labels as written; promtool-checked.
    ``names`` gathers the sample names the endpoint exposes."""
    assert ops.metrics is not None
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://{ops.metrics.address}/metrics", timeout=10)
    reply.raise_for_status()
    promtool = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(promtool.communicate(reply.text.encode()), 60)
    finally:
        if promtool.returncode is None:
            promtool.kill()
            await promtool.wait()
    assert promtool.returncode == 0 and not out.strip(), out.decode()
    if names is not None:
        names.update(exposed_names(reply.text))
    samples = {}
    for line in reply.text.splitlines():
        if line and not line.startswith("#"):
            key, _, number = line.rpartition(" ")
            samples[key] = float(number)
    return samples


async def test_candidates_expose_term_role_and_replication(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    exposed: set[str] = set()
    async with metered(tmp_path, etcd, "a") as (a, ops_a):
        assert a.leadership is not None
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        got = await scrape(ops_a)
        term = got["eddl_leader_term"]
        assert term > 0 and got["eddl_leader_is_root"] == 1
        assert got['eddl_leader_elections_total{outcome="elected"}'] == 1
        assert got["eddl_leader_root_changes_total"] == 1
        assert got["eddl_replication_degraded"] == 1  # no standby yet
        assert got["eddl_replication_standbys"] == 0
        assert ops_a.status_line().startswith(f"leader root serving, term {term:.0f},")

        async with metered(tmp_path, etcd, "b") as (b, ops_b):
            await wait_until(lambda: len(ha(a)["standbys"]) == 1, 20, "a sees b")  # type: ignore[arg-type]
            await join(a.config.advertise, "n1")  # a replicated write
            got = await scrape(ops_a, exposed)
            assert got["eddl_replication_standbys"] == 1
            assert got["eddl_replication_degraded"] == 0
            assert got['eddl_replication_lag_versions{standby="b"}'] == 0
            assert got['eddl_replication_synced{standby="b"}'] == 1
            got_b = await scrape(ops_b, exposed)
            assert got_b["eddl_leader_is_root"] == 0 and got_b["eddl_leader_term"] == term
            assert got_b['eddl_leader_elections_total{outcome="following"}'] >= 1
            assert got_b["eddl_leader_root_changes_total"] == 1
            assert got_b["eddl_replication_standbys"] == 0
            assert not any(k.startswith("eddl_replication_lag_versions{") for k in got_b)
            assert ops_b.status_line().startswith(f"leader standby, term {term:.0f},")

            await a.stop(0.2)  # the root goes: b takes over after the lease
            assert b.leadership is not None
            await wait_until(b.leadership.is_root, 30, "b acting as root")
            got_b = await scrape(ops_b)
            assert got_b["eddl_leader_term"] > term and got_b["eddl_leader_is_root"] == 1
            won = got_b['eddl_leader_elections_total{outcome="elected"}']
            won += got_b['eddl_leader_elections_total{outcome="takeover"}']
            assert won == 1
            assert got_b["eddl_leader_root_changes_total"] == 2
            assert got_b["eddl_replication_degraded"] == 1  # a is gone: no standby
    # The Grafana dashboard's election row reads only what the candidates exposed.
    missing = {
        (title, name)
        for title, expr in dashboard_exprs(ha=True)
        for name in metric_names(expr)
        if name not in exposed
    }
    assert not missing, f"dashboard metrics no candidate exports: {sorted(missing)}"
