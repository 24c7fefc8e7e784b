"""The ``eddl`` command for people.

Each command group lives in its own module here and exposes ``register(subparsers)``, which adds
its sub-command(s) with ``set_defaults(func=...)``; ``func(args) -> int`` returns the exit code.
Add a module to ``COMMAND_MODULES`` to make it reachable. Only this entry point configures logging
and converts errors into exit codes; library code raises typed exceptions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from eddl.cli.help import Parser, add_version
from eddl.config import ConfigError
from eddl.log import configure_logging

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "eddl.cli.train",
    "eddl.cli.mcu",
    "eddl.cli.profile",
    "eddl.cli.jobs",
    "eddl.cli.logs",
    "eddl.cli.local",
    "eddl.cli.health",
    "eddl.cli.report",
    "eddl.cli.security",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="eddl",
        description="EDDL: distributed training across edge devices and microcontrollers.",
    )
    add_version(parser)
    parser.add_argument(
        "--log-level", default="WARNING", help="log level: DEBUG, INFO, WARNING or ERROR"
    )
    # Sub-parsers are made by the same class, so every command formats its help alike.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="the command to run")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging("console", args.log_level)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"eddl: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eddl: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
