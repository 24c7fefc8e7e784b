"""The fleet simulator drives a real leader process: fifty virtual devices finish a job."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from bench.fleet import fleet_job, parse_figures
from bench.fleet_devices import PROFILES_DIR, FleetHost, load_profiles, shard
from bench.fleet_procs import fleet_leader
from bench.scale import TOKEN
from eddl.cli.admin_client import job_status, submit_job

pytestmark = pytest.mark.slow

DEVICES = 50
ROUNDS = 100


async def test_fifty_virtual_devices_finish_a_job_on_a_real_leader(tmp_path: Path) -> None:
    profiles = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "sgd")
    with fleet_leader(tmp_path, heartbeat_s=2.0) as (address, metrics_url, _pid):
        host = FleetHost([address], TOKEN, profiles, shard(DEVICES, 1, 0), ramp_per_s=50.0)
        running = asyncio.create_task(host.run())
        try:
            for _ in range(600):  # bounded: 120 s at most
                if host.joined == DEVICES:
                    break
                await asyncio.sleep(0.2)
            # Every device joined and the leader counts it alive, before the job exists.
            alive = parse_figures(await asyncio.to_thread(_read, metrics_url)).alive
            job_id = await submit_job(address, fleet_job(DEVICES, (784, 16, 10), ROUNDS, 0.5))
            state = ""
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:  # bounded: 180 s at most
                reply = await job_status(address, job_id)
                state = reply.state
                # "ending": trained, waiting for the evaluation of its last version.
                if state not in ("running", "pending", "ending"):
                    break
                await asyncio.sleep(0.5)
        finally:
            host.stop()
            await running
    assert alive == DEVICES
    assert state == "completed", state
    assert reply.envelope.model_version >= ROUNDS
    assert reply.samples_trained > 0
    assert host.failures == []
    assert host.tasks_done >= ROUNDS
    # The work was spread over the fleet, not done by a few devices.
    assert sum(d.tasks_done > 0 for d in host.daemons) > DEVICES // 2


def _read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())
