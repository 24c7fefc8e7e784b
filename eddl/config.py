"""Typed configuration: dataclasses filled from TOML, then ``EDDL_*`` environment, then flags.

Precedence (lowest to highest): dataclass defaults < TOML file < environment < explicit
overrides (command-line flags). Unknown keys are an error everywhere, so a typo in a config
file never silently falls back to a default.

Environment variables are named ``EDDL_<SECTION>_<FIELD>`` in upper case, for example
``EDDL_WORKER_LEADERS=127.0.0.1:50051,127.0.0.1:50052`` for ``WorkerConfig.leaders``
(section ``worker``). Lists are comma-separated; booleans accept 1/0/true/false/yes/no.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ConfigError", "check_address", "from_mapping", "load_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, or of the wrong type."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_mapping(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{where}: expected a boolean, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def check_address(value: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``HOST:PORT`` with a numeric port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT")


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return obj


def _env_values(cls: type[Any], section: str, environ: Mapping[str, str]) -> dict[str, str]:
    prefix = f"EDDL_{section.upper()}_"
    names = {f.name.upper(): f.name for f in dataclasses.fields(cls) if f.init}
    found: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith(prefix):
            field = key[len(prefix) :]
            if field not in names:
                raise ConfigError(
                    f"environment: unknown variable {key}; known: "
                    f"{sorted(prefix + n for n in names)}"
                )
            found[names[field]] = value
    return found


def load_config(
    cls: type[T],
    section: str,
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Load ``cls`` from ``[section]`` of a TOML file, ``EDDL_<SECTION>_*`` env vars and overrides.

    ``overrides`` values that are ``None`` are ignored (an unset flag).
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: {exc}") from exc
        extra = sorted(set(raw) - {section})
        if extra:
            raise ConfigError(f"config file {p}: unknown table(s) {extra}; expected [{section}]")
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {p}: [{section}] must be a table")
        data.update(table)
    data.update(_env_values(cls, section, os.environ if environ is None else environ))
    if overrides:
        data.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(cls, data, where=section)
