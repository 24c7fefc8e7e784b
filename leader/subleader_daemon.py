"""``eddl-leader --upstream HOST:PORT``: run as a sub-leader of the leader at that address.

The process joins its leader as a node, serves the ``Cluster`` service to its group on
``--bind``, and relays: each task its leader hands it is trained by the group and answered with
one update (:mod:`eddl.leader.subleader`).

Over mutual TLS (the default) the sub-leader holds one certificate of role ``subleader``,
enrolled at its leader's bootstrap port with a join token of that role
(``eddl token create --role subleader``) and kept in ``--pki-dir``. Upward it is the client
certificate the root's authorization admits for a node's calls only (no Admin, Peer or Leave);
downward it is the server certificate of the group's endpoint (its names are the hosts the
members dial), which requires the members' cluster certificates. In ``--insecure`` mode both
sides use session credentials from ``Join`` on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import socket
import sys
from pathlib import Path

from eddl.config import ConfigError, check_address
from eddl.leader.servicers.group import GroupServicer
from eddl.leader.subleader import SubLeader, SubLeaderSettings
from eddl.leader.uplink import Uplink
from eddl.log import configure_logging, get_logger
from eddl.net.server import start_server, write_port_file
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from eddl.security import pki
from eddl.security.authz import Authorizer, CertificateAuth, SessionAuth
from eddl.security.enrol import EnrolmentError
from eddl.security.node import NodeSecurity, bootstrap_address, prepare

__all__ = [
    "ROLE",
    "SubLeaderSecurityError",
    "group_interceptors",
    "main",
    "serve",
    "sub_leader_security",
]

CLUSTER = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name
ROLE = "subleader"


class SubLeaderSecurityError(Exception):
    """The sub-leader cannot obtain the credentials it needs; nothing was started."""


async def sub_leader_security(args: argparse.Namespace, node_id: str) -> NodeSecurity:
    """``--insecure``: session credentials. Else the saved certificate in ``--pki-dir``, or a
    new one enrolled with ``--enrol-token``; its role must be ``subleader``."""
    if args.security == "insecure":
        return NodeSecurity("insecure")
    state = Path(args.state_dir or "eddl-state")
    directory = Path(args.pki_dir) if args.pki_dir else state / "node"
    bind_host = (args.bind or "").rpartition(":")[0].strip("[]")
    hosts = ["localhost", "127.0.0.1", socket.gethostname(), *(args.tls_hosts or [])]
    if bind_host not in ("", "0.0.0.0", "::"):
        hosts.append(bind_host)
    if args.advertise:
        hosts.append(args.advertise.rpartition(":")[0].strip("[]"))
    try:
        security = await prepare(
            "mtls",
            directory,
            node_id=node_id,
            token=(args.enrol_token or "")[:256],
            bootstrap=args.bootstrap or bootstrap_address(args.upstream),
            hosts=tuple(h for h in dict.fromkeys(hosts) if h != node_id),
        )
    except (EnrolmentError, pki.PkiError, ValueError) as exc:
        raise SubLeaderSecurityError(str(exc)) from exc
    assert security.identity is not None
    role = security.identity.info.role
    if role != ROLE:
        raise SubLeaderSecurityError(
            f"the certificate in {directory} has role {role!r}; a sub-leader needs one of role "
            f"{ROLE!r} (`eddl token create --role {ROLE}` on the root, then --enrol-token)"
        )
    return security


def group_interceptors(security: NodeSecurity, join_token: str) -> list[Authorizer]:
    """The group endpoint's one authorization point: members' cluster certificates (mtls),
    else session credentials from ``Join``. With mtls ``join_token`` is the sub-leader's own
    secret, written into every Join whose certificate was verified (as the root does)."""
    if security.identity is None:
        return [Authorizer(SessionAuth())]
    # The revocation list is the root's: a sub-leader does not hold it (docs/security.md).
    return [Authorizer(CertificateAuth(lambda _serial: False, join_token=join_token))]


async def serve(
    settings: SubLeaderSettings,
    *,
    bind: str,
    upstream: str,
    port_file: Path | None,
    security: NodeSecurity | None = None,
    advertise: str = "",
) -> None:
    """Serve the group and relay to ``upstream`` until SIGTERM or SIGINT."""
    security = security or NodeSecurity("insecure")
    channel = security.channel(upstream)
    sub = SubLeader(settings, Uplink(cluster_pb2_grpc.ClusterStub(channel), settings.node_id))
    servicer = GroupServicer(sub, [])
    server = await start_server(
        bind,
        [(cluster_pb2_grpc.add_ClusterServicer_to_server, servicer)],
        [CLUSTER],
        interceptors=group_interceptors(security, settings.join_token),
        credentials=security.server_credentials(),
    )
    # The address members dial: --advertise, else the bound one (a wildcard bind needs it).
    address = advertise or server.address
    servicer.leaders = [address, upstream]
    sub.uplink.lead_address = address
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


def main(args: argparse.Namespace) -> int:
    """``eddl-leader --upstream``: 0 after a clean stop, 1 when it failed, 2 for bad flags."""
    from eddl.leader.subleader import SubLeaderSettings

    configure_logging("json", args.log_level or "info")
    log = get_logger("leader")
    if args.security == "insecure" and not args.join_token:
        print("eddl-leader: --upstream --insecure needs --join-token", file=sys.stderr)
        return 2
    try:
        for flag, value in (("--upstream", args.upstream), ("--advertise", args.advertise)):
            if value:
                check_address(value, flag)
    except ConfigError as exc:
        print(f"eddl-leader: {exc}", file=sys.stderr)
        return 2
    node_id = args.leader_id or socket.gethostname()

    async def run() -> None:
        security = await sub_leader_security(args, node_id)
        # With mtls the members' certificates admit them; the token is this process's own.
        token = args.join_token if security.identity is None else secrets.token_hex(16)
        settings = SubLeaderSettings(
            node_id=node_id, join_token=token, heartbeat_s=args.heartbeat_interval_s or 1.0
        )
        await serve(
            settings,
            bind=args.bind or "127.0.0.1:0",
            upstream=args.upstream,
            port_file=Path(args.port_file) if args.port_file else None,
            security=security,
            advertise=args.advertise or "",
        )

    try:
        asyncio.run(run())
    except SubLeaderSecurityError as exc:
        log.error("sub-leader has no credentials", error=str(exc))
        print(f"eddl-leader: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        log.error("sub-leader failed", error=str(exc))
        return 1
    return 0
