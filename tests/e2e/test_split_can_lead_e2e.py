"""End to end, workers started with ``--can-lead`` lead groups: a root (``--split auto``) and
eight workers as real processes, two of them with ``--can-lead``, no sub-leader daemon. The
two offer to lead (their sub-leader, ``<node>.lead``, runs in the worker's own process), the
root promotes them and no other worker, the other workers train in their groups, both groups
answer the root's tasks, and the job completes with every sample counted once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eddl.data.datasets import load_dataset
from tests.e2e.procs import Proc, start_leader, start_worker, wait_done, wait_for
from tests.e2e.test_split_demote_e2e import SPLIT, THROTTLE, submit_plain
from tests.e2e.test_subleader_e2e import procs

__all__ = ["procs"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 120.0  # long enough to split whatever the load: the workers train 40x slowed down
LEADS = ("w0", "w1")


def promoted_groups(root: Proc) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The root's first regroup, a promotion of exactly the can-lead workers' sub-leaders:
    its groups (sub-leader -> members) and the whole event."""
    wait_for(lambda: bool(root.events("regroup")), 120, "the root to regroup")
    change = root.events("regroup")[0]
    assert change["cause"] == "promote", change
    groups = change["groups"]
    assert isinstance(groups, dict) and sorted(groups) == [f"{w}.lead" for w in LEADS], change
    return groups, change


def wait_groups_served(
    workers: dict[str, Proc], groups: dict[str, list[str]], served_at: dict[str, str], within: float
) -> None:
    """Every member of ``groups`` joined its sub-leader at ``served_at[leader]``, and each
    can-lead worker's process answered two upstream tasks for its group."""

    def joined(worker: Proc) -> list[str]:
        return [str(e.get("leader")) for e in worker.events("joined")]

    wait_for(
        lambda: all(served_at[lead] in joined(workers[w]) for lead, g in groups.items() for w in g),
        within,
        "members at their groups",
    )
    answered = "upstream task answered"
    wait_for(
        lambda: all(len(workers[w].events(answered)) >= 2 for w in LEADS), 120, "group answers"
    )


def test_can_lead_workers_are_promoted_and_serve_their_groups(
    tmp_path: Path, procs: list[Proc]
) -> None:
    root, address = start_leader(tmp_path, heartbeat=0.5, extra=SPLIT)
    procs.append(root)
    workers = {}
    for i in range(8):
        name = f"w{i}"
        extra = ["--can-lead", "127.0.0.1:0"] if name in LEADS else []
        workers[name] = start_worker(tmp_path, address, name, throttle=THROTTLE, extra=extra)
    procs.extend(workers.values())
    wait_for(lambda: len(root.events("lead offered")) == 2, 60, "two lead offers")
    offered = {str(e["node"]): str(e["address"]) for e in root.events("lead offered")}
    assert sorted(offered) == ["w0.lead", "w1.lead"], offered
    job_id = submit_plain(tmp_path, address, EPOCHS)

    groups, change = promoted_groups(root)
    nodes = change["nodes"]
    assert isinstance(nodes, dict)
    assert all(nodes[g]["lead_worker"] for g in groups), nodes  # type: ignore[index]
    members = {w for g in groups.values() for w in g}
    assert members and members <= set(workers)

    # The groups are served by the can-lead workers' processes: members join there and the
    # groups answer the root's tasks.
    wait_groups_served(workers, groups, offered, within=60)

    final = wait_done(address, within=240)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id
    assert final["samples_trained"] == EPOCHS * len(load_dataset("digits").y_train)
    work = final["detail"]["work"]
    assert work["w0.lead"]["tasks"] >= 2 and work["w1.lead"]["tasks"] >= 2
