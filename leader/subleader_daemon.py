"""``eddl-leader --upstream HOST:PORT``: run as a sub-leader of the leader at that address.

The process joins its leader as a node (over a session credential, ``--insecure``), serves
the ``Cluster`` service to its group on ``--bind`` with the same session credentials, and
relays: each task its leader hands it is trained by the group and answered with one update
(:mod:`eddl.leader.subleader`). Sub-leaders over mutual TLS are not built: the daemon refuses
to start without ``--insecure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from eddl.leader.servicers.group import GroupServicer
from eddl.leader.subleader import SubLeader, SubLeaderSettings
from eddl.leader.uplink import Uplink
from eddl.net.server import start_server, write_port_file
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from eddl.security.authz import Authorizer, SessionAuth
from eddl.security.node import NodeSecurity

__all__ = ["serve"]

CLUSTER = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name


async def serve(
    settings: SubLeaderSettings, *, bind: str, upstream: str, port_file: Path | None
) -> None:
    """Serve the group and relay to ``upstream`` until SIGTERM or SIGINT."""
    security = NodeSecurity("insecure")
    channel = security.channel(upstream)
    sub = SubLeader(settings, Uplink(cluster_pb2_grpc.ClusterStub(channel), settings.node_id))
    servicer = GroupServicer(sub, [])
    server = await start_server(
        bind,
        [(cluster_pb2_grpc.add_ClusterServicer_to_server, servicer)],
        [CLUSTER],
        interceptors=[Authorizer(SessionAuth())],
    )
    servicer.leaders = [server.address, upstream]
    if port_file is not None:
        write_port_file(port_file, server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    relay = asyncio.create_task(sub.run())
    try:
        done, _ = await asyncio.wait(
            [relay, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if relay in done:
            relay.result()  # raise what ended it
    finally:
        sub.stopped = True
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await relay
        await server.stop(1.0)
        await channel.close()
