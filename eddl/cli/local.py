"""``eddl local``: a whole cluster on this machine — a leader and N workers as real processes.

    eddl local --workers 4 --throttle 1,1,2,4

starts a :class:`~eddl.cluster.local.LocalCluster` (the leader on a loopback port chosen by the
OS, N workers; ``--throttle`` makes worker i behave F_i times slower, to show heterogeneity),
submits the default job (digits, shipped with EDDL; or ``--job FILE``), shows live progress
(version, accuracy, policy, per-node samples/s and tasks, joins and other events: a live table
on a terminal, plain lines otherwise), prints the result and stops every process: workers
first, then the leader, SIGKILL after a grace period. ``--json`` prints only the result.

    eddl local --workers 2 --mcu 2 [--mcu-kind host|qemu]

adds a gateway worker bridging N emulated microcontrollers (the firmware's host simulator, or
QEMU boards with 64 KB of RAM) and trains the MCU job instead: TIFeD on digits, a network that
fits a 64 KB arena, trained by the Python workers with the numpy reference and by the MCUs
with the firmware, aggregated together. The emulated devices are built on first use from the
firmware sources shipped in the package (``make`` and a C compiler; QEMU also needs
``qemu-system-arm`` and ``gcc-arm-none-eabi``), see :mod:`eddl.mcu.build`.

State and logs go to a temporary folder that is removed at exit when the job completes or the
command is stopped, and kept (its path printed) when the job or the cluster fails;
``--state-dir`` puts them in a folder that is always kept. ``--report DIR`` writes the job's
HTML report (:mod:`eddl.ops.report`, needs the ``[report]`` extra) into DIR once the cluster
has stopped, before the state folder is removed.

Exit codes: 0 the job completed (and its report, if asked for, was written); 1 it did not, or
the cluster failed, or the report could not be written; 2 bad options or job file;
128 + N when stopped by signal N (SIGINT 130, SIGTERM 143, SIGHUP 129). SIGINT, SIGTERM and
SIGHUP all stop the cluster the same way: processes stopped in order, temporary folder removed;
a second signal while stopping is ignored (the stop is bounded by its grace periods). If this
process is killed outright (SIGKILL), the kernel kills the cluster's processes too
(``PR_SET_PDEATHSIG``, see :mod:`eddl.childproc`), but the temporary folder stays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from eddl.cli.admin_client import submit_job, watch_job
from eddl.cli.jobs import JobFileError, read_job_file
from eddl.cli.progress import Progress, ProgressView, make_view
from eddl.cli.statusview import meta_lines
from eddl.cli.stopping import StopOnSignals, Stopped
from eddl.cluster.local import (
    DEFAULT_JOB,
    MCU_JOB,
    MCU_KINDS,
    LocalCluster,
    LocalClusterError,
    parse_throttles,
)
from eddl.ops.report import MISSING_MATPLOTLIB, ReportError, matplotlib_available, write_report
from eddl.ops.run_data import RunDataError, find_store, load_run
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel

__all__ = ["DEFAULT_JOB", "MCU_JOB", "register", "run_local"]

_POLL_S = 0.5


async def _look(cluster: LocalCluster, progress: Progress, view: ProgressView) -> None:
    """One look at the node table (joins and departures included) and the job's status."""
    async with admin_channel(cluster.address, cluster.identity) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        nodes = await stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
        for line in progress.update_nodes(nodes):
            view.note(line)
        if progress.job_id:
            status = await stub.JobStatus(
                admin_pb2.JobStatusRequest(job_id=progress.job_id), timeout=10
            )
            progress.update_status(status, time.monotonic())
    view.refresh(progress)


async def _follow(cluster: LocalCluster, progress: Progress, view: ProgressView) -> None:
    """Look every ``_POLL_S`` until cancelled."""
    while True:
        await _look(cluster, progress, view)
        await asyncio.sleep(_POLL_S)


