"""The fleet simulator drives a real leader process: fifty virtual devices finish a job."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest

from bench.fleet import fleet_job, fleet_leader, parse_figures
from bench.fleet_devices import PROFILES_DIR, FleetHost, load_profiles, shard
from bench.scale import TOKEN
from eddl.cli.jobs import job_status, submit_job

pytestmark = pytest.mark.slow

DEVICES = 50
ROUNDS = 40


async def test_fifty_virtual_devices_finish_a_job_on_a_real_leader(tmp_path: Path) -> None:
    profiles = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "sgd")
    with fleet_leader(tmp_path, heartbeat_s=2.0) as (address, metrics_url, _pid):
        job_id = await submit_job(address, fleet_job(DEVICES, (784, 16, 10), ROUNDS, 0.5))
        host = FleetHost([address], TOKEN, profiles, shard(DEVICES, 1, 0), ramp_per_s=50.0)
        running = asyncio.create_task(host.run())
        try:
            state, alive = "", 0.0
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:  # bounded: 180 s at most
                reply = await job_status(address, job_id)
                state = reply.state
                if state != "running" and state != "pending":
                    break
                if host.joined == DEVICES:
                    text = await asyncio.to_thread(_read, metrics_url)
                    alive = max(alive, parse_figures(text).alive)
                await asyncio.sleep(0.5)
        finally:
            host.stop()
            await running
    assert state == "completed", state
    assert reply.envelope.model_version >= ROUNDS
    assert reply.samples_trained > 0
    assert alive == DEVICES  # every device joined and was alive at the leader at once
    assert host.failures == []
    assert host.tasks_done >= ROUNDS


def _read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())
