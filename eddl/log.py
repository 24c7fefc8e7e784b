"""One logging namespace for EDDL, built on structlog.

Library code only calls :func:`get_logger`; entry points (daemons, the CLI) call
:func:`configure_logging` once. Daemons log JSON lines, people get a console renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

__all__ = ["configure_logging", "get_logger"]

NAMESPACE = "eddl"


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows its name, for ``add_logger_name``."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file)
        self.name = name


def get_logger(name: str = "", **initial: Any) -> Any:
    """Return a bound structlog logger under the ``eddl`` namespace (``eddl.<name>``)."""
    logger_name = f"{NAMESPACE}.{name}" if name else NAMESPACE
    return structlog.get_logger(logger_name, **initial)


def configure_logging(
    fmt: Literal["json", "console"] = "console",
    level: str | int = "INFO",
    stream: Any = None,
) -> None:
    """Configure structlog and the stdlib ``eddl`` logger. Call from entry points only."""
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        level = numeric
    out = stream if stream is not None else sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty() if hasattr(out, "isatty") else False
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *args: _NamedPrintLogger(out, str(args[0]) if args else NAMESPACE),
        cache_logger_on_first_use=False,
    )
    logging.getLogger(NAMESPACE).setLevel(level)
