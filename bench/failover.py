"""Failover of elected leaders (real processes on loopback, a real etcd member).

* Failover time: 3 candidates and 3 workers train a long digits job; the root is killed with
  SIGKILL ``--kills`` times. Failover = from the kill to the first update a worker had
  acknowledged afterwards (by the new root: the old one is dead), from the workers' logs.
* Root updates/s with 0, 1 and 2 standbys: 1, 2 or 3 candidates, the same workers, async
  aggregation, updates acknowledged during ``--window`` seconds.
* Bytes replicated per version over the model's bytes (the root's replication totals).
* etcd's resident memory and CPU during the failover run.

    python -m bench.failover [--kills 10] [--window 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.report import markdown_table, write_section

TOKEN = "bench-token"
TTL_S = 2
MODEL_BYTES = (64 * 32 + 32 + 32 * 10 + 10) * 4  # the job's 64-32-10 float32 model

JOB = """
[job]
dataset = "digits"
algorithm = "sgd"
aggregation = "{aggregation}"
task_seconds = 0.2
round_deadline = 3.0
max_epochs = 100000.0
rounds = 100000
[job.model]
sizes = [64, 32, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.2
batch_size = 8
"""


def _script(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name) or name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], bool], within: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within}s waiting for {what}")
        time.sleep(step)


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _stamp(entry: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


class Rig:
    """etcd, candidates and workers as processes under ``tmp``; everything stopped by PID."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.candidates: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.ports: dict[str, int] = {}
        self.workers: list[Path] = []
        self.runs = 0

    def spawn(self, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
            proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def start_etcd(self) -> psutil.Process:
        client, peer = _free_port(), _free_port()
        self.etcd = f"127.0.0.1:{client}"
        url = f"http://{self.etcd}"
        proc = self.spawn(
            ["etcd", "--name=m0", f"--data-dir={self.tmp / 'etcd'}",
             f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
             f"--listen-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
             f"--initial-cluster=m0=http://127.0.0.1:{peer}"],
            self.tmp / "etcd.log",
        )  # fmt: skip

        def healthy() -> bool:
            try:
                return bool(httpx.get(url + "/health", timeout=1).json().get("health") == "true")
            except httpx.HTTPError:
                return False

        _wait(healthy, 30, "etcd")
        return psutil.Process(proc.pid)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start_candidate(self, name: str) -> None:
        self.ports.setdefault(name, _free_port())
        self.runs += 1
        log = self.tmp / f"{name}-{self.runs}.log"
        proc = self.spawn(
            [_script("eddl-leader"), "--bind", self.address(name), "--advertise",
             self.address(name), "--state-dir", str(self.tmp / name), "--join-token", TOKEN,
             "--coordinator", f"etcd://{self.etcd}", "--leader-id", name,
             "--lease-ttl", str(TTL_S), "--heartbeat-interval", "0.5", "--insecure"],
            log,
        )  # fmt: skip
        self.candidates[name] = (proc, log)

    def root(self) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for name, (proc, log) in self.candidates.items():
            if proc.poll() is not None:
                continue
            for line in _lines(log):
                is_root = line.get("event") == "acting as root"
                if is_root and (best is None or int(line["term"]) > best[1]):
                    best = (name, int(line["term"]))
        return best

    def start_workers(self, count: int) -> None:
        leaders = [a for n in self.ports for a in ("--leader", self.address(n))]
        for i in range(count):
            log = self.tmp / f"w{i}.log"
            self.spawn(
                [
                    _script("eddl-worker"),
                    *leaders,
                    "--node-id",
                    f"w{i}",
                    "--join-token",
                    TOKEN,
                    "--insecure",
                ],
                log,
            )
            self.workers.append(log)

    def submit(self, aggregation: str) -> None:
        job = self.tmp / "job.toml"
        job.write_text(JOB.format(aggregation=aggregation))
        root = self.root()
        assert root is not None
        done = subprocess.run(
            [_script("eddl"), "submit", str(job), "--leader", self.address(root[0]), "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"submit failed: {done.stderr}")

    def pushes(self) -> list[float]:
        """Wall times of every update a worker had acknowledged, sorted."""
        return sorted(
            _stamp(line)
            for log in self.workers
            for line in _lines(log)
            if line.get("event") == "update pushed"
        )

    def kill(self, name: str) -> None:
        proc, _ = self.candidates.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def failover(tmp: Path, kills: int) -> tuple[list[float], float, float, int]:
    """Failover seconds per kill, etcd's peak RSS (MiB) and CPU share (%), final term."""
    rig = Rig(tmp)
    try:
        etcd = rig.start_etcd()
        cpu0, t0 = etcd.cpu_times(), time.monotonic()
        for name in ("c0", "c1", "c2"):
            rig.start_candidate(name)
        _wait(lambda: rig.root() is not None, 60, "a root")
        rig.start_workers(3)
        rig.submit("sync")
        _wait(lambda: len(rig.pushes()) >= 10, 120, "training under way")
        times: list[float] = []
        rss = etcd.memory_info().rss
        for _ in range(kills):
            root, term = rig.root()  # type: ignore[misc]
            before = len(rig.pushes())
            _wait(lambda b=before: len(rig.pushes()) >= b + 5, 60, "progress")  # type: ignore[misc]
            killed_at = time.time()
            rig.kill(root)
            # Started again at once, as its supervisor would: back as a standby, or the one that
            # may stand when it alone held the newest committed version (no standby in time).
            rig.start_candidate(root)
            _wait(lambda t=term: (r := rig.root()) is not None and r[1] > t, 60, "a new root")  # type: ignore[misc]
            _wait(
                lambda k=killed_at: any(p > k for p in rig.pushes()),  # type: ignore[misc]
                60,
                "an accepted update",
            )
            times.append(min(p for p in rig.pushes() if p > killed_at) - killed_at)
            rss = max(rss, etcd.memory_info().rss)
        cpu1, t1 = etcd.cpu_times(), time.monotonic()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100
        final = rig.root()
        return times, rss / 2**20, cpu, final[1] if final else 0
    finally:
        rig.stop()


def throughput(tmp: Path, candidates: int, window: float) -> tuple[float, int, int]:
    """Acknowledged updates/s over ``window`` s; the root's replicated bytes and versions."""
    rig = Rig(tmp)
    try:
        rig.start_etcd()
        names = [f"c{i}" for i in range(candidates)]
        for name in names:
            rig.start_candidate(name)
        _wait(lambda: rig.root() is not None, 60, "a root")
        root, _ = rig.root()  # type: ignore[misc]
        rig.start_workers(3)
        rig.submit("async")
        _wait(lambda: len(rig.pushes()) >= 10, 120, "training under way")
        start = time.time()
        time.sleep(window)
        end = time.time()
        rate = sum(1 for p in rig.pushes() if start <= p < end) / (end - start)
        _, log = rig.candidates[root]
    finally:
        rig.stop()
    totals = [line for line in _lines(log) if line.get("event") == "replication totals"]
    if not totals:
        return rate, 0, 0
    return rate, int(totals[-1]["bytes"]), int(totals[-1]["versions"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--window", type=float, default=15.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eddl-failover-") as tmp_dir:
        tmp = Path(tmp_dir)
        times, rss, cpu, term = failover(tmp / "failover", args.kills)
        rates: dict[int, float] = {}
        per_version = 0.0
        for standbys in (0, 1, 2):
            rate, sent, versions = throughput(tmp / f"rate{standbys}", standbys + 1, args.window)
            rates[standbys] = rate
            if standbys == 1 and versions:
                per_version = sent / versions
    q = statistics.quantiles(times, n=20, method="inclusive") if len(times) >= 2 else times * 19
    body = (
        f"3 leader candidates (`--lease-ttl {TTL_S}`, safety margin 0.67 s) on one etcd 3.4 "
        f"member, 3 workers, a digits job (sync, 64-32-10 model, {MODEL_BYTES} bytes), all "
        "processes on one machine's loopback. Failover = SIGKILL of the root to the first "
        "update a worker had acknowledged afterwards (from the workers' logs); the killed "
        "candidate is started again at once, as its supervisor would.\n\n"
        + markdown_table(
            ["kills", "failover p50 s", "failover p95 s", "lease TTL s", "max s", "final term"],
            [
                [
                    len(times),
                    f"{statistics.median(times):.2f}",
                    f"{q[18]:.2f}",
                    TTL_S,
                    f"{max(times):.2f}",
                    term,
                ]
            ],
        )
        + "\n\nRoot throughput with 0, 1, 2 standbys (async aggregation, 3 workers, "
        f"{args.window:.0f} s window; each update's writes are on `min_replicas` = 1 standby "
        "before it is acknowledged):\n\n"
        + markdown_table(
            ["standbys", "updates/s", "ratio to 0 standbys"],
            [
                [n, f"{rates[n]:.1f}", f"{rates[n] / rates[0]:.2f}" if rates[0] else "-"]
                for n in (0, 1, 2)
            ],
        )
        + "\n\nThe candidates and workers share the machine's cores, so part of the drop with "
        "more standbys is CPU taken by the standby processes, not only the wait for their acks."
        + f"\n\nBytes replicated per version (1 standby; every payload but snapshots, over the "
        f"versions replicated): {per_version:.0f} = **{per_version / MODEL_BYTES:.2f}x** the "
        f"model's {MODEL_BYTES} bytes (the version's meta with the ledger, its events and "
        "job status ride along).\n\n"
        f"etcd during the failover run: peak RSS {rss:.0f} MiB, CPU {cpu:.1f} % of one core."
    )
    write_section("ha-failover", "Elected leaders: failover, replication cost, etcd", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
