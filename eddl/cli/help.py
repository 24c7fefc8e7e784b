"""Help text shared by ``eddl`` and the daemons: defaults shown where they mean something, and
one ``--version`` for every entry point.

:class:`Parser` is an ``ArgumentParser`` whose help formatter appends ``(default: X)`` to an
option's help unless the text already speaks of its default. Unlike argparse's
``ArgumentDefaultsHelpFormatter`` it leaves out defaults that say nothing (``None``, ``False``,
an empty string): those options' help explains what happens when they are not given.
Sub-commands added with ``add_subparsers`` inherit the class, so every command of ``eddl`` gets
the same formatting without naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from eddl import __version__

__all__ = ["HelpFormatter", "Parser", "add_version", "config_defaults", "package_version"]

DISTRIBUTION = "eddl"


class HelpFormatter(argparse.HelpFormatter):
    """Append ``(default: %(default)s)`` to help that does not mention its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if text is None or text == argparse.SUPPRESS or "default" in text.lower():
            return text
        default = action.default
        # Identity, not equality: a default of 0 is worth showing, False (a flag) is not.
        unsaid = default is None or default is False or default is argparse.SUPPRESS
        if not action.option_strings or unsaid or default == "":
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that formats help with :class:`HelpFormatter` by default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    """The installed ``eddl`` distribution's version (the source's when it is not installed)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return __version__


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``PROG VERSION`` and exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


def config_defaults(cls: type[Any]) -> dict[str, Any]:
    """The default of every field of the configuration dataclass ``cls``, for help text (the
    class itself may refuse to be built from its defaults, e.g. without a required token)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
