"""``eddl logs [JOB]``: print a job's events, oldest first, from the leader's store.

    eddl logs                      # the latest job's events
    eddl logs J --follow           # then every new event, until the job ends
    eddl logs J --json             # one JSON object per line

The events come from the leader's ``WatchJob`` stream, asked for from the first one
(``after_seq`` 0). A finished job's stream ends with its final event. For a job still queued or
running, ``eddl logs`` prints the events so far (it stops reading once the stream has been
quiet for a second: the leader sends its stored events at once) and ``--follow`` goes on until
the job ends. ``--timeout`` bounds the whole command either way.

Exit codes: 0 the events were printed; 1 the leader refused (no such job) or could not be
reached, or ``--timeout`` passed first; 2 bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import grpc

from eddl.cli.admin_client import DEFAULT_LEADER, FINAL_EVENTS, LEADER_ENV, job_status, leader_error
from eddl.cli.statusview import describe_event
from eddl.config import ConfigError
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel

__all__ = ["LogsTimeoutError", "print_events", "register"]

_FINAL_STATES = frozenset({"completed", "failed", "cancelled"})
QUIET_S = 1.0  # without --follow: the stored events have all come once the stream pauses this long


class LogsTimeoutError(TimeoutError):
    """``--timeout`` passed before the events ended."""


async def print_events(
    address: str,
    job_id: str,
    emit: Callable[[admin_pb2.JobEvent], None],
    *,
    follow: bool,
    timeout_s: float,
) -> int:
    """Stream ``job_id``'s events from the first to ``emit``; the number of events.

    Ends at the job's final event; without ``follow``, also when a job that has not ended
    stops sending (its stored events are out). Raises :class:`LogsTimeoutError` after
    ``timeout_s``, and ``grpc.aio.AioRpcError`` when the leader refuses.
    """
    if not timeout_s > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {timeout_s}")
    status = await job_status(address, job_id)
    quiet = None if follow or status.state in _FINAL_STATES else QUIET_S
    count = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with admin_channel(address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        call = stub.WatchJob(admin_pb2.WatchJobRequest(job_id=job_id, after_seq=0))
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise LogsTimeoutError(f"stopped after {timeout_s:g} s, before the job ended")
                quieted = quiet is not None and quiet < left
                try:
                    async with asyncio.timeout(quiet if quieted else left):
                        event = await call.read()
                except TimeoutError:
                    if quieted:
                        return count  # the stored events are out; the job goes on
                    continue  # the deadline: raised above
                if event is grpc.aio.EOF:
                    return count
                emit(event)
                count += 1
                if event.kind in FINAL_EVENTS:
                    return count
        finally:
            call.cancel()


def _line(event: admin_pb2.JobEvent) -> str:
    return f"{event.seq:>5} {describe_event(event)}"


def _json_line(event: admin_pb2.JobEvent) -> str:
    data: Any = json.loads(event.data_json) if event.data_json else {}
    return json.dumps(
        {
            "job_id": event.job_id,
            "seq": event.seq,
            "at": event.at,
            "kind": event.kind,
            "model_version": event.model_version,
            "message": event.message,
            "data": data,
        },
        sort_keys=True,
    )


def _cmd_logs(args: argparse.Namespace) -> int:
    timeout = args.timeout if args.timeout is not None else (3600.0 if args.follow else 60.0)
    if not timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    render = _json_line if args.json else _line

    async def go() -> int:
        job_id = args.job or (await job_status(args.leader)).envelope.job_id
        await print_events(
            args.leader,
            job_id,
            lambda e: print(render(e), flush=True),
            follow=args.follow,
            timeout_s=timeout,
        )
        return 0

    try:
        return asyncio.run(go())
    except grpc.aio.AioRpcError as exc:
        print(leader_error(args.leader, exc), file=sys.stderr)
        return 1
    except LogsTimeoutError as exc:
        print(f"eddl logs: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "logs",
        help="print a job's events (--follow: until it ends)",
        description="Print a job's events, oldest first, from the leader: all of a finished "
        "job's, the events so far of a running one, and with --follow every new one until the "
        "job ends.",
    )
    p.add_argument("job", nargs="?", default="", help="job id (default: the latest job)")
    p.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until the job ends"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="give up after this many seconds (default: 60, with --follow 3600)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per event and line")
    p.add_argument(
        "--leader",
        metavar="HOST:PORT",
        default=os.environ.get(LEADER_ENV, DEFAULT_LEADER),
        help=f"leader address HOST:PORT (default: ${LEADER_ENV}, else {DEFAULT_LEADER})",
    )
    p.set_defaults(func=_cmd_logs)
