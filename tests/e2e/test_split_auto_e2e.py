"""End to end, the root splits by itself (``--split auto``): a root, two standby sub-leaders
that offer to lead and twelve workers, all joined to the root, as real processes. On loopback
the root's link is declared small (``--link-capacity-mbps 0.2``) so that it is saturated
within seconds; the root promotes both sub-leaders, redirects every worker to a group, and
after one sub-leader is killed with SIGKILL its workers come back to the root, the job
completes and every sample is counted once."""

from __future__ import annotations

from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from tests.e2e.procs import (
    Proc,
    start_leader,
    start_sub_leader,
    start_worker,
    wait_done,
    wait_for,
)
from tests.e2e.test_subleader_e2e import _submit, procs

__all__ = ["procs"]  # the fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EPOCHS = 200.0  # long enough to split early in it and lose a sub-leader, whatever the load
# (unslowed workers: 40 epochs once ended 4 s after the start, right after the promotion)
SPLIT = [
    "--split", "auto", "--split-hold", "3", "--split-busy-for", "2",
    "--link-capacity-mbps", "0.2",
]  # fmt: skip


def _joined(worker: Proc) -> list[str]:
    return [str(line.get("leader")) for line in worker.events("joined")]


def test_the_root_promotes_two_sub_leaders_and_a_killed_ones_workers_come_home(
    tmp_path: Path, procs: list[Proc]
) -> None:
    root, address = start_leader(tmp_path, heartbeat=0.5, extra=SPLIT)
    procs.append(root)
    subs = {}
    for name in ("sub-1", "sub-2"):
        sub, sub_address = start_sub_leader(tmp_path, address, name)
        procs.append(sub)
        subs[name] = (sub, sub_address)
    wait_for(lambda: len(root.events("lead offered")) == 2, 60, "two lead offers")
    workers = {f"w{i:02d}": start_worker(tmp_path, address, f"w{i:02d}") for i in range(12)}
    procs.extend(workers.values())
    job_id = _submit(tmp_path, address, EPOCHS)

    # The root splits: one promotion with the figures behind it, both sub-leaders leading.
    wait_for(lambda: bool(root.events("regroup")), 120, "the root to regroup")
    change = root.events("regroup")[0]
    assert change["cause"] == "promote", change
    groups = change["groups"]
    assert isinstance(groups, dict) and sorted(groups) == ["sub-1", "sub-2"], change
    # Every worker the root had measured goes to one group (one that had not synchronised yet
    # stays with the root).
    members = [w for g in groups.values() for w in g]
    assert len(members) == len(set(members)) and set(members) <= set(workers)
    assert len(members) >= 6 and all(len(g) >= 2 for g in groups.values())
    nodes = change["nodes"]
    assert isinstance(nodes, dict) and all(isinstance(v, dict) for v in nodes.values())
    assert any(d["bytes_per_s"] > 0 for d in nodes.values())  # type: ignore[index]
    decisions = [d for d in root.events("split_decision") if d["action"] == "promote"]
    assert decisions and decisions[0]["link_busy"] is not None

    # Every worker goes to the group it was given; both groups answer tasks of the root.
    def in_groups() -> bool:
        return all(
            subs[leader][1] in _joined(workers[w]) for leader, g in groups.items() for w in g
        )

    wait_for(in_groups, 60, "the workers to join their groups")
    answered = "upstream task answered"
    wait_for(lambda: all(len(s.events(answered)) >= 2 for s, _ in subs.values()), 120, "answers")

    # sub-1 dies: its workers come back to the root, which stops sending them there.
    last = root.events("regroup")[-1]["groups"]
    assert isinstance(last, dict)
    subs["sub-1"][0].kill9()
    lost = list(last["sub-1"])

    def home() -> bool:
        return all(_joined(workers[w])[-1] == address for w in lost)

    wait_for(home, 60, "sub-1's workers back at the root")
    wait_for(
        lambda: any(e["cause"] == "leader-lost" for e in root.events("regroup")),
        30,
        "the root to drop sub-1's group",
    )
    final = wait_done(address, within=240)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id
    # Every sample of the job's epochs counted once: none lost, none twice.
    assert final["samples_trained"] == EPOCHS * len(load_dataset("digits").y_train)
    work = final["detail"]["work"]
    assert work["sub-1"]["tasks"] >= 2 and work["sub-2"]["tasks"] >= 2
    assert sum(work.get(w, {"tasks": 0})["tasks"] for w in lost) > 0  # they trained at home
