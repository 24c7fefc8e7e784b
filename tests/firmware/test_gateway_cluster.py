"""A gateway in a running cluster (in-process leader on 127.0.0.1:0, host-simulator MCUs).

The end-to-end tests with real processes and QEMU boards are in tests/e2e/test_gateway_e2e.py;
these check the gateway's behaviour in detail: MCU nodes join with their device profile,
train TIFeD next to a Python worker, and a device that vanishes is reported gone and rejoins.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eddl.cli.local import MCU_JOB
from eddl.mcu.faults import FaultPlan, FaultProxy
from eddl.mcu.launch import start_sim
from eddl.net import open_channel
from eddl.worker.gateway import Gateway
from tests.integration.cluster_support import running_cluster, wait_until

# The MCU job of ``eddl local --mcu``, with small tasks so every node takes part.
TIFED_JOB: dict[str, Any] = {
    **MCU_JOB,
    "aggregation": "sync",
    "target_accuracy": 0.85,
    "task_seconds": 0.3,
    "round_deadline": 5.0,
    "default_task_samples": 100,
}


@contextlib.asynccontextmanager
async def _gateway(cluster: Any, urls: list[str], **overrides: Any) -> Any:
    values = {"bind": "", "mcu_retry_s": 0.3, **overrides}
    config = cluster.worker_config("gw", mcu=urls, **values)
    gateway = Gateway(config)
    task = asyncio.create_task(gateway.run())
    try:
        yield gateway
    finally:
        gateway.request_stop()
        await asyncio.wait_for(task, 20)


@pytest.mark.slow
async def test_mcus_train_tifed_next_to_a_python_worker(tmp_path: Path) -> None:
    with start_sim("tcp", lifetime=120) as a, start_sim("tcp", lifetime=120) as b:
        async with running_cluster(tmp_path) as cluster:
            await cluster.add_worker("py1")
            async with _gateway(cluster, [a.url, b.url]) as gateway:
                ids = ["gw.mcu0", "gw.mcu1"]
                await wait_until(
                    lambda: all(i in cluster.coordinator.membership for i in ids), 20, "MCUs"
                )
                job = await cluster.submit(TIFED_JOB)
                status = await cluster.wait_job(job, 120)
                counters = {i: gateway.agents[i].counters for i in ids if gateway.agents[i]}
        assert status["status"] == "completed", status
        assert status["accuracy"] >= 0.85
        assert all(c.tasks > 0 and c.kernel_ticks > 0 for c in counters.values()), counters


@pytest.mark.slow
async def test_a_vanished_device_is_reported_gone_and_rejoins(tmp_path: Path) -> None:
    first = start_sim("tcp", lifetime=120)
    port = int(first.url.rsplit(":", 1)[1])
    try:
        async with running_cluster(tmp_path) as cluster, _gateway(cluster, [first.url]) as gateway:
            members = cluster.coordinator.membership
            await wait_until(lambda: "gw.mcu0" in members, 20, "the MCU to join")
            # The join carries HELLO: this firmware takes float32 samples (sine, presence jobs).
            node = members.get("gw.mcu0")
            assert node is not None and node.mcu is not None
            assert (node.mcu.firmware_version, node.mcu.float_samples) == ("0.2.0", True)
            first.close()  # the device vanishes
            await wait_until(lambda: "gw.mcu0" not in members, 10, "the MCU to be gone")
            await wait_until(lambda: gateway.losses["gw.mcu0"] == 1, 10, "the loss counted")
            again = start_sim("tcp", port=port, lifetime=120)
            try:
                await wait_until(lambda: "gw.mcu0" in members, 20, "the MCU to rejoin")
                assert gateway.joins["gw.mcu0"] == 2
            finally:
                again.close()
    finally:
        first.close()


@pytest.mark.slow
async def test_serial_corruption_never_reaches_the_model(tmp_path: Path) -> None:
    """A running cluster whose MCU link flips, truncates, drops and injects bytes: every update
    the gateway pushes equals the numpy reference's for the same task (``mcu_verify``)."""
    plan = FaultPlan(rate=0.05, max_faults=150, seed=7)
    with (
        start_sim("tcp", lifetime=120) as sim,
        FaultProxy.for_url(sim.url, plan, lifetime=110) as proxy,
    ):
        async with (
            running_cluster(tmp_path) as cluster,
            _gateway(cluster, [proxy.url], mcu_verify=True, mcu_reply_timeout_s=0.3) as gateway,
        ):
            await wait_until(lambda: "gw.mcu0" in cluster.coordinator.membership, 20, "the MCU")
            agent = gateway.agents["gw.mcu0"]
            assert agent is not None
            job = await cluster.submit({**TIFED_JOB, "target_accuracy": 0.8})
            status = await cluster.wait_job(job, 90)
    assert status["status"] == "completed", status
    assert agent.counters.tasks > 0
    assert agent.counters.verified == agent.counters.tasks
    assert agent.counters.mismatches == 0
    assert gateway.losses["gw.mcu0"] == 0
    assert plan.total > 0, "no fault was injected"
    assert agent.device.link.retransmits > 0 or agent.device.link.bad_frames > 0


async def test_gateway_endpoint_is_serving_while_a_device_is_joined(tmp_path: Path) -> None:
    first = start_sim("tcp", lifetime=60)
    try:
        async with (
            running_cluster(tmp_path) as cluster,
            _gateway(
                cluster, [first.url], bind="127.0.0.1:0", port_file=str(tmp_path / "gw.port")
            ) as gateway,
        ):
            await wait_until(lambda: gateway.endpoint is not None, 10, "the endpoint")
            assert gateway.endpoint is not None
            address = f"127.0.0.1:{gateway.endpoint.port}"
            assert (tmp_path / "gw.port").read_text().strip() == str(gateway.endpoint.port)
            await wait_until(lambda: gateway.joined == ["gw.mcu0"], 20, "the MCU to join")
            await wait_until(lambda: _health(address, SERVING), 10, "the gateway to report SERVING")
            first.close()
            await wait_until(lambda: not gateway.joined, 20, "the MCU to be gone")
            await wait_until(
                lambda: _health(address, NOT_SERVING), 10, "the gateway to report NOT_SERVING"
            )
    finally:
        first.close()


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(address: str, want: int) -> bool:
    async with open_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return bool(reply.status == want)
