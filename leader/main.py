"""``eddl-leader``: serve the Cluster and Admin services until SIGTERM/SIGINT.

Exit status: 0 after a clean stop, 1 when the leader failed to start or serve, 2 for a bad
configuration, 3 (:data:`~eddl.leader.statedir.EXIT_STATE_DIR_IN_USE`) when another leader
owns the state directory, 4 (:data:`EXIT_STEPPED_DOWN`) when an elected root stepped down.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from eddl.cli.help import Parser, add_version, config_defaults
from eddl.config import ConfigError, load_config
from eddl.leader.config import LeaderConfig
from eddl.leader.errors import LeaderError
from eddl.leader.statedir import EXIT_STATE_DIR_IN_USE, StateDirInUseError, StateDirLock
from eddl.log import configure_logging, get_logger

__all__ = ["EXIT_STEPPED_DOWN", "build_parser", "main"]

# An elected root that lost its lease stops with this status; its supervisor restarts it, and
# it rejoins as a standby.
EXIT_STEPPED_DOWN = 4


def build_parser() -> argparse.ArgumentParser:
    d = config_defaults(LeaderConfig)
    p = Parser(
        prog="eddl-leader",
        description="EDDL leader daemon. Settings come from the [leader] table of --config, "
        "then EDDL_LEADER_<KEY> in the environment, then these flags (each overrides the "
        "ones before); the defaults below apply when none of them gives a key.",
    )
    add_version(p)
    p.add_argument("--config", help="TOML file with a [leader] table (default: none)")
    p.add_argument(
        "--bind",
        help=f"HOST:PORT to listen on; port 0: the OS picks (default: {d['bind']})",
    )
    p.add_argument("--state-dir", help="directory of the checkpoint store (default: ./eddl-state)")
    p.add_argument("--join-token", help="token workers present to join (required)")
    p.add_argument("--admin-token", help="token required by submit/cancel (default: none)")
    p.add_argument("--port-file", help="write the bound port here once serving (default: none)")
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        dest="heartbeat_interval_s",
        help=f"seconds between worker heartbeats (default: {d['heartbeat_interval_s']})",
    )
    p.add_argument("--leader-id", help="this leader's id (default: the hostname)")
    p.add_argument(
        "--upstream",
        help="HOST:PORT of this leader's own leader: run as a sub-leader, whose group's work "
        "comes from there (default: none, a root or --follow leader)",
    )
    p.add_argument(
        "--pki-dir",
        help="with --upstream: directory of the sub-leader's key and certificate "
        "(default: STATE_DIR/node)",
    )
    p.add_argument(
        "--enrol-token",
        help="with --upstream: a join token of role subleader from `eddl token create --role "
        "subleader`, used once when PKI_DIR has no certificate",
    )
    p.add_argument(
        "--bootstrap",
        help="with --upstream: HOST:PORT of the upstream leader's bootstrap port "
        "(default: its port + 1)",
    )
    p.add_argument(
        "--follow",
        help="HOST:PORT of the root leader: stand by and point every caller there "
        "(default: none, this leader is the root)",
    )
    p.add_argument(
        "--insecure",
        action="store_const",
        const="insecure",
        dest="security",
        help="plaintext on loopback only, nodes admitted by --join-token then a session "
        "credential (default: mutual TLS with the cluster CA in STATE_DIR/pki)",
    )
    p.add_argument(
        "--bootstrap-bind",
        help="HOST:PORT where nodes enrol with join tokens (default: the main port + 1)",
    )
    p.add_argument(
        "--bootstrap-port-file", help="write the bootstrap port here once serving (default: none)"
    )
    p.add_argument(
        "--cert-lifetime",
        type=float,
        dest="cert_lifetime_s",
        help=f"seconds a node certificate lives (default: {d['cert_lifetime_s']:.0f})",
    )
    p.add_argument(
        "--tls-host",
        action="append",
        dest="tls_hosts",
        metavar="NAME",
        help="a name or address nodes reach this leader by, for its certificate (repeat)",
    )
    p.add_argument(
        "--token-dir",
        help="write a many-use worker and gateway join token here at each start, for nodes "
        "that enrol unattended (default: none)",
    )
    p.add_argument(
        "--coordinator",
        help="etcd://HOST:PORT[,HOST:PORT...]: stand as a candidate of an elected, replicated "
        "cluster (default: none, a lone leader)",
    )
    p.add_argument(
        "--advertise",
        help="HOST:PORT workers and peers reach this candidate at (with --coordinator), or "
        "a sub-leader's members reach it at (with --upstream)",
    )
    p.add_argument(
        "--lease-ttl",
        type=int,
        dest="lease_ttl_s",
        help=f"seconds of the election lease (default: {d['lease_ttl_s']})",
    )
    p.add_argument(
        "--min-replicas",
        type=int,
        help=f"standbys that must hold a version before it is acknowledged "
        f"(default: {d['min_replicas']})",
    )
    p.add_argument(
        "--split",
        choices=("advise", "auto"),
        help="leader role splitting: advise (log the split policy's decisions) or auto (also "
        "promote offering sub-leaders, redirect workers to groups, merge them back) "
        f"(default: {d['split']})",
    )
    p.add_argument(
        "--split-hold",
        type=float,
        dest="split_hold_s",
        help=f"seconds between split decisions, and of a quiet link before a merge "
        f"(default: {d['split_hold_s']:g})",
    )
    p.add_argument(
        "--split-busy-for",
        type=float,
        dest="split_busy_for_s",
        help=f"seconds the link must stay busy before a split (default: {d['split_busy_for_s']:g})",
    )
    p.add_argument(
        "--split-window",
        type=float,
        dest="split_window_s",
        help=f"seconds of synchronisations behind BUC and the worker count (a worker silent "
        f"for longer is no longer counted) (default: {d['split_window_s']:g})",
    )
    p.add_argument("--log-level", help=f"log level (default: {d['log_level']})")
    p.add_argument(
        "--metrics-bind", help="HOST:PORT of a Prometheus /metrics endpoint (default: none)"
    )
    p.add_argument(
        "--link-capacity-mbps",
        type=float,
        help="the leader link's capacity in megabits/s, for the auto policy's bandwidth signal "
        "and the link busy metric (default: unknown)",
    )
    p.add_argument(
        "--link-interface",
        help="the network interface carrying that link (e.g. eth0): the split meter reads its "
        "byte counters, so a link too full for any update to arrive is still seen busy "
        "(default: the bytes of the metered calls)",
    )
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "bind": args.bind,
        "state_dir": args.state_dir,
        "join_token": args.join_token,
        "admin_token": args.admin_token,
        "port_file": args.port_file,
        "heartbeat_interval_s": args.heartbeat_interval_s,
        "leader_id": args.leader_id,
        "follow": args.follow,
        "coordinator": args.coordinator,
        "advertise": args.advertise,
        "lease_ttl_s": args.lease_ttl_s,
        "min_replicas": args.min_replicas,
        "log_level": args.log_level,
        "metrics_bind": args.metrics_bind,
        "link_capacity_mbps": args.link_capacity_mbps,
        "link_interface": args.link_interface,
        "security": args.security,
        "bootstrap_bind": args.bootstrap_bind,
        "bootstrap_port_file": args.bootstrap_port_file,
        "cert_lifetime_s": args.cert_lifetime_s,
        "tls_hosts": args.tls_hosts,
        "token_dir": args.token_dir,
        "split": args.split,
        "split_hold_s": args.split_hold_s,
        "split_busy_for_s": args.split_busy_for_s,
        "split_window_s": args.split_window_s,
    }


async def _serve(config: LeaderConfig, lock: StateDirLock) -> bool:
    from eddl.leader.groupedge import GroupEdge, split_edge
    from eddl.leader.server import LeaderDaemon
    from eddl.leader.splitting import SplitConfig, SplitDecision, SplitPolicy
    from eddl.leader.syncmeter import SyncMeter
    from eddl.ops.wiring import LeaderOps
    from eddl.profiler.interface import InterfaceCounter

    holder: list[LeaderDaemon] = []
    log = get_logger("eddl.leader.split")

    def advise(d: SplitDecision) -> None:
        f = d.figures
        log.info(
            "split_decision",
            action=d.action,
            groups=d.groups,
            reason=d.reason,
            workers=f.workers,
            synchronising=f.synchronising,
            outstanding=f.outstanding,
            served=f.served,
            buc=f.buc,
            previous_workers=f.previous_workers,
            previous_buc=f.previous_buc,
            link_busy=f.link_busy,
            groups_before=f.groups,
        )

    mbps = config.link_capacity_mbps
    capacity = mbps * 1e6 / 8 if mbps > 0 else None
    policy = SplitPolicy(
        SplitConfig(
            window=config.split_window_s,
            hold=config.split_hold_s,
            busy_for=config.split_busy_for_s,
        )
    )
    edges: list[GroupEdge] = []

    def decided(d: SplitDecision) -> None:
        advise(d)
        for edge in edges:
            edge.decided(d)

    interface = InterfaceCounter(config.link_interface) if config.link_interface else None
    meter = SyncMeter(policy, decided, capacity_bytes_per_s=capacity, interface=interface)
    ops = LeaderOps(
        config.metrics_bind,
        lambda: holder[0].coordinator if holder else None,
        ha=lambda: holder[0].ha if holder else None,
        sync=meter.totals,
    )
    edge = split_edge(config, meter, lambda: holder[0].server, _lead_tokens(config, holder))
    if edge.acts:
        edges.append(edge)  # decisions regroup
    daemon = LeaderDaemon(
        config,
        lock=lock,
        interceptors=[*ops.interceptors, meter],
        authorized_interceptors=[edge],
        on_command=ops.sink.command,
        leads=edge.leads,
    )
    holder.append(daemon)
    daemon.on_serving.append(lambda server: ops.serving(server.address))

    def stop() -> None:
        ops.stopping()
        daemon.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await daemon.run()
    finally:
        await ops.close()
    return daemon.stepped_down


def _lead_tokens(config: LeaderConfig, holder: list[Any]) -> Callable[[str], str] | None:
    """mTLS: a single-use token of role subleader for one node id (a --can-lead worker's
    sub-leader the root promoted), valid for ten minutes."""
    if config.security != "mtls":
        return None

    def make(node_id: str) -> str:
        security = holder[0].security
        if security is None or security.authority is None:
            raise RuntimeError("this leader holds no cluster CA")
        return str(security.authority.new_token("subleader", 600.0, node_id=node_id))

    return make


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.upstream:
        from eddl.leader.subleader_daemon import main as sub_leader

        return sub_leader(args)
    try:
        config = load_config(LeaderConfig, "leader", args.config, _overrides(args))
        configure_logging("json", config.log_level)
        if config.security == "off":
            raise ConfigError("leader.security: a daemon runs mtls, or insecure on loopback")
        if config.link_interface:
            from eddl.profiler.interface import InterfaceCounter

            try:
                InterfaceCounter(config.link_interface)
            except ValueError as exc:
                raise ConfigError(f"leader.link_interface: {exc}") from exc
    except (ConfigError, ValueError) as exc:
        print(f"eddl-leader: configuration error: {exc}", file=sys.stderr)
        return 2
    log = get_logger("leader")
    # The state directory's lock comes first, before the server module (gRPC, numpy) is even
    # imported: a second leader on a directory in use changes nothing and exits at once.
    lock = StateDirLock(config.state_dir)
    try:
        lock.acquire()
    except (StateDirInUseError, OSError) as exc:
        print(f"eddl-leader: {exc}", file=sys.stderr)
        log.error("state directory in use", error=str(exc))
        return EXIT_STATE_DIR_IN_USE if isinstance(exc, StateDirInUseError) else 1
    from eddl.net.server import ServerStartError

    try:
        if asyncio.run(_serve(config, lock)):
            return EXIT_STEPPED_DOWN
    except (ServerStartError, LeaderError, ValueError) as exc:
        log.error("leader failed", error=str(exc))
        return 1
    finally:
        lock.release()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
