"""A candidate's election and replication metrics read from one HaNode (a stand-in here: the
real candidates on etcd are in tests/integration/test_ha_metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from eddl.leader.election import ElectionEvent, ElectionEventKind
from eddl.leader.ports import LeadershipState
from eddl.ops.ha_metrics import ha_snapshot
from eddl.ops.leader_metrics import LeaderSnapshot
from eddl.ops.wiring import leader_status_line


def _node(root: bool, events: list[ElectionEvent], standbys: list[dict[str, Any]]) -> Any:
    status = {"term": 7, "degraded": True, "committed_version": 12, "standbys": standbys}
    state = LeadershipState(7, root, "10.0.0.11:50051")
    return SimpleNamespace(
        status=lambda: status, events=events, leadership=SimpleNamespace(state=lambda: state)
    )


def test_root_changes_are_counted_once_per_new_root_and_lag_per_standby() -> None:
    events = [
        ElectionEvent(ElectionEventKind.FOLLOWING, 3, "10.0.0.12:50051", ""),
        ElectionEvent(ElectionEventKind.FOLLOWING, 3, "10.0.0.12:50051", "again"),
        ElectionEvent(ElectionEventKind.STANDING_BACK, 0, "", "a newer peer"),
        ElectionEvent(ElectionEventKind.TAKEOVER, 7, "10.0.0.11:50051", ""),
    ]
    standbys = [
        {"node_id": "pi2", "address": "10.0.0.12:50051", "version": 10, "lag": 2, "synced": True},
        {"node_id": "", "address": "10.0.0.13:50051", "version": 0, "lag": 12, "synced": False},
    ]
    snap = ha_snapshot(_node(True, events, standbys))
    assert snap.root_changes == 2 and snap.is_root and snap.degraded
    assert snap.elections == {
        "elected": 0, "takeover": 1, "step_down": 0, "following": 2, "standing_back": 1
    }  # fmt: skip
    assert [(s.node_id, s.lag_versions) for s in snap.standbys] == [
        ("pi2", 2),
        ("10.0.0.13:50051", 12),
    ]
    line = leader_status_line(LeaderSnapshot(True, 7), snap)
    assert line == "leader root serving, term 7, 0 node(s) alive, no job"


def test_a_standby_shows_no_replication_of_its_own() -> None:
    standbys = [{"node_id": "x", "address": "a:1", "version": 1, "lag": 1, "synced": True}]
    snap = ha_snapshot(_node(False, [], standbys))
    assert not snap.is_root and not snap.degraded and snap.standbys == ()
    line = leader_status_line(LeaderSnapshot(True, 0), snap)
    assert line == "leader standby, term 7, holds committed version 12"
    assert leader_status_line(LeaderSnapshot(False)) == "leader starting"
