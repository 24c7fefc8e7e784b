"""Start a ``grpc.aio`` server with health checking and reflection, and read back its port.

Usage::

    running = await start_server("127.0.0.1:0", [(add_ClusterServicer_to_server, servicer)],
                                 service_names=[cluster_pb2.DESCRIPTOR.services_by_name[...]])
    try:
        ...
    finally:
        await running.stop(grace=2.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eddl.log import get_logger
from eddl.net.channel import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from eddl.net.guard import Guard
from eddl.net.handlers import HandlerCache

__all__ = [
    "Registration",
    "RunningServer",
    "ServerStartError",
    "start_server",
    "write_port_file",
]

log = get_logger("net")

Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any]


class ServerStartError(RuntimeError):
    """The server could not bind its address."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    host: str
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped upstream)
    service_names: tuple[str, ...]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 2.0) -> None:
        """Report NOT_SERVING, then let in-flight calls finish for ``grace`` seconds."""
        try:
            await self.set_serving(False)
        finally:
            await self.server.stop(grace)


def _split(bind: str) -> tuple[str, str]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ServerStartError(f"bind address {bind!r} is not HOST:PORT")
    return host.strip("[]"), port


async def start_server(
    bind: str,
    registrations: Iterable[Registration],
    service_names: Sequence[str],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> RunningServer:
    """Bind ``bind`` (port 0: the OS picks), mount the servicers, health and reflection, start.

    With ``credentials`` the port speaks TLS (see :mod:`eddl.security.tls`), else plaintext.
    Every handler is wrapped by :class:`~eddl.net.guard.Guard` (bounded requests, no unexpected
    exception leaks) before ``interceptors``.

    Each method's handler is built once, through the guard and ``interceptors``, and kept
    (:class:`HandlerCache`): an interceptor must return the same handler for the same method
    and decide anything that changes (who calls, whether this leader is the root) inside the
    handler, at each call."""
    host, _ = _split(bind)
    # The guard comes first: it wraps every handler, whatever the other interceptors return.
    server = grpc.aio.server(
        options=channel_options(max_message_bytes),
        interceptors=[HandlerCache(), Guard(), *interceptors],
    )
    for add, servicer in registrations:
        add(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = tuple(service_names)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is not None:
            port = server.add_secure_port(bind, credentials)
        else:
            port = server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise ServerStartError(f"cannot bind {bind}: {exc}") from exc
    if port == 0:
        raise ServerStartError(f"cannot bind {bind}")
    await server.start()
    running = RunningServer(server, port, host, health_servicer, names)
    await running.set_serving(True)
    log.info("server started", address=running.address, services=list(names))
    return running


def write_port_file(path: Path, port: int) -> None:
    """Write a daemon's bound port atomically, so a reader never sees half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)
