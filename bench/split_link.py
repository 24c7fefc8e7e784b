"""Flat vs split on a shaped root link: one job, the same workers, the root behind ``tc tbf``.

Two network namespaces joined by a veth pair shaped with a token bucket in both directions
(:func:`eddl.profiler.netlab.shaped_link`). The root leader runs in the *server* namespace
(``--insecure`` binds loopback only, so a byte-for-byte TCP forwarder in that namespace,
:mod:`bench.tcpfwd`, listens on the veth address); everything else runs in the *client*
namespace, so every byte between the root and the rest crosses the shaped link:

* **flat**: ``n`` workers join the root;
* **split**: two sub-leaders (``eddl-leader --upstream``) join the root and the ``n`` workers
  join them, half each, over the client namespace's loopback (unshaped);
* **auto**: the root runs ``--split auto`` with ``--link-capacity-mbps`` set to the link's rate;
  the two sub-leaders stand by (they offer to lead) and the ``n`` workers join the root, which
  splits by itself when its link stays busy (the table says what it chose and when).

The job (784-256-10 float32 on ``mnist-10k``, ~0.8 MB per model, sync FedAvg) runs to
``epochs`` epochs; the table gives the wall time from submit to the end, samples per second,
and model versions per second at the root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.report import markdown_table, write_section
from eddl.profiler.netlab import ShapedLink, netns_unavailable_reason, shaped_link

__all__ = ["main"]

TOKEN = "bench-token"
JOB = """
[job]
dataset = "mnist-10k"
algorithm = "sgd"
aggregation = "sync"
task_seconds = 1.0
round_deadline = 30.0
rounds = 100000
max_epochs = {epochs}
[job.model]
sizes = [784, 256, 10]
activations = ["tanh", "sigmoid"]
loss = "bce"
[job.hyper]
lr = 0.1
batch_size = 16
"""


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@dataclass
class _Procs:
    link: ShapedLink
    tmp: Path
    started: list[subprocess.Popen[bytes]]

    def spawn(self, side: str, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            self.link.command(side, list(argv)),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )
        self.started.append(proc)
        return proc

    def port(self, path: Path, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        while not (path.exists() and path.read_text().strip().isdigit()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no port in {path}")
            time.sleep(0.05)
        return int(path.read_text())

    def stop(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.started):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextlib.contextmanager
def _processes(link: ShapedLink, tmp: Path) -> Iterator[_Procs]:
    procs = _Procs(link, tmp, [])
    try:
        yield procs
    finally:
        procs.stop()


def _status(link: ShapedLink, root: str) -> dict[str, object]:
    done = subprocess.run(
        link.command("server", [_script("eddl"), "status", "--json", "--leader", root]),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"eddl status: {done.stderr}")
    value: dict[str, object] = json.loads(done.stdout)
    return value


AUTO = ["--split", "auto", "--split-busy-for", "2", "--split-hold", "5"]
LABELS = {"flat": "flat", "split": "split (2 sub-leaders)"}


def _chosen(log: Path, started: float) -> str:
    """What the root chose by itself: its regroups, each with its time after the submit."""
    picks = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "regroup":
            at = datetime.fromisoformat(str(event["timestamp"])).timestamp() - started
            picks.append(f"{event['cause']} to {len(event['groups'])} groups at {at:.1f} s")
    return "; ".join(picks) or "stayed flat"


def run_once(rate: float, workers: int, epochs: float, mode: str, tmp: Path) -> dict[str, object]:
    tmp.mkdir(parents=True, exist_ok=True)
    with shaped_link(rate) as link, _processes(link, tmp) as procs:
        procs.spawn(
            "server",
            "root",
            [
                _script("eddl-leader"),
                "--insecure",
                "--bind",
                "127.0.0.1:0",
                "--state-dir",
                str(tmp / "state"),
                "--join-token",
                TOKEN,
                "--port-file",
                str(tmp / "root.port"),
                "--heartbeat-interval",
                "2",
                *([*AUTO, "--link-capacity-mbps", f"{rate:g}"] if mode == "auto" else []),
            ],
        )
        root_port = procs.port(tmp / "root.port")
        procs.spawn(
            "server",
            "fwd",
            [sys.executable, "-m", "bench.tcpfwd", f"{link.server_ip}:{root_port}", str(root_port)],
        )
        time.sleep(0.5)
        root = f"{link.server_ip}:{root_port}"
        local_root = f"127.0.0.1:{root_port}"
        targets = [root]
        if mode != "flat":
            subs = []
            for i in range(2):
                port_file = tmp / f"sub{i}.port"
                procs.spawn(
                    "client",
                    f"sub{i}",
                    [
                        _script("eddl-leader"),
                        "--upstream",
                        root,
                        "--insecure",
                        "--join-token",
                        TOKEN,
                        "--bind",
                        "127.0.0.1:0",
                        "--port-file",
                        str(port_file),
                        "--leader-id",
                        f"sub{i}",
                        "--heartbeat-interval",
                        "2",
                    ],
                )
                subs.append(f"127.0.0.1:{procs.port(port_file)}")
            targets = subs if mode == "split" else [root]
        for w in range(workers):
            procs.spawn(
                "client",
                f"w{w}",
                [
                    _script("eddl-worker"),
                    "--leader",
                    targets[w % len(targets)],
                    "--node-id",
                    f"w{w}",
                    "--insecure",
                    "--join-token",
                    TOKEN,
                ],
            )
        job = tmp / "job.toml"
        job.write_text(JOB.format(epochs=epochs))
        time.sleep(3.0)  # every process joined
        started, wall_started = time.monotonic(), time.time()
        submit = subprocess.run(
            link.command("server", [_script("eddl"), "submit", str(job), "--leader", local_root]),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if submit.returncode != 0:
            raise RuntimeError(f"submit: {submit.stderr}")
        deadline = started + 900
        while True:
            status = _status(link, local_root)
            if status.get("state") != "running" or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        wall = time.monotonic() - started
        if status.get("state") != "completed":
            raise RuntimeError(f"job ended {status.get('state')}: {status}")
        samples = float(status["samples_trained"])  # type: ignore[arg-type]
        versions = float(status["model_version"])  # type: ignore[arg-type]
        chosen = _chosen(tmp / "root.log", wall_started) if mode == "auto" else "-"
        return {"wall": wall, "sps": samples / wall, "vps": versions / wall, "chosen": chosen}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="20", help="root link rates in Mbit/s, comma-separated")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--epochs", type=float, default=0.5)
    p.add_argument(
        "--modes", default="flat,split,auto", help="topologies: flat, split, auto (comma-separated)"
    )
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"bench.split_link: {reason}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="eddl-splitlink-") as tmp:
        for rate in (float(r) for r in args.rates.split(",") if r):
            for mode in args.modes.split(","):
                label = LABELS.get(mode, "root's choice")
                got = run_once(rate, args.workers, args.epochs, mode, Path(tmp) / f"{rate}-{mode}")
                rows.append(
                    [f"{rate:g}", label, args.workers, f"{got['wall']:.1f}", f"{got['sps']:.0f}",
                     f"{got['vps']:.2f}", got["chosen"]]
                )  # fmt: skip
                print(rows[-1], flush=True)
    body = (
        f"Root in its own network namespace behind a veth pair shaped with `tc tbf` in both "
        f"directions; {args.workers} workers (and, split, two sub-leaders with half the workers "
        f"each; root's choice: `--split auto --split-busy-for 2 --split-hold 5` with the "
        f"link's rate as `--link-capacity-mbps`, two standby sub-leaders, the workers at the "
        f"root) in the other namespace. Job: 784-256-10 float32 (~0.8 MB) on mnist-10k, sync "
        f"FedAvg, {args.epochs:g} epochs; wall time from submit to the job's end. One run per "
        f"row; all processes share this machine's 2 cores. Accuracy and time to a target "
        f"accuracy are not compared here.\n\n"
        + markdown_table(
            [
                "root link Mbit/s",
                "topology",
                "workers",
                "wall s",
                "samples/s",
                "versions/s",
                "root's choice",
            ],
            rows,
        )
    )
    if args.no_write:
        print(body)
    else:
        write_section(
            "split-link", "Leader role splitting: flat vs split on a shaped root link", body
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
