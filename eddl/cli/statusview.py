"""A job's status as the CLI shows it: a JSON-ready dict, and lines and a table for people.

:func:`status_dict` turns the leader's ``JobStatus`` and ``ListNodes`` replies into the dict
that ``eddl status --json`` prints; :func:`print_status` renders it; :func:`job_placement`,
:func:`meta_lines`, :func:`describe_device` and :func:`describe_event` are the pieces that other
commands (``eddl local``, ``eddl logs``) print too.
"""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from eddl.proto.v1 import admin_pb2

__all__ = [
    "describe_device",
    "describe_event",
    "job_placement",
    "meta_lines",
    "print_status",
    "status_dict",
]


def status_dict(
    status: admin_pb2.JobStatusReply, nodes: admin_pb2.ListNodesReply
) -> dict[str, Any]:
    detail = json.loads(status.detail_json) if status.detail_json else {}
    # An elected cluster's root, its standbys and the coordination service (empty otherwise).
    ha = detail.pop("ha", None) if isinstance(detail, dict) else None
    ha = ha if isinstance(ha, dict) else {}
    return {
        "job_id": status.envelope.job_id,
        "term": status.envelope.term,
        "state": status.state,
        "model_version": status.envelope.model_version,
        "round": status.round,
        "accuracy": status.accuracy,
        "policy": status.policy,
        "policy_reason": status.policy_reason,
        "rule": status.rule,
        "workers": status.workers,
        "samples_trained": status.samples_trained,
        "switches": [
            {
                "at": round(w.at, 3),
                "model_version": w.model_version,
                "previous": w.previous,
                "policy": w.policy,
                "reason": w.reason,
            }
            for w in status.switches
        ],
        "detail": detail,
        "nodes": [_node_dict(n) for n in nodes.nodes],
        "coordinator": ha.get("coordinator", ""),
        "root": ha.get("root", {}),
        "standbys": ha.get("standbys", []),
        "replication_degraded": bool(ha.get("degraded", False)),
    }


def _node_dict(n: admin_pb2.NodeStatus) -> dict[str, Any]:
    profile = json.loads(n.profile_json) if n.profile_json else {}
    row = profile.get("node") if isinstance(profile, dict) else None
    mcu = row.get("mcu") if isinstance(row, dict) else None
    return {
        "node_id": n.node_id,
        "role": n.role,
        "state": n.state,
        "last_seen_s": round(n.last_seen_s, 3),
        "samples_per_second": round(n.samples_per_second, 1),
        "current_task": n.current_task,
        "tasks_done": n.tasks_done,
        "samples_trained": n.samples_trained,
        # A microcontroller: its gateway, board, arena and the job algorithms it runs.
        "mcu": mcu if isinstance(mcu, dict) else None,
        "profile": profile,
    }


def job_placement(detail: dict[str, Any]) -> list[str]:
    """Lines on who trains what: single-layer groups, nodes that cannot run the job, updates
    refused by the sanity bound and quarantined nodes."""
    lines = []
    groups = detail.get("layer_groups")
    if isinstance(groups, dict) and groups:
        parts = [
            f"{layer}: {', '.join(members) if members else '-'}"
            for layer, members in sorted(groups.items(), key=lambda kv: int(kv[0]))
        ]
        lines.append("layer groups  " + "; ".join(parts))
    unable = detail.get("unable_nodes")
    if isinstance(unable, dict):
        lines.extend(f"cannot run this job: {node}: {why}" for node, why in sorted(unable.items()))
    sanity = detail.get("sanity")
    if isinstance(sanity, dict):
        refused = sanity.get("refused") or {}
        quarantined = sanity.get("quarantined") or {}
        if isinstance(refused, dict) and refused:
            counts = ", ".join(f"{node} {n}" for node, n in sorted(refused.items()))
            lines.append(f"updates refused (sanity)  {counts}")
        if isinstance(quarantined, dict):
            lines.extend(f"quarantined: {node}: {why}" for node, why in sorted(quarantined.items()))
    meta = detail.get("meta") or (detail.get("result") or {}).get("meta")
    if isinstance(meta, dict):
        lines.extend(meta_lines(meta))
    return lines


