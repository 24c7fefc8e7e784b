"""``--topologies auto`` of the fleet simulator: the root chooses its own split.

The root runs with ``--split auto`` and a declared link capacity (``--link-capacity-mbps``, the
policy's bandwidth signal; the link itself is loopback, not shaped, unless the benchmark
shapes it), the benchmark's sub-leader processes (``eddl-leader --upstream``: two in
:mod:`bench.fleet`, four in :mod:`bench.fleet_link`) join it and stand by as candidates, and
every device dials the root. Nothing is assigned by hand: the root's
:class:`~eddl.leader.splitting.SplitPolicy` decides to promote from the figures its sync
meter measures, its group edge plans the groups from the devices it measured, and the devices
it assigns follow the ``not-leader`` redirect to their sub-leader. What the root decided is
read back from its own log: the ``split_decision`` and ``regroup`` events (:func:`promotions`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "SPLIT_HOLD_S",
    "Promotion",
    "auto_flags",
    "describe_promotion",
    "promoted",
    "promotions",
]

SPLIT_HOLD_S = 30.0  # no second decision inside a short run: the table shows the first one


def auto_flags(link_mbps: float, interface: str = "") -> list[str]:
    """The root's flags for ``auto``: act on its decisions, against a link of ``link_mbps``
    (whose byte counters are ``interface``'s, when named)."""
    if not link_mbps > 0:
        raise ValueError(f"the root's link must be > 0 Mbit/s, got {link_mbps!r}")
    return [
        "--split",
        "auto",
        "--link-capacity-mbps",
        f"{link_mbps:g}",
        *(["--link-interface", interface] if interface else []),
        "--split-busy-for",
        "2",
        "--split-window",
        "5",
        "--split-hold",
        f"{SPLIT_HOLD_S:g}",
    ]


@dataclass(frozen=True)
class Promotion:
    """A promotion the root decided and the groups it formed, from its log."""

    at: datetime  # when the root formed the groups
    reason: str  # the policy's reason (its figures in words)
    workers: int  # the workers the root counted synchronising when it decided
    link_busy: float | None  # the link's busy share then
    groups: dict[str, list[str]]  # sub-leader -> the devices assigned to it


def promotions(log: Path) -> list[Promotion]:
    """The promotions in a root's JSON log (a ``split_decision`` with action ``promote``,
    then the ``regroup`` that formed its groups); lines that are not JSON are skipped."""
    found: list[Promotion] = []
    decision: dict[str, object] | None = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        event = entry.get("event")
        if event == "split_decision" and entry.get("action") == "promote":
            decision = entry
        elif event == "regroup" and entry.get("cause") == "promote" and decision is not None:
            busy = decision.get("link_busy")
            found.append(
                Promotion(
                    at=datetime.fromisoformat(str(entry["timestamp"])),
                    reason=str(decision.get("reason", "")),
                    # the workers synchronising (finished or under way), where the log has them
                    workers=int(str(decision.get("synchronising", decision.get("workers", 0)))),
                    link_busy=None if busy is None else float(str(busy)),
                    groups={str(k): [str(w) for w in v] for k, v in entry["groups"].items()},
                )
            )
            decision = None
    return found


def promoted(log: Path) -> bool:
    """Whether the root that writes ``log`` has promoted sub-leaders yet."""
    return log.exists() and bool(promotions(log))


def describe_promotion(first: Promotion, started: datetime, members: Sequence[int]) -> str:
    """One line for the report: when the root promoted, on what, and where devices ended."""
    busy = "unknown" if first.link_busy is None else f"{first.link_busy:.0%}"
    sizes = ", ".join(f"{leader}: {len(ws)} devices" for leader, ws in first.groups.items())
    at_end = ", ".join(str(m) for m in members)
    return (
        f"promoted {(first.at - started).total_seconds():.1f} s after the first device "
        f"started, at {first.workers} workers with the link {busy} busy ({first.reason}); "
        f"groups planned {sizes}; devices with each sub-leader at the end: {at_end}"
    )
