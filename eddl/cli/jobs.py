"""``eddl submit | status | watch | cancel``: talk to a running leader's Admin service.

Every command takes ``--leader HOST:PORT`` (default ``$EDDL_CLI_LEADER`` or 127.0.0.1:50051).
``status`` and ``submit`` print JSON with ``--json``. Exit codes: 0 ok, 1 the leader refused or
could not be reached (its message is printed) or the watched job failed or was cancelled, 2 a
bad job file. ``submit`` checks the job as the leader will (:func:`read_job_file`) before it
sends anything. The calls are in :mod:`eddl.cli.admin_client`, the rendering of a status in
:mod:`eddl.cli.statusview`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console

from eddl.cli.admin_client import (
    add_leader_option,
    cancel_job,
    job_status,
    list_nodes,
    submit_job,
    talks_to_leader,
    watch_job,
)
from eddl.cli.statusview import describe_event, print_status, status_dict
from eddl.config import ConfigError
from eddl.jobcheck import DEFAULT_MODEL_BYTES, JobLimits, check_spec
from eddl.jobspec import JobSpec, JobSpecError, job_table
from eddl.proto.v1 import admin_pb2

__all__ = ["JobFileError", "read_job_file", "register"]

ADMIN_TOKEN_ENV = "EDDL_CLI_ADMIN_TOKEN"


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


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


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
            print_status(info, Console())
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
    add_leader_option(p)
    p.set_defaults(func=talks_to_leader(_cmd_submit))

    p = subparsers.add_parser("status", help="job state, policy and why, nodes and profiles")
    _job_argument(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    add_leader_option(p)
    p.set_defaults(func=talks_to_leader(_cmd_status))

    p = subparsers.add_parser("watch", help="stream a job's events until it ends")
    _job_argument(p)
    add_leader_option(p)
    p.set_defaults(func=talks_to_leader(_cmd_watch))

    p = subparsers.add_parser("cancel", help="cancel a job")
    p.add_argument("job", help="id of the job to cancel")
    _admin_token(p)
    add_leader_option(p)
    p.set_defaults(func=talks_to_leader(_cmd_cancel))