async def run_local(
    args: argparse.Namespace,
    cluster: LocalCluster,
    spec: dict[str, Any],
    view: ProgressView,
    progress: Progress,
) -> dict[str, Any]:
    """Wait for every node of the started ``cluster``, run ``spec`` on it; the result."""
    started = time.monotonic()
    follower = asyncio.create_task(_follow(cluster, progress, view))

    def on_event(event: admin_pb2.JobEvent) -> None:
        line = progress.on_event(event)
        if line is not None:
            view.note(line)

    try:
        await cluster.wait_for_nodes(timeout_s=args.timeout)
        await _look(cluster, progress, view)  # every join shown before the job
        job_id = progress.job_id = await submit_job(
            cluster.address, spec, identity=cluster.identity
        )
        view.note(
            f"job {job_id}: {spec.get('algorithm')} on {spec.get('dataset')}, "
            f"{spec.get('aggregation', 'auto')} aggregation"
        )
        try:
            async with asyncio.timeout(args.timeout):
                final = await watch_job(
                    cluster.address, job_id, on_event, identity=cluster.identity
                )
        except TimeoutError as exc:
            raise LocalClusterError(f"the job did not finish within {args.timeout:.0f} s") from exc
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await follower
    await _look(cluster, progress, view)
    async with admin_channel(cluster.address, cluster.identity) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        status = await stub.JobStatus(admin_pb2.JobStatusRequest(job_id=job_id), timeout=10)
    detail = json.loads(status.detail_json) if status.detail_json else {}
    return {
        "job_id": job_id,
        "state": status.state,
        "accuracy": None if status.accuracy < 0 else status.accuracy,
        "model_version": status.envelope.model_version,
        "policy": status.policy,
        "policy_reason": status.policy_reason,
        # Every switch the leader recorded (kept in its checkpoints, so a resumed job's too).
        "policy_switches": [
            {
                "model_version": sw.model_version,
                "from": sw.previous,
                "to": sw.policy,
                "reason": sw.reason,
            }
            for sw in status.switches
        ],
        "epochs": detail.get("epochs"),
        "workers": len(cluster.workers),
        "mcus": cluster.mcus,
        "throttle": cluster.workers,
        "seconds": round(time.monotonic() - started, 2),
        "final_event": final.message if final is not None else "",
        # Meta-learning jobs: few-shot score and upload bytes per device per round.
        "meta": detail.get("meta") or (detail.get("result") or {}).get("meta"),
        "work": detail.get("work") or (detail.get("result") or {}).get("work"),
    }


async def _main_task(
    args: argparse.Namespace,
    cluster: LocalCluster,
    spec: dict[str, Any],
    view: ProgressView,
    progress: Progress,
    stopper: StopOnSignals,
) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    with stopper.cancelling(task):
        return await run_local(args, cluster, spec, view, progress)


def _options(args: argparse.Namespace) -> tuple[list[float], dict[str, Any]]:
    """The throttles and the job; ValueError or JobFileError for bad ones (nothing started)."""
    throttles = parse_throttles(args.throttle, args.workers)
    if args.mcu < 0:
        raise ValueError("--mcu must be >= 0")
    if args.mcu == 0 and (args.mcu_kind is not None or args.mcu_baud is not None):
        raise ValueError("--mcu-kind and --mcu-baud need --mcu N (N emulated microcontrollers)")
    if args.mcu_baud is not None and ((args.mcu_kind or "host") != "host" or args.mcu_baud <= 0):
        raise ValueError("--mcu-baud takes a positive rate, with --mcu-kind host")
    if not args.timeout > 0 or not args.heartbeat > 0:
        raise ValueError("--timeout and --heartbeat must be > 0")
    if args.report is not None and not matplotlib_available():
        raise ValueError(f"--report: {MISSING_MATPLOTLIB}")
    spec = read_job_file(args.job) if args.job else dict(MCU_JOB if args.mcu else DEFAULT_JOB)
    return throttles, spec


def _write_report(args: argparse.Namespace, state: Path, job_id: str) -> str | None:
    """The report of ``job_id`` from the stopped cluster's store, or None (the error said)."""
    try:
        report = write_report(load_run(find_store(state), job_id), Path(args.report))
    except (RunDataError, ReportError, OSError) as exc:
        print(f"eddl local: no report: {exc}", file=sys.stderr)
        return None
    _say(args, f"report: {report.html}")
    return str(report.html)


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, flush=True)


