"""Ask a daemon's gRPC health service (``grpc.health.v1.Health/Check``) whether it serves.

Every EDDL daemon serves the standard health service (:mod:`eddl.net.server`): a leader reports
SERVING while it listens, a worker or gateway while it is joined to a leader. ``eddl health``
uses this for Compose healthchecks and scripts: exit 0 on SERVING, 1 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from eddl.config import ConfigError, check_address
from eddl.security.admin import admin_channel
from eddl.security.tls import Identity

__all__ = ["HealthResult", "check_health"]


@dataclass(frozen=True)
class HealthResult:
    """What the daemon said: ``status`` is SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN, or
    ``UNREACHABLE`` when no answer came (``detail`` says why)."""

    address: str
    service: str
    status: str
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"

    def line(self) -> str:
        what = f"{self.address} ({self.service})" if self.service else self.address
        return f"{what}: {self.status}" + (f" ({self.detail})" if self.detail else "")


async def check_health(
    address: str, service: str = "", timeout_s: float = 5.0, identity: Identity | None = None
) -> HealthResult:
    """One health check of ``service`` ('' : the whole server) at ``address`` (HOST:PORT),
    with ``identity`` (else the ``eddl`` command's admin certificate, if any)."""
    try:
        check_address(address, "address")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if not timeout_s > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout_s}")
    # Any node answers health checks (leaders and workers alike): the server's certificate
    # must chain to the cluster CA and name the host, not carry a leader's names.
    async with admin_channel(address, identity, leader=False) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return HealthResult(address, service, "SERVICE_UNKNOWN", exc.details() or "")
            return HealthResult(
                address, service, "UNREACHABLE", f"{exc.code().name}: {exc.details()}"
            )
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return HealthResult(address, service, name)
