"""``eddl health HOST:PORT``: is the daemon there SERVING? (exit 0 yes, 1 no, 2 bad arguments)

    eddl health leader:50051             # a leader: SERVING while it listens
    eddl health 127.0.0.1:50061 --quiet  # a worker: SERVING while joined to a leader

Meant for Compose healthchecks and scripts; see :mod:`eddl.ops.health`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from eddl.ops.health import check_health
from eddl.security.tls import Identity

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "health",
        help="check a daemon's gRPC health (exit 0 when SERVING)",
        description="Ask the gRPC health service of a leader, worker or gateway whether it "
        "serves. Exit codes: 0 SERVING, 1 anything else (not serving, unreachable), "
        "2 bad arguments.",
    )
    p.add_argument("address", metavar="HOST:PORT", help="the daemon's gRPC address")
    p.add_argument(
        "--service", default="", help="one service's status, e.g. eddl.v1.Cluster (default: all)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default: 5)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing, exit code only")
    p.add_argument(
        "--pki-dir",
        help="call with the node identity in this directory, e.g. a daemon's own (default: "
        "the eddl command's admin certificate, if enrolled)",
    )
    p.set_defaults(func=_cmd_health)


def _cmd_health(args: argparse.Namespace) -> int:
    try:
        identity = Identity.load(Path(args.pki_dir)) if args.pki_dir else None
        result = asyncio.run(check_health(args.address, args.service, args.timeout, identity))
    except ValueError as exc:
        print(f"eddl health: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(result.line(), file=sys.stdout if result.serving else sys.stderr)
    return 0 if result.serving else 1