def _run(
    args: argparse.Namespace,
    throttles: list[float],
    spec: dict[str, Any],
    stopper: StopOnSignals,
) -> int:
    with stopper.held():
        temp = None if args.state_dir else Path(tempfile.mkdtemp(prefix="eddl-local-"))
    state = temp or Path(args.state_dir)
    failed = True  # until the job completed: an unexpected error keeps the logs too
    try:
        cluster = LocalCluster(
            state,
            throttles,
            args.heartbeat,
            mcus=args.mcu,
            mcu_kind=args.mcu_kind or "host",
            mcu_baud=args.mcu_baud,
            device_lifetime_s=args.timeout + 120.0,
        )
        _say(
            args,
            f"{len(throttles)} workers (throttle {','.join(f'{t:g}' for t in throttles)}); "
            f"state and logs in {state}"
            + (" (removed at exit unless the job fails)" if temp else ""),
        )
        progress = Progress()
        view = make_view(bool(args.json), sys.stdout)
        try:
            cluster.start()
            _say(args, f"leader on {cluster.address}")
            if cluster.mcus:
                _say(
                    args,
                    f"gateway with {cluster.mcus} emulated MCUs ({cluster.mcu_kind}): "
                    + ", ".join(d.url for d in cluster.devices),
                )
            result = asyncio.run(_main_task(args, cluster, spec, view, progress, stopper))
            stopper.check()
        except asyncio.CancelledError:
            stopper.check()
            raise
        except (LocalClusterError, grpc.aio.AioRpcError) as exc:
            detail = (
                f"{exc.code().name}: {exc.details()}"
                if isinstance(exc, grpc.aio.AioRpcError)
                else str(exc)
            )
            print(f"eddl local: {detail}", file=sys.stderr)
            return 1
        finally:
            with stopper.deferred():
                view.close(progress)
                codes = cluster.stop()
        result["exit_codes"] = codes
        failed = result["state"] != "completed"
        if args.report is not None:
            # The leader has stopped: its store is complete, and still here.
            result["report"] = _write_report(args, state, result["job_id"])
        result["logs"] = str(cluster.log_dir) if failed or temp is None else None
    finally:
        with stopper.deferred():
            # Stopped by a signal: removed like after a success, as the user asked for the end.
            if temp is not None and failed and stopper.signum is None:
                print(f"eddl local: logs kept in {state / 'logs'}", file=sys.stderr)
            elif temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        acc = result["accuracy"]
        print(
            f"result: job {result['job_id']} {result['state']} — accuracy "
            f"{'-' if acc is None else f'{acc:.2%}'} at version {result['model_version']} "
            f"after {result['seconds']} s; policy {result['policy']} "
            f"({result['policy_reason']})"
        )
        for sw in result["policy_switches"]:
            print(
                f"  switched {sw['from']} → {sw['to']} at version {sw['model_version']}: "
                f"{sw['reason']}"
            )
        if isinstance(result.get("meta"), dict):
            for line in meta_lines(result["meta"]):
                print(f"  {line}")
    reported = args.report is None or result["report"] is not None
    return 0 if result["state"] == "completed" and reported else 1


def _cmd_local(args: argparse.Namespace) -> int:
    try:
        throttles, spec = _options(args)
    except (ValueError, JobFileError) as exc:
        print(f"eddl local: {exc}", file=sys.stderr)
        return 2
    with StopOnSignals() as stopper:
        try:
            code = _run(args, throttles, spec, stopper)
            stopper.check()  # a signal recorded while cleaning up
            return code
        except Stopped as exc:
            print(
                f"eddl local: stopped by {signal.Signals(exc.signum).name}; "
                "the cluster's processes are stopped",
                file=sys.stderr,
            )
            return 128 + exc.signum


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "local",
        help="run a leader and N workers here, train, report",
        description="Start a leader and N workers (and emulated microcontrollers) as processes "
        "on this machine, run a job on them with live progress, report the result and stop.",
    )
    p.add_argument(
        "--workers", type=int, default=3, help="number of worker processes (default: %(default)s)"
    )
    p.add_argument(
        "--throttle",
        help="per-worker slow-down factors >= 1, one or one per worker, e.g. 1,1,2,4 "
        "(default: 1 for every worker)",
    )
    p.add_argument(
        "--job",
        help="job file with a [job] table (default: digits with auto aggregation; "
        "with --mcu, TIFeD on digits)",
    )
    p.add_argument(
        "--mcu",
        type=int,
        default=0,
        help="add a gateway with N emulated microcontrollers (default: %(default)s, none)",
    )
    p.add_argument(
        "--mcu-kind",
        choices=MCU_KINDS,
        help="with --mcu: host, the firmware's native simulator, or qemu, Cortex-M3 boards "
        "with 64 KB RAM (default: host)",
    )
    p.add_argument(
        "--mcu-baud",
        type=int,
        help="with --mcu and --mcu-kind host: pace the simulators' links like a UART at this "
        "baud rate, 8N1 (default: unpaced)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=0.5,
        help="heartbeat interval in seconds (default: %(default)s)",
    )
    p.add_argument(
        "--state-dir",
        help="keep state and logs in this folder (default: a temporary folder, removed at "
        "exit unless the job fails)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up waiting for the nodes, and then for the job, after this many seconds "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write the job's HTML report with plots into DIR at the end (needs the "
        "[report] extra: matplotlib; default: no report)",
    )
    p.add_argument(
        "--json", action="store_true", help="print only the result, as JSON (default: off)"
    )
    p.set_defaults(func=_cmd_local)
