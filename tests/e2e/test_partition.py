"""End to end: a network partition during a training job. Three network namespaces on a bridge,
each with an etcd member, an elected ``eddl-leader`` candidate (mutual TLS, one cluster CA) and
a worker that lists every candidate. While the job runs, the root's namespace is cut off:

* the old root stops accepting updates within its lease TTL of the cut (its worker, cut off
  with it, keeps trying it), and steps down before a new root is elected;
* a new root takes over in a higher term, and the job goes on with the other two workers;
* from every worker's acknowledgements and every candidate's log, no term ever has two roots
  accepting updates;
* healed, the old root (restarted by its supervisor, here the test) rejoins as a standby and
  catches up: the new root reports it holding the newest version;
* the job completes, and every version acknowledged to a worker is in the final history.

Needs root; skipped where namespaces cannot be made."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from eddl.leader.main import EXIT_STEPPED_DOWN
from eddl.profiler.netlab import netns_unavailable_reason
from eddl.security.authority import Authority
from tests.e2e.procs import TOKEN, Proc, script, spawn, wait_for
from tests.e2e.test_failover import JOB, acknowledged, final_history
from tests.integration.netns_support import NET, etcd_argv, ip, three_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(300)]

TTL = 4  # the election lease, seconds
# Log lines carry the time they were written, read after the event itself: an acknowledgement
# the old root sent by the TTL may be logged by its worker a little later.
CLOCK_TOLERANCE_S = 0.5
ROUNDS = 20
PORT = 50051  # each namespace has its own ports; the bootstrap port is PORT + 1


@pytest.fixture(scope="module", autouse=True)
def _need_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"NETNS TEST SKIPPED: {reason}")


def address(i: int) -> str:
    return f"{NET}.{i}:{PORT}"


def at(line: dict[str, Any]) -> float:
    """The wall-clock time of a JSON log line (all processes share this host's clock)."""
    return dt.datetime.fromisoformat(str(line["timestamp"])).timestamp()


def one_ca(tmp: Path) -> tuple[str, str]:
    """The cluster CA with a worker token (3 uses) and an admin token, given to every
    candidate before it starts (what copying ``pki/`` to each Pi does); the two tokens."""
    authority = Authority(tmp / "c1" / "pki")
    worker, admin = authority.new_token("worker", uses=3), authority.new_token("admin")
    for i in (2, 3):
        shutil.copytree(authority.dir, tmp / f"c{i}" / "pki")
    return str(worker), str(admin)


class Cluster:
    """The candidates (every run of each, for the logs) and the workers, by namespace."""

    def __init__(self, tmp: Path, hub: str, spaces: list[str]) -> None:
        self.tmp, self.hub, self.spaces = tmp, hub, spaces
        self.runs: dict[int, list[Proc]] = {1: [], 2: [], 3: []}
        self.others: list[Proc] = []

    def spawn(self, i: int, name: str, argv: list[str]) -> Proc:
        ns = self.hub if i == 0 else self.spaces[i - 1]
        return spawn(name, ["ip", "netns", "exec", ns, *argv], self.tmp / f"{name}.log")

    def start_candidate(self, i: int) -> None:
        argv = [
            script("eddl-leader"), "--bind", address(i), "--advertise", address(i),
            "--state-dir", str(self.tmp / f"c{i}"), "--join-token", TOKEN,
            "--coordinator", "etcd://127.0.0.1:2379", "--leader-id", f"c{i}",
            "--lease-ttl", str(TTL), "--heartbeat-interval", "0.5",
        ]  # fmt: skip
        self.runs[i].append(self.spawn(i, f"c{i}-{len(self.runs[i]) + 1}", argv))

    def revive(self) -> None:
        """Start again a candidate that stopped (a root that stepped down exits; under
        systemd, Restart=on-failure starts it again)."""
        for i, runs in self.runs.items():
            if not runs[-1].alive():
                self.start_candidate(i)

    def lines(self, i: int) -> list[dict[str, Any]]:
        return [line for run in self.runs[i] for line in run.lines()]

    def root(self) -> tuple[int, int] | None:
        """(candidate, term) acting as root in the highest term, from the logs."""
        roots = [
            (int(line["term"]), i)
            for i in self.runs
            for line in self.lines(i)
            if line.get("event") == "acting as root"
        ]
        return (max(roots)[1], max(roots)[0]) if roots else None

    def eddl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``eddl`` CLI in the hub namespace (it reaches every candidate)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.hub, script("eddl"), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def status(self, i: int) -> dict[str, Any] | None:
        done = self.eddl("status", "--json", "--leader", address(i))
        return json.loads(done.stdout) if done.returncode == 0 else None

    def stop(self, workers: list[Proc]) -> None:
        """Every process by its PID: the daemons all told to stop at once, then each waited for
        (bounded); then the etcd members, killed (their data is thrown away)."""
        daemons = [*workers, *(run for runs in self.runs.values() for run in runs)]
        if sys.exc_info()[0] is not None:  # a failing test: each daemon's last lines
            print("\n".join(proc.tail(40) for proc in daemons))
        for proc in daemons:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in daemons:
            proc.stop()
        for proc in self.others:
            if proc.alive():
                proc.kill9()


def roots_by_term(cluster: Cluster, workers: list[Proc]) -> dict[int, set[str]]:
    """Per term, every candidate that accepted an update in it: from the workers'
    acknowledgements (the term and the leader that answered) and from the candidates' logs (a
    version made while acting as root in a term)."""
    roots: dict[int, set[str]] = defaultdict(set)
    for w in workers:
        for line in w.events("update pushed"):
            roots[int(line["term"])].add(str(line["leader"]))
    for i, runs in cluster.runs.items():
        for run in runs:
            term = 0
            for line in run.lines():
                if line.get("event") == "acting as root":
                    term = int(line["term"])
                elif line.get("event") == "model_updated":
                    assert term, f"c{i} made a version before acting as root: {line}"
                    roots[term].add(address(i))
    return roots


def test_an_isolated_root_stops_within_its_ttl_and_the_job_completes_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDL_CONFIG_DIR", str(tmp_path / "admin"))  # the CLI's identity
    worker_token, admin_token = one_ca(tmp_path)
    with three_namespaces("eddlj") as (hub, spaces):
        ip("-n", hub, "addr", "add", f"{NET}.254/24", "dev", "br0")
        cluster = Cluster(tmp_path, hub, spaces)
        workers: list[Proc] = []
        try:
            for i in (1, 2, 3):
                etcd = cluster.spawn(i, f"etcd{i}", etcd_argv(i, tmp_path / f"e{i}"))
                cluster.others.append(etcd)
            for i in (1, 2, 3):
                cluster.start_candidate(i)
            wait_for(lambda: cluster.root() is not None, 90, "a first root", step=0.2)
            first_root, submitted_term = cluster.root()  # type: ignore[misc]
            for i in (1, 2, 3):
                leaders = [a for j in (i, *({1, 2, 3} - {i})) for a in ("--leader", address(j))]
                argv = [
                    script("eddl-worker"), *leaders, "--node-id", f"w{i}",
                    "--pki-dir", str(tmp_path / f"w{i}"), "--enrol-token", worker_token,
                    "--bootstrap", f"{NET}.{i}:{PORT + 1}", "--throttle", "5",
                ]  # fmt: skip
                workers.append(cluster.spawn(i, f"w{i}", argv))
            done = cluster.eddl("enrol", admin_token, "--leader", address(first_root))
            assert done.returncode == 0, done.stderr
            job = tmp_path / "job.toml"
            job.write_text(JOB.format(rounds=ROUNDS))
            done = cluster.eddl("submit", str(job), "--leader", address(first_root), "--json")
            assert done.returncode == 0, done.stderr
            job_id = str(json.loads(done.stdout)["job_id"])

            # The root has made versions, and its own worker has had updates acknowledged.
            def trained() -> bool:
                now = cluster.root()
                if now is None:
                    return False
                i, term = now
                made = cluster.runs[i][-1].events("model_updated")
                own = [
                    line
                    for line in workers[i - 1].events("update pushed")
                    if line["leader"] == address(i) and line["term"] == term
                ]
                return len(made) >= 2 and bool(own)

            wait_for(trained, 120, "the root training", step=0.2)
            old, old_term = cluster.root()  # type: ignore[misc]
            old_run = cluster.runs[old][-1]
            isolated_at = time.time()
            ip("-n", hub, "link", "set", f"h{old}", "down")

            def taken_over() -> bool:
                cluster.revive()
                now = cluster.root()
                return now is not None and now[1] > old_term

            wait_for(taken_over, 60, "a new root", step=0.2)
            # The old root stepped down, and exited for its supervisor to start it again.
            wait_for(lambda: not old_run.alive(), 30, "the old root to exit", step=0.2)
            assert old_run.popen.returncode == EXIT_STEPPED_DOWN
            cluster.revive()
            ip("-n", hub, "link", "set", f"h{old}", "up")

            # Healed: the old root follows the root, which sends it what it missed; and the job
            # completes. (A loaded machine may cost a root its lease again: the root is whoever
            # holds the highest term now.)
            final: dict[str, Any] = {}
            caught_up: list[bool] = []

            def settled() -> bool:
                cluster.revive()
                now = cluster.root()
                info = cluster.status(now[0]) if now else None
                if now is None or info is None or info.get("term") != now[1]:
                    return False
                final.clear()
                final.update(info)
                mine = [s for s in info["standbys"] if s["address"] == address(old)]
                if mine and mine[0]["synced"] and mine[0]["version"] >= info["model_version"] > 0:
                    caught_up.append(True)
                return bool(caught_up) and info["state"] not in ("running", "ending")

            wait_for(settled, 180, "the old root caught up as a standby, the job done", step=0.5)
            assert final["job_id"] == job_id and final["state"] == "completed", final
            assert final["term"] > old_term and final["model_version"] >= ROUNDS, final
            new = int(final["root"]["node_id"].removeprefix("c"))

            # Fencing: the old root stepped down before any root of a higher term was elected,
            # and accepted nothing later than its lease TTL after the cut: neither a version
            # (its log) nor an update of its own worker, cut off with it, which kept trying it.
            # (A worker outside may hear an acknowledgement sent before the cut only once the
            # link is back - TCP sends it again - so its time says nothing about the sender.)
            down = [
                line
                for line in old_run.events("election")
                if line["kind"] == "step_down" and line["term"] == old_term
            ]
            took = [
                line
                for i in (1, 2, 3)
                for line in cluster.lines(i)
                if line.get("event") == "election" and line["term"] > old_term
                and line["kind"] in ("elected", "takeover")
            ]  # fmt: skip
            first = min(took, key=at)
            assert down and isolated_at < at(down[0]) < at(first), (down, first)
            by_old = [
                line
                for line in workers[old - 1].events("update pushed")
                if line["leader"] == address(old) and line["term"] == old_term
            ]
            made_by_old = old_run.events("model_updated")
            assert by_old and made_by_old
            last = max(at(line) for line in [*by_old, *made_by_old])
            assert last <= isolated_at + TTL + CLOCK_TOLERANCE_S, (last - isolated_at, TTL)
            # Never two roots accepting updates in one term; the terms grew.
            roots = roots_by_term(cluster, workers)
            assert all(len(who) == 1 for who in roots.values()), dict(roots)
            assert roots[old_term] == {address(old)}, dict(roots)
            assert roots[final["term"]] == {address(new)}, dict(roots)
            assert max(roots) == final["term"]
            # Every version acknowledged to a worker is in the final history; a version an
            # update produced is there as made in the term that acknowledged it.
            watched = cluster.eddl("watch", "--job", job_id, "--leader", address(new))
            assert watched.returncode == 0, watched.stderr
            history, dropped, made_in = final_history(watched.stdout, submitted_term)
            acked = acknowledged(workers) - {0}
            assert not dropped & acked, sorted(dropped & acked)
            assert acked <= set(history), sorted(acked - set(history))
            produced = {
                (int(line["version"]), int(line["term"]))
                for w in workers
                for line in w.events("update pushed")
                if line["outcome"] == "aggregated"
            }
            assert produced <= set(made_in.items()), sorted(produced - set(made_in.items()))
        finally:
            cluster.stop(workers)
