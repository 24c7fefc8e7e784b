"""End to end: a root, two sub-leaders (``eddl-leader --upstream``) and twelve workers (five
per group, two with the root) as real processes; a sub-leader killed with SIGKILL sends its
workers back to the root and the job completes, every sample counted once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from eddl.data.datasets import load_dataset
from tests.e2e.procs import (
    Proc,
    eddl,
    start_leader,
    start_sub_leader,
    start_worker,
    stop_all,
    wait_done,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "sync"
task_seconds = 0.5
round_deadline = 5.0
max_epochs = {epochs}
rounds = 1000
[job.model]
sizes = [64, 32, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.2
batch_size = 8
"""


def _submit(tmp: Path, address: str, epochs: float) -> str:
    path = tmp / "job.toml"
    path.write_text(JOB.format(epochs=epochs))
    done = eddl("submit", str(path), "--leader", address, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def _answers(proc: Proc) -> int:
    return sum(1 for line in proc.lines() if line.get("event") == "upstream task answered")


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    stop_all(list(reversed(started)))
    for proc in started:  # shown by pytest only when the test failed
        print(proc.tail(15))


def test_two_groups_train_a_job_and_a_killed_sub_leader_sends_its_workers_home(
    tmp_path: Path, procs: list[Proc]
) -> None:
    root, address = start_leader(tmp_path, heartbeat=0.5)
    procs.append(root)
    subs = []
    for name in ("sub-1", "sub-2"):
        sub, sub_address = start_sub_leader(tmp_path, address, name)
        procs.append(sub)
        subs.append((sub, sub_address))
    # Twelve workers: five in each group, two with the root itself.
    for i, (_, sub_address) in enumerate(subs):
        for j in range(5):
            procs.append(start_worker(tmp_path, sub_address, f"w{i}{j}"))
    for j in range(2):
        procs.append(start_worker(tmp_path, address, f"r{j}"))
    # Every worker joined before sub-1 can die: a worker learns the root's address when it
    # joins its sub-leader, and one still starting (slow on a loaded host) would know none.
    workers = [p for p in procs if p.name.startswith(("w", "r"))]
    wait_for(lambda: all(p.events("joined") for p in workers), 120, "every worker to join")
    job_id = _submit(tmp_path, address, 3.0)

    # Both groups answer tasks of the root; then sub-1 dies.
    wait_for(lambda: all(_answers(s) >= 2 for s, _ in subs), 120, "both groups to answer")
    subs[0][0].kill9()

    # sub-1's workers go back to the root (the next address their sub-leader gave them).
    def home(node: str) -> bool:
        worker = next(p for p in procs if p.name == node)
        joined = [line for line in worker.lines() if line.get("event") == "joined"]
        return any(line.get("leader") == address for line in joined)

    wait_for(lambda: all(home(f"w0{j}") for j in range(5)), 60, "sub-1's workers at the root")
    final = wait_done(address, within=200)
    assert final["state"] == "completed", final
    assert final["job_id"] == job_id

    # Every sample of the three epochs counted once: not lost, not twice (the root hands out
    # exactly three epochs' positions, so a range counted twice would leave another undone).
    train = len(load_dataset("digits").y_train)
    assert final["samples_trained"] == 3 * train
    work = final["detail"]["work"]
    assert work["sub-1"]["tasks"] >= 2 and work["sub-2"]["tasks"] >= 2
    assert not any(f"w1{j}" in work for j in range(5))  # sub-2's group stayed with sub-2
    assert work["r0"]["tasks"] + work["r1"]["tasks"] > 0
