"""A leader candidate's election and replication metrics (``--coordinator etcd://...``).

:func:`ha_snapshot` reads one typed :class:`HaSnapshot` from a candidate's
:class:`~eddl.leader.ha.HaNode` at scrape time (its status, its election events); the
:func:`ha_families` turn it into metric families. A lone leader has no ``HaNode`` and shows
none of these.

Labels stay bounded: ``outcome`` takes the election's event kinds only, and ``standby`` the
node ids of the other live candidates (three or five in a cluster), listed at the scrape only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["ELECTION_OUTCOMES", "HaSnapshot", "StandbyLag", "ha_families", "ha_snapshot"]

# The kinds of leader.election.ElectionEventKind, in a fixed order (every one always listed).
ELECTION_OUTCOMES = ("elected", "takeover", "step_down", "following", "standing_back")


@dataclass(frozen=True)
class StandbyLag:
    """One standby as the root's replicator sees it."""

    node_id: str
    version: int  # newest version it acknowledged
    lag_versions: int  # versions behind the root
    synced: bool


@dataclass(frozen=True)
class HaSnapshot:
    term: int
    is_root: bool
    root_changes: int  # times the root this candidate knows of changed
    elections: dict[str, int]  # outcome -> events of that kind
    committed_version: int
    degraded: bool
    standbys: tuple[StandbyLag, ...]

    @property
    def role(self) -> str:
        return "root" if self.is_root else "standby"


def ha_snapshot(ha: Any) -> HaSnapshot:
    """From a :class:`~eddl.leader.ha.HaNode`: its ``status()``, gated leadership and events."""
    status = ha.status()
    events = list(ha.events)
    elections = dict.fromkeys(ELECTION_OUTCOMES, 0)
    changes, root = 0, ""
    for event in events:
        kind = str(getattr(event.kind, "value", event.kind))
        if kind in elections:
            elections[kind] += 1
        if event.root and event.root != root:
            changes, root = changes + 1, event.root
    is_root = bool(ha.leadership.state().is_root)  # elected, and the job resumed
    standbys = tuple(
        StandbyLag(
            str(s["node_id"] or s["address"]), int(s["version"]), int(s["lag"]), bool(s["synced"])
        )
        for s in status["standbys"]
    )
    return HaSnapshot(
        term=int(status["term"]),
        is_root=is_root,
        root_changes=changes,
        elections=elections,
        committed_version=int(status["committed_version"] or 0),
        degraded=bool(status["degraded"]) and is_root,
        standbys=standbys if is_root else (),
    )


def ha_families(snap: HaSnapshot) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "eddl_leader_is_root", "1 while this candidate acts as the elected root",
        value=float(snap.is_root),
    )  # fmt: skip
    elections = CounterMetricFamily(
        "eddl_leader_elections",
        "this candidate's election events, by outcome (elected, takeover: it became root; "
        "step_down: it stopped; following: another became root; standing_back: it let a "
        "better candidate stand)",
        labels=["outcome"],
    )
    for outcome in ELECTION_OUTCOMES:
        elections.add_metric([outcome], snap.elections.get(outcome, 0))
    yield elections
    yield CounterMetricFamily(
        "eddl_leader_root_changes", "changes of the root this candidate saw (its first included)",
        value=snap.root_changes,
    )  # fmt: skip
    yield GaugeMetricFamily(
        "eddl_replication_committed_version",
        "newest model version acknowledged by the root and its standbys (from etcd)",
        value=snap.committed_version,
    )
    yield GaugeMetricFamily(
        "eddl_replication_degraded",
        "1 while the root acknowledges with fewer standbys than min_replicas (0 on a standby)",
        value=float(snap.degraded),
    )
    yield GaugeMetricFamily(
        "eddl_replication_standbys", "live standbys the root replicates to (0 on a standby)",
        value=len(snap.standbys),
    )  # fmt: skip
    lag = GaugeMetricFamily(
        "eddl_replication_lag_versions",
        "model versions a standby is behind the root, by standby node id (on the root only)",
        labels=["standby"],
    )
    synced = GaugeMetricFamily(
        "eddl_replication_synced",
        "1 when a standby holds the root's state (after its snapshot), by standby node id",
        labels=["standby"],
    )
    for standby in sorted(snap.standbys, key=lambda s: s.node_id):
        lag.add_metric([standby.node_id], standby.lag_versions)
        synced.add_metric([standby.node_id], float(standby.synced))
    yield lag
    yield synced
