"""``eddl report TARGET``: write a job's HTML report with plots (see :mod:`eddl.ops.report`).

    eddl report ./eddl-state                  # the latest job of an `eddl local` run
    eddl report /var/lib/eddl/leader --job J  # a job in a leader's state directory
    eddl report J --state-dir ./eddl-state    # TARGET may be a job id

Exit codes: 0 written, 1 nothing to report (no store, no such job, matplotlib missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from eddl.ops.report import ReportError, write_report
from eddl.ops.run_data import RunDataError, find_store, load_run

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a job's HTML report with plots",
        description="Write an HTML report with PNG plots of a job, read from a leader's state "
        "directory or an `eddl local --state-dir` folder (the leader may still run). Needs "
        "matplotlib: pip install 'eddl[report]'.",
    )
    p.add_argument("target", metavar="DIR_OR_JOB", help="a state directory, or a job id")
    p.add_argument("--job", help="the job to report (default: the latest one)")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("eddl-state"),
        help="where to look when TARGET is a job id (default: ./eddl-state)",
    )
    p.add_argument(
        "--out",
        "-o",
        type=Path,
        help="folder to write (default: report-<job> in the current directory)",
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if target.exists():
        where, job = target, args.job
    else:
        where, job = args.state_dir, args.job or args.target
    try:
        run = load_run(find_store(where), job)
        report = write_report(run, args.out or Path(f"report-{run.job_id}"))
    except (RunDataError, ReportError) as exc:
        print(f"eddl report: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.html} ({len(report.images)} plots, {run.status} job {run.job_id})")
    return 0
