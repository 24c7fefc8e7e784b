"""``eddl status``: an elected cluster's root, term, standbys and coordinator, in JSON and text."""

from __future__ import annotations

import io
import json

from rich.console import Console

from eddl.cli.statusview import print_status, status_dict
from eddl.proto.v1 import admin_pb2, common_pb2

HA = {
    "coordinator": "etcd://10.0.0.11:2379",
    "term": 42,
    "root": {"node_id": "pi1", "address": "10.0.0.11:50051"},
    "degraded": False,
    "committed_version": 7,
    "standbys": [
        {
            "node_id": "pi2",
            "address": "10.0.0.12:50051",
            "version": 7,
            "lag": 0,
            "synced": True,
            "error": "",
        },
    ],
}


def _reply(detail: dict[str, object]) -> admin_pb2.JobStatusReply:
    return admin_pb2.JobStatusReply(
        envelope=common_pb2.Envelope(job_id="j1", model_version=7, term=42),
        state="running",
        detail_json=json.dumps(detail),
    )


def test_status_json_names_the_root_its_standbys_and_the_coordinator() -> None:
    info = status_dict(_reply({"ha": HA, "other": 1}), admin_pb2.ListNodesReply())
    assert info["term"] == 42 and info["root"] == HA["root"]
    assert info["standbys"] == HA["standbys"] and info["coordinator"] == HA["coordinator"]
    assert info["replication_degraded"] is False
    assert info["detail"] == {"other": 1}  # the HA block is not repeated in detail
    out = io.StringIO()
    print_status(info, Console(file=out, width=200))
    assert "root pi1 at 10.0.0.11:50051; standbys pi2 v7 (lag 0)" in out.getvalue()


def test_a_lone_leader_reports_no_coordinator_and_a_degraded_root_says_so() -> None:
    info = status_dict(_reply({}), admin_pb2.ListNodesReply())
    assert info["coordinator"] == "" and info["standbys"] == [] and info["root"] == {}
    out = io.StringIO()
    print_status(info, Console(file=out, width=200))
    assert "coordinator" not in out.getvalue()
    degraded = status_dict(
        _reply({"ha": {**HA, "degraded": True, "standbys": []}}), admin_pb2.ListNodesReply()
    )
    out = io.StringIO()
    print_status(degraded, Console(file=out, width=200))
    assert "standbys none; replication DEGRADED" in out.getvalue()
