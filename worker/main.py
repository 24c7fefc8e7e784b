"""``eddl-worker``: run a worker daemon until SIGTERM/SIGINT, then leave the cluster cleanly."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Any

from eddl.cli.help import Parser, add_version, config_defaults
from eddl.config import ConfigError, load_config
from eddl.log import configure_logging, get_logger
from eddl.ops.wiring import WorkerOps
from eddl.worker.config import WorkerConfig
from eddl.worker.daemon import JoinRefusedError, WorkerDaemon
from eddl.worker.gateway import Gateway
from eddl.worker.leading import CanLead

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    d = config_defaults(WorkerConfig)
    p = Parser(
        prog="eddl-worker",
        description="EDDL worker daemon. Settings come from the [worker] table of --config, "
        "then EDDL_WORKER_<KEY> in the environment, then these flags (each overrides the "
        "ones before); the defaults below apply when none of them gives a key.",
    )
    add_version(p)
    p.add_argument("--config", help="TOML file with a [worker] table (default: none)")
    p.add_argument(
        "--leader",
        action="append",
        dest="leaders",
        metavar="HOST:PORT",
        help="leader address (repeat for a list, first preferred) "
        f"(default: {' '.join(d['leaders'])})",
    )
    p.add_argument("--node-id", help="node id (default: hostname-pid)")
    p.add_argument(
        "--join-token",
        help="the cluster's join token (the leader refuses a node without the right one)",
    )
    p.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        metavar="NAME",
        help="a dataset held locally (repeat); others are fetched from the leader "
        f"(default: {' '.join(d['datasets'])})",
    )
    p.add_argument(
        "--no-local-data",
        action="store_true",
        help="hold no dataset locally: fetch every sample from the leader",
    )
    p.add_argument(
        "--throttle",
        type=float,
        metavar="F",
        help=f"behave F times slower, F >= 1 (default: {d['throttle']})",
    )
    p.add_argument(
        "--bind",
        help="HOST:PORT of this worker's health/reflection/probe endpoint; '' serves nothing "
        f"(default: {d['bind']})",
    )
    p.add_argument(
        "--port-file", help="write the endpoint's bound port here once serving (default: none)"
    )
    p.add_argument(
        "--mcu",
        action="append",
        dest="mcu",
        metavar="URL",
        help="gateway mode: a microcontroller's serial URL or device path (repeat); each joins "
        "the cluster as a node of its own (default: none, a plain worker)",
    )
    p.add_argument(
        "--insecure",
        action="store_const",
        const="insecure",
        dest="security",
        help="plaintext to a loopback leader started with --insecure (default: mutual TLS)",
    )
    p.add_argument(
        "--pki-dir",
        help=f"directory of this node's key and certificate (default: {d['pki_dir']})",
    )
    p.add_argument(
        "--enrol-token",
        help="join token from `eddl token create`, used once when PKI_DIR has no certificate",
    )
    p.add_argument("--enrol-token-file", help="a file holding the enrol token (instead)")
    p.add_argument(
        "--bootstrap", help="HOST:PORT of the leader's bootstrap port (default: its port + 1)"
    )
    p.add_argument(
        "--can-lead",
        metavar="HOST:PORT",
        help="also offer to lead a group, served on HOST:PORT once the root promotes this "
        "worker (over mTLS with a certificate of role subleader the root issues on promotion; "
        "default: never leads)",
    )
    p.add_argument("--log-level", help=f"log level (default: {d['log_level']})")
    p.add_argument(
        "--metrics-bind", help="HOST:PORT of a Prometheus /metrics endpoint (default: none)"
    )
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "leaders": args.leaders,
        "node_id": args.node_id,
        "join_token": args.join_token,
        "datasets": [] if args.no_local_data else args.datasets,
        "throttle": args.throttle,
        "log_level": args.log_level,
        "bind": args.bind,
        "port_file": args.port_file,
        "mcu": args.mcu,
        "metrics_bind": args.metrics_bind,
        "security": args.security,
        "pki_dir": args.pki_dir,
        "enrol_token": args.enrol_token,
        "enrol_token_file": args.enrol_token_file,
        "bootstrap": args.bootstrap,
        "can_lead": args.can_lead,
    }


async def _serve(config: WorkerConfig) -> None:
    daemon: WorkerDaemon | Gateway = Gateway(config) if config.mcu else WorkerDaemon(config)
    ops = WorkerOps(config.metrics_bind, daemon)
    daemon.on_serving.append(ops.serving)

    def stop() -> None:
        ops.stopping()
        daemon.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # --can-lead: the sub-leader beside the worker loop (eddl.worker.leading).
    lead = None
    if config.can_lead and isinstance(daemon, WorkerDaemon):
        lead = CanLead(config)
        daemon.on_lead_token.append(lead.promoted)
        await lead.stand_by()
    try:
        await daemon.run()
    finally:
        if lead is not None:
            await lead.stop()
        await ops.close()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(WorkerConfig, "worker", args.config, _overrides(args))
        configure_logging("json", config.log_level)
        if config.security == "off":
            raise ConfigError("worker.security: a daemon runs mtls, or insecure")
    except (ConfigError, ValueError) as exc:
        print(f"eddl-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    log = get_logger("worker")
    try:
        asyncio.run(_serve(config))
    except Exception as exc:
        # The daemons' TaskGroups report a failed loop inside (nested) ExceptionGroups.
        errors = _leaves(exc)
        refused = [e for e in errors if isinstance(e, JoinRefusedError)]
        if refused:
            log.error("join refused", error=str(refused[0]))
            return 3
        log.error("worker failed", error=repr(errors[0]))
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
