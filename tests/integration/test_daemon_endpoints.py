"""Both daemons serve gRPC health, reflection and the Probe service (real servers, loopback)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from eddl.net import open_channel
from eddl.profiler.probe import PROBE_SERVICE_NAME
from eddl.profiler.probe_client import ProbeClient
from tests.integration.cluster_support import running_cluster, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(address: str, service: str = "") -> int:
    async with open_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return int(reply.status)


async def _services(address: str) -> set[str]:
    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async with open_channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        async for reply in stub.ServerReflectionInfo(requests(), timeout=5):
            return {s.name for s in reply.list_services_response.service}
    return set()


async def test_leader_serves_health_reflection_and_probe(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        assert await _health(cluster.address) == SERVING
        assert await _health(cluster.address, PROBE_SERVICE_NAME) == SERVING
        services = await _services(cluster.address)
        assert {"eddl.v1.Cluster", "eddl.v1.Admin", PROBE_SERVICE_NAME} <= services
        assert "grpc.health.v1.Health" in services
        async with ProbeClient(cluster.address) as probe:
            assert await probe.ping() > 0


async def test_worker_endpoint_health_follows_its_membership(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        worker = await cluster.add_worker("w0")
        assert worker.endpoint is not None
        address = worker.endpoint.address

        async def serving() -> bool:
            return await _health(address) == SERVING

        await wait_until(serving, 10, "worker endpoint SERVING once joined")
        services = await _services(address)
        assert {PROBE_SERVICE_NAME, "grpc.health.v1.Health"} <= services
        async with ProbeClient(address) as probe:
            assert await probe.ping() > 0
        # Keep the worker alive past its leader.
        _, task = cluster.workers.pop("w0")

    async def not_serving() -> bool:
        return await _health(address) == NOT_SERVING

    try:
        await wait_until(not_serving, 20, "worker endpoint NOT_SERVING without a leader")
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 15)


async def test_worker_with_an_empty_bind_serves_nothing(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        worker = await cluster.add_worker("w1", bind="")
        assert worker.endpoint is None


async def test_worker_writes_its_endpoint_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "worker.port"
    async with running_cluster(tmp_path) as cluster:
        worker = await cluster.add_worker("w2", port_file=str(port_file))
        assert worker.endpoint is not None
        assert int(port_file.read_text()) == worker.endpoint.port
