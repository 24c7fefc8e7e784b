"""``eddl local`` as a user runs it: its options, its output off a terminal, where its logs go,
and the :class:`LocalCluster` library API it is built on (real processes throughout)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import threading
from pathlib import Path

import pytest

from eddl.cli import build_parser
from eddl.cluster import LocalCluster
from tests.e2e.procs import script

LONG_RUN = 200


def _local(tmp: Path, *args: str, timeout: float = LONG_RUN) -> subprocess.CompletedProcess[str]:
    """``eddl local ARGS`` with its temporary folders under ``tmp``."""
    tmp.mkdir(exist_ok=True)
    return subprocess.run(
        [script("eddl"), "local", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def _leftovers(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("eddl-local-*"))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ("[job\nx = 1", "job.toml:"),
        ('dataset = "digits"\n', "expected one [job] table"),
    ],
    ids=["missing", "bad-toml", "no-job-table"],
)
def test_a_bad_job_file_gives_one_line_and_exit_2(
    tmp_path: Path, content: str | None, says: str
) -> None:
    job = tmp_path / "job.toml"
    if content is not None:
        job.write_text(content)
    done = _local(tmp_path / "tmp", "--job", str(job), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("eddl local: ") and says in lines[0], done.stderr
    assert done.stdout == ""
    assert _leftovers(tmp_path / "tmp") == []  # nothing was started


@pytest.mark.parametrize(
    "args",
    [["--mcu-kind", "qemu"], ["--mcu-kind", "host"], ["--mcu-baud", "9600"]],
    ids=["kind-qemu", "kind-host", "baud"],
)
def test_mcu_options_without_mcu_are_refused(tmp_path: Path, args: list[str]) -> None:
    done = _local(tmp_path, *args, timeout=60)
    assert done.returncode == 2
    assert "need --mcu" in done.stderr
    assert _leftovers(tmp_path) == []


def test_every_flag_has_a_help_string_with_its_default() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    local = sub.choices["local"]
    flags = [a for a in local._actions if a.dest != "help"]
    assert len(flags) >= 10
    for action in flags:
        assert action.help, f"{action.option_strings} has no help"
        assert "default" in action.help, f"{action.option_strings}: no default in its help"


@pytest.mark.slow
def test_plain_output_shows_joins_progress_and_result_and_removes_its_folder(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report"
    done = _local(tmp_path, "--workers", "2", "--throttle", "1,2", "--report", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # The report was written from the leader's store before the state folder went.
    assert f"report: {report / 'index.html'}" in out
    assert (report / "index.html").read_text().count("data:image/png;base64,") == 4
    assert "removed at exit unless the job fails" in out
    for node in ("worker-0", "worker-1"):
        # Joins are shown, and before the job: they happen before it is submitted.
        assert out.index(f"worker {node} joined") < out.index("* job job-")
    assert "job_completed" in out
    assert "version" in out and "accuracy" in out and "policy" in out
    assert out.splitlines()[-1].startswith("result: job job-") and " completed " in out
    assert out.index("report: ") < out.index("result: job job-")
    table = [line.split() for line in out.splitlines()]
    assert ["node", "role", "state", "samples/s", "task", "tasks"] in table
    assert "\x1b[" not in out  # not a terminal: no live display
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_failed_run_keeps_its_logs_and_says_where(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    # A valid job far longer than the time given: the run fails (exit 1), its logs are kept.
    job.write_text(
        '[job]\ndataset = "digits"\nalgorithm = "sgd"\nrounds = 1000000\nmax_epochs = 100000\n'
    )
    done = _local(tmp_path / "tmp", "--workers", "1", "--job", str(job), "--timeout", "20")
    assert done.returncode == 1, done.stdout + done.stderr
    kept = [line for line in done.stderr.splitlines() if "logs kept in " in line]
    assert len(kept) == 1, done.stderr
    logs = Path(kept[0].split("logs kept in ", 1)[1])
    assert logs.parent.parent == tmp_path / "tmp"
    assert (logs / "leader.log").stat().st_size > 0
    assert (logs / "worker-0.log").is_file()


@pytest.mark.slow
async def test_a_cluster_started_from_a_thread_that_ends_keeps_running(tmp_path: Path) -> None:
    # The kernel's parent-death signal follows the thread that forked a child: the cluster's
    # own spawner thread, not the caller's, must be that thread.
    with LocalCluster(tmp_path, [1.0, 1.0]) as cluster:
        starter = threading.Thread(target=cluster.start)
        starter.start()
        await asyncio.to_thread(starter.join, 120)
        assert not starter.is_alive()
        await cluster.wait_for_nodes(timeout_s=60)
        await asyncio.sleep(1.0)
        cluster.check_alive()
        codes = cluster.stop()
    assert codes == {"leader": 0, "worker-0": 0, "worker-1": 0}
