"""A profile for people: a JSON-ready dict and a rich table. ``None`` shows as "unknown"."""

from __future__ import annotations

import dataclasses
import datetime as dt
from enum import Enum
from typing import Any

from rich.table import Table

from eddl.profiler.profiles import Profile

__all__ = ["profile_table", "profile_to_dict"]


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def profile_to_dict(profile: Profile) -> dict[str, Any]:
    """Plain types only (enums by lower-case name, ``None`` kept as JSON null)."""
    raw = {
        "static": dataclasses.asdict(profile.static),
        "dynamic": None if profile.dynamic is None else dataclasses.asdict(profile.dynamic),
        "compute": [dataclasses.asdict(t) for t in profile.compute.throughput],
        "network": [dataclasses.asdict(link) for link in profile.network.links],
    }
    result: dict[str, Any] = _plain(raw)
    return result


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if name.endswith("_bytes") and isinstance(value, int):
        return f"{value / 2**20:,.1f} MiB"
    if name.endswith("bytes_per_second"):
        return f"{value * 8 / 1e6:,.2f} Mbit/s"
    if name == "rtt_seconds":
        return f"{value * 1e3:.2f} ms"
    if name in ("timestamp", "measured_at"):
        return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if name == "throttle_flags":
        return f"0x{value:x}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def profile_table(profile: Profile) -> Table:
    """One two-column table, a section per part of the profile."""
    table = Table(title=f"EDDL profile of {profile.static.node_id}", show_lines=False)
    table.add_column("field", style="bold")
    table.add_column("value")

    def section(title: str, obj: Any, prefix: str = "") -> None:
        table.add_section()
        table.add_row(f"[cyan]{title}[/cyan]", "")
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            shown = value.name.lower() if isinstance(value, Enum) else _fmt(f.name, value)
            table.add_row(f"{prefix}{f.name}", shown)

    section("static", profile.static)
    if profile.dynamic is not None:
        section("dynamic", profile.dynamic)
    for t in profile.compute.throughput:
        section(f"compute: {t.algorithm} {t.model}", t)
    for link in profile.network.links:
        section(f"network: {link.peer} ({link.source.name.lower()})", link)
    return table
