"""``eddl submit | status | watch | cancel``: talk to a running leader's Admin service.

Every command takes ``--leader HOST:PORT`` (default ``$EDDL_CLI_LEADER`` or 127.0.0.1:50051).
``status`` and ``submit`` print JSON with ``--json``. Exit codes: 0 ok, 1 the leader refused or
could not be reached (its message is printed) or the watched job failed or was cancelled, 2 a
bad job file. ``submit`` checks the job as the leader will (:func:`read_job_file`) before it
sends anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from eddl.config import ConfigError
from eddl.jobcheck import DEFAULT_MODEL_BYTES, JobLimits, check_spec
from eddl.jobspec import JobSpec, JobSpecError, job_table
from eddl.net.redirect import not_leader
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel
from eddl.security.tls import Identity

__all__ = [
    "FINAL_EVENTS",
    "JobFileError",
    "describe_device",
    "describe_event",
    "job_placement",
    "job_status",
    "leader_error",
    "list_nodes",
    "meta_lines",
    "read_job_file",
    "register",
    "status_dict",
    "submit_job",
    "watch_job",
]

DEFAULT_LEADER = "127.0.0.1:50051"
LEADER_ENV = "EDDL_CLI_LEADER"
ADMIN_TOKEN_ENV = "EDDL_CLI_ADMIN_TOKEN"
FINAL_EVENTS = frozenset({"job_completed", "job_cancelled", "job_failed"})


class JobFileError(JobSpecError):
    """A job file cannot be read, or the job in it is invalid; the message is one line."""


def read_job_file(path: str | Path, limits: JobLimits | None = None) -> dict[str, Any]:
    """The ``[job]`` table of a TOML job file, checked as the leader will check it.

    The file is parsed and the job validated by the leader's own code (:mod:`eddl.jobspec`,
    then :func:`eddl.jobcheck.check_job`: dataset, model, hyper-parameters and the memory
    ``limits``), so a job no worker could run never leaves this machine. Any problem raises
    :class:`JobFileError` with a one-line message naming the file and the key at fault. The
    table is returned as written (the leader resolves the model and assigns an id itself).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        raise JobFileError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFileError(f"{p}: cannot read it: {exc}") from exc
    try:
        table = job_table(text)
        # The id only completes the spec for the check; the leader gives the job its own.
        check_spec(JobSpec.from_mapping(table, job_id="checked-locally"), limits)
    except JobSpecError as exc:
        raise JobFileError(f"{p}: {' '.join(str(exc).split())}") from exc
    return table


# -- calls ----------------------------------------------------------------------------------


async def submit_job(
    address: str, spec: dict[str, Any], admin_token: str = "", *, identity: Identity | None = None
) -> str:
    async with admin_channel(address, identity) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        reply = await stub.SubmitJob(
            admin_pb2.SubmitJobRequest(spec_json=json.dumps(spec), admin_token=admin_token),
            timeout=30,
        )
        return str(reply.envelope.job_id)


async def job_status(
    address: str, job_id: str = "", *, identity: Identity | None = None
) -> admin_pb2.JobStatusReply:
    async with admin_channel(address, identity) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        reply: admin_pb2.JobStatusReply = await stub.JobStatus(
            admin_pb2.JobStatusRequest(job_id=job_id), timeout=10
        )
        return reply


async def list_nodes(address: str, *, identity: Identity | None = None) -> admin_pb2.ListNodesReply:
    async with admin_channel(address, identity) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        reply: admin_pb2.ListNodesReply = await stub.ListNodes(
            admin_pb2.ListNodesRequest(), timeout=10
        )
        return reply


async def cancel_job(
    address: str, job_id: str, admin_token: str = "", *, identity: Identity | None = None
) -> str:
    async with admin_channel(address, identity) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        reply = await stub.CancelJob(
            admin_pb2.CancelJobRequest(job_id=job_id, admin_token=admin_token), timeout=10
        )
        return str(reply.state)


async def watch_job(
    address: str,
    job_id: str,
    on_event: Callable[[admin_pb2.JobEvent], None],
    *,
    timeout_s: float | None = None,
    identity: Identity | None = None,
) -> admin_pb2.JobEvent | None:
    """Stream the job's events to ``on_event`` until it ends; return the final event."""
    async with admin_channel(address, identity) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        stream = stub.WatchJob(admin_pb2.WatchJobRequest(job_id=job_id), timeout=timeout_s)
        event: admin_pb2.JobEvent
        async for event in stream:
            on_event(event)
            if event.kind in FINAL_EVENTS:
                return event
    return None


# -- rendering ------------------------------------------------------------------------------


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


def _print_status(info: dict[str, Any], console: Console) -> None:
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


# -- commands -------------------------------------------------------------------------------


def leader_error(address: str, exc: grpc.aio.AioRpcError) -> str:
    """One line for a failed call. When the leader could not be reached (or did not answer in
    time), it says where the CLI looked, where that address came from (``--leader``, else
    ``$EDDL_CLI_LEADER``, else the default) and how to give another one."""
    code = exc.code()
    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return f"eddl: leader refused: {code.name}: {exc.details()}"
    from_env = os.environ.get(LEADER_ENV)
    if address != (from_env or DEFAULT_LEADER):
        source = "given with --leader"
    elif from_env:
        source = f"from ${LEADER_ENV}"
    else:
        source = "the default"
    what = "no leader reachable at" if code == grpc.StatusCode.UNAVAILABLE else "no answer from"
    return (
        f"eddl: {what} {address} ({source}): {code.name}: {exc.details()}\n"
        f"eddl: give the leader's address with --leader HOST:PORT or {LEADER_ENV}=HOST:PORT"
    )


