"""End to end, the root merges its groups back when the load falls (``--split auto``): a root,
two standby sub-leaders and eight workers as real processes. The root's link is declared at
1.6 Mbit/s, which eight workers on loopback keep busy and two do not: the root promotes both
sub-leaders; while the workers stay (longer than the hold and the window), it does not demote
(no flapping); once six workers are stopped (SIGTERM), the root's worker count falls to half or
less with the link quiet, the root demotes (``split_decision`` and ``regroup`` with cause
``demote``), the two workers come home to the root and the job completes with every sample
counted once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from tests.e2e.procs import (
    Proc,
    eddl,
    start_leader,
    start_sub_leader,
    start_worker,
    wait_done,
    wait_for,
)
from tests.e2e.test_subleader_e2e import JOB, procs

__all__ = ["procs"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 120.0  # long enough to split, stop six workers and merge back before it ends
# Plain FedAvg rounds (no sum_samples budget), so that tasks last about task_seconds and the
# root's link load follows the number of workers.
PLAIN = JOB + "[job.sync_params]\nsum_samples = 0\n"
THROTTLE = 40.0  # workers this many times slower: tasks of about the job's task_seconds
# Slower still here: a task is at most an epoch of digits (1438 samples), and the link of a
# root whose two groups keep one worker each must go quiet, so their rounds must not be
# shorter than the job's task_seconds.
DEMOTE_THROTTLE = 160.0
HOLD, WINDOW = 2.0, 3.0
SPLIT = [
    "--split", "auto", "--split-hold", f"{HOLD:g}", "--split-busy-for", "2",
    "--split-window", f"{WINDOW:g}",
    "--link-capacity-mbps", "1.6",
]  # fmt: skip


def submit_plain(tmp: Path, address: str, epochs: float) -> str:
    """Submit the plain FedAvg job for ``epochs``; its id."""
    path = tmp / "job.toml"
    path.write_text(PLAIN.format(epochs=epochs))
    done = eddl("submit", str(path), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def _trained_at_home(worker: Proc, home: str) -> bool:
    """``worker`` pushed an update to ``home`` after it last joined there."""
    lines = worker.lines()
    joins = [i for i, e in enumerate(lines) if e.get("event") == "joined"]
    if not joins or lines[joins[-1]].get("leader") != home:
        return False
    return any(
        e.get("event") == "update pushed" and e.get("leader") == home for e in lines[joins[-1] :]
    )


def test_the_root_merges_its_groups_back_when_most_workers_leave(
    tmp_path: Path, procs: list[Proc]
) -> None:
    root, address = start_leader(tmp_path, heartbeat=0.5, extra=SPLIT)
    procs.append(root)
    subs: dict[str, tuple[Proc, str]] = {}
    for name in ("sub-1", "sub-2"):
        sub, sub_address = start_sub_leader(tmp_path, address, name)
        procs.append(sub)
        subs[name] = (sub, sub_address)
    wait_for(lambda: len(root.events("lead offered")) == 2, 60, "two lead offers")
    workers = {
        f"w{i}": start_worker(tmp_path, address, f"w{i}", throttle=DEMOTE_THROTTLE)
        for i in range(8)
    }
    procs.extend(workers.values())
    job_id = submit_plain(tmp_path, address, EPOCHS)

    # The load is up: the root promotes both sub-leaders and the groups answer tasks.
    wait_for(lambda: bool(root.events("regroup")), 120, "the root to regroup")
    promoted = root.events("regroup")[0]
    assert promoted["cause"] == "promote", promoted
    groups = promoted["groups"]
    assert isinstance(groups, dict) and sorted(groups) == ["sub-1", "sub-2"], promoted
    answered = "upstream task answered"
    promoted_at = time.monotonic()

    # The groups run with all their members for longer than the hold and the window, so that
    # the root could decide again on figures of the split cluster alone: a count that lost the
    # groups' members would demote here.
    def grouped_for_a_while() -> bool:
        full = all(
            any(int(e.get("workers", 0)) >= 2 for e in s.events(answered)) for s, _ in subs.values()
        )
        return full and time.monotonic() - promoted_at > HOLD + WINDOW + 1.0

    wait_for(grouped_for_a_while, 120, "the groups to run with their members")

    # While every worker stays, the root keeps its groups (no demotion between promotion and
    # the stop); then six workers leave: one of each group stays.
    assert not [d for d in root.events("split_decision") if d["action"] == "demote"]
    assert [e["cause"] for e in root.events("regroup")] == ["promote"]
    staying = sorted(g[0] for g in groups.values())
    for name, worker in workers.items():
        if name not in staying:
            worker.stop()

    # The load falls: the root demotes with the figures behind it, and sends the groups home.
    wait_for(
        lambda: any(d["action"] == "demote" for d in root.events("split_decision")),
        120,
        "the root to demote",
    )
    demoted = next(d for d in root.events("split_decision") if d["action"] == "demote")
    assert demoted["groups"] == 0 and demoted["groups_before"] == 2, demoted
    assert isinstance(demoted["workers"], int) and demoted["workers"] <= 4, demoted
    assert demoted["link_busy"] is not None and demoted["link_busy"] < 0.5, demoted
    wait_for(
        lambda: any(e["cause"] == "demote" for e in root.events("regroup")),
        30,
        "the demote regroup",
    )
    merged = next(e for e in root.events("regroup") if e["cause"] == "demote")
    assert merged["groups"] == {}, merged
    wait_for(
        lambda: all(_trained_at_home(workers[w], address) for w in staying), 60, "workers home"
    )

    final = wait_done(address, within=240)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id
    assert final["samples_trained"] == EPOCHS * len(load_dataset("digits").y_train)
