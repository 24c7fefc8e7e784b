"""``python -m eddl.profiler``: the probe as plain processes (for scripts, tests, benchmarks).

    python -m eddl.profiler serve --bind 10.0.0.1:0     # prints "PROBE_PORT <port>", serves
    python -m eddl.profiler probe 10.0.0.1:50060 --payload-bytes 1048576   # prints JSON

``probe`` exits 1 with ``{"error": ..., "message": ...}`` on stdout when the probe fails.
People use ``eddl profile --serve-probe`` / ``eddl profile --probe`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence

from eddl.cli.help import Parser, add_version
from eddl.log import configure_logging
from eddl.profiler.probe import ProbeLimits, serve_probe
from eddl.profiler.probe_client import ProbeConfig, ProbeError, probe_peer

__all__ = ["build_parser", "main"]


def _serve(args: argparse.Namespace) -> int:
    limits = ProbeLimits(max_transfer_bytes=args.max_transfer_bytes)
    asyncio.run(serve_probe(args.bind, limits))
    return 0


def _probe(args: argparse.Namespace) -> int:
    config = ProbeConfig(
        payload_bytes=args.payload_bytes,
        chunk_bytes=args.chunk_bytes,
        repeats=args.repeats,
        timeout_s=args.timeout,
    )
    try:
        result = asyncio.run(probe_peer(args.peer, config))
    except ProbeError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        return 1
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m eddl.profiler", description=__doc__)
    add_version(parser)
    parser.add_argument("--log-level", default="WARNING", help="log level")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")
    serve = sub.add_parser("serve", help="serve the Probe service until SIGINT/SIGTERM")
    serve.add_argument("--bind", default="0.0.0.0:0", help="HOST:PORT (port 0: any free port)")
    serve.add_argument(
        "--max-transfer-bytes",
        type=int,
        default=ProbeLimits().max_transfer_bytes,
        help="largest transfer one probe may ask for",
    )
    serve.set_defaults(func=_serve)
    probe = sub.add_parser("probe", help="measure RTT and bandwidth to a Probe server")
    defaults = ProbeConfig()
    probe.add_argument("peer", help="HOST:PORT of a Probe server")
    probe.add_argument(
        "--payload-bytes",
        type=int,
        default=defaults.payload_bytes,
        help="bytes per timed transfer",
    )
    probe.add_argument(
        "--chunk-bytes", type=int, default=defaults.chunk_bytes, help="bytes per message"
    )
    probe.add_argument(
        "--repeats", type=int, default=defaults.repeats, help="timed transfers each way"
    )
    probe.add_argument(
        "--timeout", type=float, default=defaults.timeout_s, help="seconds for the whole probe"
    )
    probe.set_defaults(func=_probe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging("json", args.log_level)
    try:
        code: int = args.func(args)
    except ValueError as exc:  # a bad size, limit or address
        parser.error(str(exc))
    return code


if __name__ == "__main__":
    sys.exit(main())