# Leaders that are not the root point to it; more hops than this means they disagree.
_MAX_REDIRECTS = 3


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _talks_to_leader(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``command`` with a failed call to the leader turned into a message and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        for _ in range(_MAX_REDIRECTS + 1):
            try:
                return command(args)
            except grpc.aio.AioRpcError as exc:
                redirect = not_leader(exc, args.leader)
                if redirect is None or not redirect.hint or redirect.hint == args.leader:
                    print(leader_error(args.leader, exc), file=sys.stderr)
                    return 1
                # A standby leader names the root: ask there (a refused call changed nothing).
                print(f"eddl: {redirect}; asking {redirect.hint}", file=sys.stderr)
                args.leader = redirect.hint
        print(f"eddl: more than {_MAX_REDIRECTS} not-leader redirects; giving up", file=sys.stderr)
        return 1

    return run


def _cmd_submit(args: argparse.Namespace) -> int:
    try:
        limits = JobLimits(max_model_bytes=args.max_model_mib * 1024 * 1024)
        spec = read_job_file(args.job_file, limits)
    except (JobFileError, ValueError) as exc:
        print(f"eddl: {exc}", file=sys.stderr)
        return 2

    async def go() -> int:
        job_id = await submit_job(args.leader, spec, args.admin_token)
        if args.json:
            print(json.dumps({"job_id": job_id}))
        else:
            print(f"submitted {job_id}")
        if args.watch:
            final = await watch_job(
                args.leader, job_id, lambda e: print(describe_event(e), flush=True)
            )
            return 0 if final is None or final.kind == "job_completed" else 1
        return 0

    return _run(go())


def _cmd_status(args: argparse.Namespace) -> int:
    async def go() -> int:
        wanted = _job_of(args)
        try:
            job = await job_status(args.leader, wanted)
        except grpc.aio.AioRpcError as exc:
            # No job yet is still a status worth showing (the nodes); a named job must exist.
            if exc.code() != grpc.StatusCode.NOT_FOUND or wanted:
                raise
            job = admin_pb2.JobStatusReply(state="no job", accuracy=-1.0)
        info = status_dict(job, await list_nodes(args.leader))
        if args.json:
            print(json.dumps(info, indent=2, sort_keys=True))
        else:
            _print_status(info, Console())
        return 0

    return _run(go())


def _cmd_watch(args: argparse.Namespace) -> int:
    async def go() -> int:
        job_id = _job_of(args) or (await job_status(args.leader)).envelope.job_id
        final = await watch_job(args.leader, job_id, lambda e: print(describe_event(e), flush=True))
        return 0 if final is None or final.kind == "job_completed" else 1

    return _run(go())


def _cmd_cancel(args: argparse.Namespace) -> int:
    async def go() -> int:
        state = await cancel_job(args.leader, args.job, args.admin_token)
        print(f"{args.job}: {state}")
        return 0

    return _run(go())


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--leader",
        metavar="HOST:PORT",
        default=os.environ.get(LEADER_ENV, DEFAULT_LEADER),
        help=f"leader address HOST:PORT (default: ${LEADER_ENV}, else {DEFAULT_LEADER})",
    )


def _job_argument(p: argparse.ArgumentParser) -> None:
    """The job id, positional or as ``--job`` (default: the latest job)."""
    p.add_argument("job_id", nargs="?", default="", help="job id (default: the latest job)")
    p.add_argument("--job", dest="job_option", default="", help="job id, as an option")


def _job_of(args: argparse.Namespace) -> str:
    if args.job_id and args.job_option and args.job_id != args.job_option:
        raise ConfigError(f"two different job ids: {args.job_id} and {args.job_option}")
    return str(args.job_id or args.job_option)


def _admin_token(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin-token",
        default=os.environ.get(ADMIN_TOKEN_ENV, ""),
        help=f"the leader's admin token (default: ${ADMIN_TOKEN_ENV}, else none)",
    )


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("submit", help="submit a job file ([job] table) to a leader")
    p.add_argument("job_file", help="TOML file with a [job] table")
    _admin_token(p)
    p.add_argument(
        "--watch", action="store_true", help="then stream the job's events until it ends"
    )
    p.add_argument(
        "--max-model-mib",
        type=int,
        default=DEFAULT_MODEL_BYTES // (1024 * 1024),
        help="memory a job's model may need, checked before sending: the leader's "
        "max_model_mib (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help='print {"job_id": ...} as JSON')
    _common(p)
    p.set_defaults(func=_talks_to_leader(_cmd_submit))

    p = subparsers.add_parser("status", help="job state, policy and why, nodes and profiles")
    _job_argument(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _common(p)
    p.set_defaults(func=_talks_to_leader(_cmd_status))

    p = subparsers.add_parser("watch", help="stream a job's events until it ends")
    _job_argument(p)
    _common(p)
    p.set_defaults(func=_talks_to_leader(_cmd_watch))

    p = subparsers.add_parser("cancel", help="cancel a job")
    p.add_argument("job", help="id of the job to cancel")
    _admin_token(p)
    _common(p)
    p.set_defaults(func=_talks_to_leader(_cmd_cancel))
