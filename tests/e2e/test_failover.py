"""End to end: 3 elected leader candidates on a real etcd, 4 workers, a digits job; the root is
killed with SIGKILL several times mid-job. Each time a new root takes over in a higher term, the
job completes at its target, model versions only increase, and every version acknowledged to a
worker is in the final history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import TOKEN, Proc, eddl, script, spawn, start_worker, wait_for
from tests.etcd_procs import EtcdMember, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KILLS = 3
ROUNDS = 40

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "sync"
task_seconds = 0.4
round_deadline = 3.0
max_epochs = 10000.0
rounds = {rounds}
[job.model]
sizes = [64, 32, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.2
batch_size = 8
"""


class Candidates:
    def __init__(self, tmp: Path, etcd: EtcdMember) -> None:
        self.tmp = tmp
        self.etcd = etcd
        self.ports = {f"c{i}": free_port() for i in range(3)}
        self.procs: dict[str, Proc] = {}
        self.runs = 0
        self.dead: list[Proc] = []

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> None:
        self.runs += 1
        argv = [
            script("eddl-leader"), "--bind", self.address(name), "--advertise",
            self.address(name), "--state-dir", str(self.tmp / name), "--join-token", TOKEN,
            "--coordinator", self.etcd.coordinator, "--leader-id", name, "--lease-ttl", "3",
            "--heartbeat-interval", "0.5", "--insecure",
        ]  # fmt: skip
        self.procs[name] = spawn(name, argv, self.tmp / f"{name}-{self.runs}.log")

    def revive(self) -> None:
        """Start again a candidate that stopped on its own (a root that could not renew its
        lease in time exits; under systemd, Restart=on-failure does this)."""
        for name, proc in list(self.procs.items()):
            if not proc.alive():
                self.dead.append(proc)
                self.start(name)

    def all_lines(self) -> list[dict[str, Any]]:
        return [line for p in [*self.dead, *self.procs.values()] for line in p.lines()]

    def root(self) -> tuple[str, int] | None:
        """The candidate acting as root in the highest term, from the logs."""
        best: tuple[str, int] | None = None
        for name, proc in self.procs.items():
            for line in proc.lines():
                if line.get("event") == "acting as root":
                    term = int(line["term"])
                    if best is None or term > best[1]:
                        best = (name, term)
        return best

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def status(address: str) -> dict[str, Any] | None:
    done = eddl("status", "--json", "--leader", address, timeout=30)
    if done.returncode != 0:
        return None
    value: dict[str, Any] = json.loads(done.stdout)
    return value


def acknowledged(workers: list[Proc]) -> set[int]:
    """Model versions the workers were told their update produced (from their logs)."""
    versions = set()
    for w in workers:
        for line in w.lines():
            if line.get("event") == "update pushed" and line.get("version"):
                versions.add(int(line["version"]))
    return versions


def test_the_root_is_killed_three_times_and_the_job_completes(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    cands = Candidates(tmp_path, etcd)
    workers: list[Proc] = []
    try:
        for name in cands.ports:
            cands.start(name)
        wait_for(lambda: cands.root() is not None, 60, "a root elected", step=0.2)
        leaders = [arg for name in cands.ports for arg in ("--leader", cands.address(name))]
        workers = [
            start_worker(tmp_path, cands.address("c0"), f"w{i}", throttle=5, extra=leaders)
            for i in range(4)
        ]
        job = tmp_path / "job.toml"
        job.write_text(JOB.format(rounds=ROUNDS))
        root, term = cands.root()  # type: ignore[misc]
        done = eddl("submit", str(job), "--leader", cands.address(root), "--json")
        assert done.returncode == 0, done.stderr
        job_id = str(json.loads(done.stdout)["job_id"])

        seen: list[int] = []
        terms = [term]
        for kill in range(KILLS):
            root, term = cands.root()  # type: ignore[misc]
            box: dict[str, Any] = {}

            def progressed(box: dict[str, Any] = box) -> bool:
                cands.revive()
                now = cands.root()
                info = status(cands.address(now[0])) if now else None
                if info is not None:
                    box.update(info)
                return bool(info) and info["model_version"] >= (seen[-1] if seen else 0) + 3

            wait_for(progressed, 120, f"progress before kill {kill + 1}", step=0.5)
            root, term = cands.root()  # type: ignore[misc]
            assert box["root"]["address"] in {cands.address(n) for n in cands.ports}, box["root"]
            assert box["term"] >= terms[-1] and box["coordinator"] == etcd.coordinator
            seen.append(int(box["model_version"]))
            proc = cands.procs[root]
            proc.kill9()
            cands.dead.append(proc)
            del cands.procs[root]
            wait_for(
                lambda t=term: (r := cands.root()) is not None and r[1] > t,
                60,
                f"a new root after kill {kill + 1}",
                step=0.2,
            )
            new_root, new_term = cands.root()  # type: ignore[misc]
            assert new_root != root  # a standby took over with the replicated job
            terms.append(new_term)
            cands.start(root)  # back as a standby, to catch up from the new root

        root, term = cands.root()  # type: ignore[misc]
        final: dict[str, Any] = {}

        def finished() -> bool:
            cands.revive()
            now = cands.root()
            info = status(cands.address(now[0])) if now else None
            if info is not None:
                final.update(info)
            return bool(info) and info["state"] != "running"

        wait_for(finished, 300, "the job to finish", step=0.5)
        assert final["job_id"] == job_id and final["state"] == "completed", final
        assert final["model_version"] >= ROUNDS
        assert terms == sorted(set(terms)), terms  # a new, higher term each time
        assert seen == sorted(seen)
        # The final root's history (its model_updated events, replicated from every root).
        watched = eddl("watch", "--job", job_id, "--leader", cands.address(root), timeout=60)
        assert watched.returncode == 0, watched.stderr
        # Versions only increase, except that a new root resumes from the newest version it
        # holds: versions the dead root made after that were never acknowledged to anyone.
        acked = acknowledged(workers) - {0}
        assert acked, "no worker logged an acknowledged update"
        history: list[int] = []
        dropped: set[int] = set()
        for line in watched.stdout.splitlines():
            if m := re.search(r"\bv(\d+) model_updated", line):
                version = int(m[1])
                assert not history or version > history[-1], (history[-3:], version)
                history.append(version)
            elif m := re.search(r"job_resumed: resumed from checkpoint version (\d+)", line):
                resumed = int(m[1])
                dropped |= {v for v in history if v > resumed}
                history = [v for v in history if v <= resumed]
        assert not dropped & acked, sorted(dropped & acked)
        assert acked <= set(history), sorted(acked - set(history))
        # Each takeover is in the job's events, with its reason.
        assert re.search(
            r"leader_elected: c\d is root in term \d+ \(takeover\): root of term", watched.stdout
        )
        roots = {
            (line["term"]) for line in cands.all_lines() if line.get("event") == "acting as root"
        }
        assert len(roots) >= KILLS + 1
    finally:
        for w in workers:
            w.stop()
        cands.stop()