def meta_lines(meta: dict[str, Any]) -> list[str]:
    """A meta-learning job's few-shot score and the bytes its devices uploaded."""
    score, best = meta.get("few_shot"), meta.get("best_few_shot")
    pct = meta.get("metric") == "accuracy"

    def fmt(v: Any) -> str:
        return "-" if not isinstance(v, int | float) else f"{v:.2%}" if pct else f"{v:.4f}"

    per = meta.get("upload_bytes_per_device_round")
    lines = [
        f"few-shot {meta.get('metric')} at k = {meta.get('shots')} on "
        f"{meta.get('held_out')} held-out devices: {fmt(score)} (best {fmt(best)})",
        f"uploads {meta.get('uploads')} ({meta.get('sparse_uploads')} sparse): "
        f"{'-' if per is None else f'{per:,.0f}'} B per device per round on the wire; "
        f"dense shared layers {meta.get('dense_model_bytes', 0):,} B",
    ]
    devices = meta.get("device_of")
    if isinstance(devices, dict) and devices:
        lines.append("device tasks  " + ", ".join(f"{n}: {t}" for n, t in sorted(devices.items())))
    return lines


def describe_device(node: dict[str, Any]) -> str:
    """What kind of node this is, in a few words: an MCU's board, arena, algorithms, gateway."""
    mcu = node.get("mcu")
    if not isinstance(mcu, dict):
        return "-"
    algorithms = mcu.get("algorithms") or []
    arena = mcu.get("arena_bytes") or 0
    return (
        f"{mcu.get('board') or '?'}, arena {int(arena):,} B, "
        f"{'/'.join(str(a) for a in algorithms) or 'no job algorithm'} "
        f"via {mcu.get('gateway_id') or '?'}"
    )


def describe_event(event: admin_pb2.JobEvent) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at)) if event.at > 1e9 else ""
    return f"{stamp} v{event.model_version} {event.kind}: {event.message}".strip()


def print_status(info: dict[str, Any], console: Console) -> None:
    acc = info["accuracy"]
    console.print(
        f"job [bold]{info['job_id'] or '-'}[/] {info['state']}  version {info['model_version']}  "
        f"round {info['round']}  accuracy {'-' if acc < 0 else f'{acc:.2%}'}  term {info['term']}"
    )
    console.print(
        f"policy [bold]{info['policy'] or '-'}[/] ({info['policy_reason'] or '-'}); "
        f"rule {info['rule'] or '-'}; samples trained {info['samples_trained']}"
    )
    if info.get("coordinator"):
        root = info.get("root") or {}
        standbys = ", ".join(
            f"{s.get('node_id') or s.get('address')} v{s.get('version')} (lag {s.get('lag')})"
            for s in info.get("standbys", [])
        )
        console.print(
            f"root {root.get('node_id') or '?'} at {root.get('address') or '?'}; standbys "
            f"{standbys or 'none'}"
            f"{'; replication DEGRADED' if info.get('replication_degraded') else ''}; "
            f"coordinator {info['coordinator']}",
            markup=False,
        )
    for w in info["switches"]:
        console.print(
            f"  switched {w['previous']} -> {w['policy']} at version {w['model_version']}: "
            f"{w['reason']}",
            markup=False,
        )
    table = Table(
        "node", "role", "device", "state", "seen (s)", "samples/s", "task", "done", "samples"
    )
    for n in info["nodes"]:
        table.add_row(
            n["node_id"],
            n["role"],
            describe_device(n),
            n["state"],
            f"{n['last_seen_s']:.1f}",
            f"{n['samples_per_second']:.0f}",
            n["current_task"] or "-",
            str(n["tasks_done"]),
            str(n["samples_trained"]),
        )
    console.print(table)
    for line in job_placement(info.get("detail") or {}):
        console.print(line, markup=False)
