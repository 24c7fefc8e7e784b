"""``eddl-leader --upstream HOST:PORT``: run as a sub-leader of the leader at that address.

The process joins its leader as a node, serves the ``Cluster`` service to its group on
``--bind``, and relays: each task its leader hands it is trained by the group and answered with
one update (:mod:`eddl.leader.subleader`).

Over mutual TLS (the default) the sub-leader holds one certificate of role ``subleader``,
enrolled at its leader's bootstrap port with a join token of that role
(``eddl token create --role subleader``) and kept in ``--pki-dir``. Upward it is the client
certificate the root's authorization admits for a node's calls only (no Admin, Peer or Leave);
downward it is the server certificate of the group's endpoint (its names are the hosts the
members dial), which requires the members' cluster certificates and refuses those the root
revoked; it renews that certificate while it runs
(:mod:`eddl.leader.subleader_credentials`). In ``--insecure`` mode both sides use session
credentials from ``Join`` on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from eddl.config import ConfigError, check_address
from eddl.leader.servicers.group import GroupServicer
from eddl.leader.subleader import SubLeader, SubLeaderSettings
from eddl.leader.subleader_credentials import SubLeaderCredentials
from eddl.leader.uplink import Uplink
from eddl.log import configure_logging, get_logger
from eddl.net.server import RunningServer, start_server, write_port_file
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc
from eddl.security import pki
from eddl.security.enrol import EnrolmentError
from eddl.security.node import NodeSecurity, bootstrap_address, prepare

__all__ = [
    "ROLE",
    "RunningGroup",
    "SubLeaderSecurityError",
    "main",
    "serve",
    "start_group",
    "sub_leader_security",
]

CLUSTER = cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name
ROLE = "subleader"


class SubLeaderSecurityError(Exception):
    """The sub-leader cannot obtain the credentials it needs; nothing was started."""


def pki_directory(args: argparse.Namespace) -> Path:
    """Where the sub-leader's key and certificate are kept: ``--pki-dir``, else
    ``STATE_DIR/node``."""
    return Path(args.pki_dir) if args.pki_dir else Path(args.state_dir or "eddl-state") / "node"


async def sub_leader_security(args: argparse.Namespace, node_id: str) -> NodeSecurity:
    """``--insecure``: session credentials. Else the saved certificate in ``--pki-dir``, or a
    new one enrolled with ``--enrol-token``; its role must be ``subleader``."""
    if args.security == "insecure":
        return NodeSecurity("insecure")
    directory = pki_directory(args)
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


@dataclass
class RunningGroup:
    """A sub-leader at work: its group's endpoint, its relay to its leader, its credentials."""

    sub: SubLeader
    server: RunningServer
    credentials: SubLeaderCredentials
    relay: asyncio.Task[None]

    async def stop(self) -> None:
        self.sub.stopped = True
        self.relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.relay
        await self.server.stop(1.0)
        await self.credentials.close()


async def start_group(
    settings: SubLeaderSettings,
    *,
    bind: str,
    upstream: str,
    security: NodeSecurity | None = None,
    advertise: str = "",
    pki_dir: Path | None = None,
    lead_worker: bool = False,
) -> RunningGroup:
    """Serve the group on ``bind`` and relay to ``upstream``. With a certificate (kept in
    ``pki_dir``) the group is served once the root's revocation list is held. ``lead_worker``:
    the group is a ``--can-lead`` worker's (its offer ranks after the sub-leader daemons')."""
    credentials = SubLeaderCredentials(security or NodeSecurity("insecure"), upstream, pki_dir)
    uplink = Uplink(cluster_pb2_grpc.ClusterStub(credentials.channel), settings.node_id)
    stub = cluster_pb2_grpc.ClusterStub
    credentials.on_channel.append(lambda channel: setattr(uplink, "stub", stub(channel)))
    try:
        await credentials.start(within_s=uplink.rpc_timeout_s)
    except TimeoutError as exc:
        raise RuntimeError(f"no revocation list from {upstream} yet: not serving") from exc
    sub = SubLeader(settings, uplink)
    servicer = GroupServicer(sub, [])
    try:
        server = await start_server(
            bind,
            [(cluster_pb2_grpc.add_ClusterServicer_to_server, servicer)],
            [CLUSTER],
            interceptors=credentials.interceptors(settings.join_token),
            credentials=credentials.security.server_credentials(),
        )
    except BaseException:
        await credentials.close()
        raise
    # The address members dial: --advertise, else the bound one (a wildcard bind needs it).
    address = advertise or server.address
    servicer.leaders = [address, upstream]
    uplink.lead_address = address
    uplink.lead_worker = lead_worker
    return RunningGroup(sub, server, credentials, asyncio.create_task(sub.run()))


async def serve(
    settings: SubLeaderSettings,
    *,
    bind: str,
    upstream: str,
    port_file: Path | None,
    security: NodeSecurity | None = None,
    advertise: str = "",
    pki_dir: Path | None = None,
) -> None:
    """:func:`start_group`, until SIGTERM or SIGINT."""
    group = await start_group(
        settings,
        bind=bind,
        upstream=upstream,
        security=security,
        advertise=advertise,
        pki_dir=pki_dir,
    )
    if port_file is not None:
        write_port_file(port_file, group.server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        done, _ = await asyncio.wait(
            [group.relay, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if group.relay in done:
            group.relay.result()  # raise what ended it
    finally:
        await group.stop()


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
            pki_dir=None if security.identity is None else pki_directory(args),
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
