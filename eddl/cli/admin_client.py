"""The ``eddl`` commands' client of a leader's Admin service.

Where the leader is (``--leader HOST:PORT``, else ``$EDDL_CLI_LEADER``, else 127.0.0.1:50051),
the calls (submit, status, node list, cancel, the event stream), a failed call told in one line,
and the not-leader redirects of a standby leader followed to the root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

from eddl.net.redirect import not_leader
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel
from eddl.security.tls import Identity

__all__ = [
    "DEFAULT_LEADER",
    "FINAL_EVENTS",
    "LEADER_ENV",
    "add_leader_option",
    "cancel_job",
    "job_status",
    "leader_error",
    "list_nodes",
    "submit_job",
    "talks_to_leader",
    "watch_job",
]

DEFAULT_LEADER = "127.0.0.1:50051"
LEADER_ENV = "EDDL_CLI_LEADER"
FINAL_EVENTS = frozenset({"job_completed", "job_cancelled", "job_failed"})


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


def talks_to_leader(
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


def add_leader_option(p: argparse.ArgumentParser) -> None:
    """The ``--leader HOST:PORT`` option, its default from the environment."""
    p.add_argument(
        "--leader",
        metavar="HOST:PORT",
        default=os.environ.get(LEADER_ENV, DEFAULT_LEADER),
        help=f"leader address HOST:PORT (default: ${LEADER_ENV}, else {DEFAULT_LEADER})",
    )
