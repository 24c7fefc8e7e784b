"""Time to 90% with the fleet simulator's devices training for real: flat vs split, root shaped.

``python -m bench.fleet_accuracy run --rates 20 --devices 64 --topologies flat 1-4 1-2 auto``
runs, per root link rate, repetition and topology (``auto``: every device at the root, which
runs ``--split auto`` with its veth's counters and four standby sub-leaders), one job to 90%
test accuracy with the network set up as :mod:`bench.fleet_link` sets it (the root in its
own namespace behind a veth shaped with ``tc tbf``, the devices and the sub-leaders in the
other), except that each virtual device trains for real: :class:`RealExecutor` is the worker's own
:class:`~worker.training.NumpyExecutor` (``eddl.learn``'s numpy trainer on the shipped
``mnist-10k``, which every device holds locally) in one thread pool of bounded size shared by
every device of the process, so the event loop keeps pacing the devices' links; the model pull
and the update push are still paced by the device's profile (:class:`LinkPacer`).

The job is async (``--async-rule``: ``fedasync-folds``, FedAsync that counts a sub-leader's
group update for the updates it folds, by default; or plain ``fedasync``; a device's own update
is FedAsync's under both), 784-256-10 (tanh, softmax, ce), lr 0.05, batch 32, with
``target_accuracy`` 0.9 and the root evaluating every version; the time to 90% is from the
first device's start to the making of the first root version whose test accuracy is >= 90%
(the root's ``model_updated`` and ``model_evaluated`` events, as :mod:`bench.accuracy` reads
them). Beside it: the simulator's CPU, the training pool's busy share, the machine's CPU and
the root link's use, so a reader sees whether the CPU or the link bounded a run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core per training thread

import argparse
import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.fleet_accuracy_report import describe
from bench.fleet_devices import PROFILES_DIR, DeviceProfile, FleetHost, LinkPacer, load_profiles
from bench.fleet_devices import shard as shard_of
from bench.fleet_link import (
    REPO,
    TOPOLOGIES,
    leader_port,
    net_dev_bytes,
    plan,
    root_argv,
    spawned,
)
from bench.fleet_procs import sub_leaders
from bench.fleet_split import Promotion, auto_flags, promotions
from bench.report import write_section
from bench.scale import TOKEN
from eddl.cli.admin_client import submit_job, watch_job
from eddl.learn.params import Params
from eddl.log import configure_logging
from eddl.net import params_nbytes
from eddl.profiler.netlab import ShapedLink, netns_unavailable_reason, shaped_link
from eddl.worker.executor import Executor, TaskResult, TaskSpec
from eddl.worker.training import NumpyExecutor

__all__ = ["RULES", "TARGET", "AccuracyRun", "RealExecutor", "TargetWatch", "job_spec", "main"]

TARGET = 0.90
DATASET = "mnist-10k"


#: The root's async rules a run may use: FedAsync, or FedAsync that counts a sub-leader's group
#: update for the updates it folds (a device's own update is FedAsync's either way).
RULES = ("fedasync-folds", "fedasync")


def job_spec(
    devices: int, task_seconds: float, max_task_samples: int, seed: int,
    async_rule: str = RULES[0],
) -> dict[str, Any]:  # fmt: skip
    """The job: 784-256-10 to 90% on mnist-10k, async ``async_rule`` (FedAsync or FedAsync that
    counts a group update for what it folds), every root version evaluated."""
    if async_rule not in RULES:
        raise ValueError(f"async_rule must be one of {RULES}, got {async_rule!r}")
    return {
        "dataset": DATASET,
        "algorithm": "sgd",
        "model": {"sizes": [784, 256, 10], "activations": ["tanh", "softmax"], "loss": "ce"},
        "hyper": {"lr": 0.05, "batch_size": 32},
        "aggregation": "async",
        "async_rule": async_rule,
        "target_accuracy": TARGET,
        "max_epochs": 100,
        "eval_every": 1,
        "checkpoint_every": 1000,
        "max_staleness": 4 * devices,
        "task_seconds": task_seconds,
        "round_deadline": 60.0,
        "default_task_samples": 32,
        "min_task_samples": 8,
        "max_task_samples": max_task_samples,
        "seed": seed,
    }


@dataclass(frozen=True)
class Reached:
    seconds: float | None  # start -> the making of the first version at or above the target
    version: int | None
    samples: int | None  # samples folded into the root's model up to that version
    best: float | None  # the best test accuracy the root evaluated
    versions: int  # root versions made


class TargetWatch:
    """The root's job events folded: when each version was made (and the samples it holds),
    and the first version evaluated at or above ``target``."""

    def __init__(self, target: float) -> None:
        if not 0 < target <= 1:
            raise ValueError(f"a target accuracy lies in (0, 1], got {target!r}")
        self.target = target
        self.made: dict[int, tuple[float, int]] = {}  # version -> (made at, samples so far)
        self.hit: int | None = None
        self.best: float | None = None
        self._samples = 0

    def add(self, kind: str, at: float, data: dict[str, Any]) -> None:
        if kind == "model_updated":
            self._samples += int(data.get("samples", 0))
            self.made[int(data["version"])] = (at, self._samples)
        elif kind == "model_evaluated":
            accuracy = data.get("accuracy")
            if accuracy is None:
                return
            self.best = accuracy if self.best is None else max(self.best, accuracy)
            version = int(data["version"])
            if accuracy >= self.target and (self.hit is None or version < self.hit):
                self.hit = version

    @property
    def reached(self) -> bool:
        return self.hit is not None and self.hit in self.made

    def result(self, start: float) -> Reached:
        """Times from ``start`` (the same wall clock as the events' ``at``)."""
        if self.hit is None or self.hit not in self.made:
            return Reached(None, None, None, self.best, len(self.made))
        at, samples = self.made[self.hit]
        return Reached(at - start, self.hit, samples, self.best, len(self.made))


class RealExecutor(Executor):
    """A device that trains for real: the worker's :class:`NumpyExecutor` (training in
    ``pool``), its model pull and update push paced by the device's link."""

    def __init__(self, profile: DeviceProfile, pacer: LinkPacer, pool: ThreadPoolExecutor) -> None:
        self.profile = profile
        self.pacer = pacer
        self.inner = NumpyExecutor(pool=pool)
        self._pulled: tuple[str, int] | None = None

    def wants_samples(self, task: TaskSpec) -> bool:
        return self.inner.wants_samples(task)

    def check(self, task: TaskSpec) -> None:
        self.inner.check(task)

    async def execute(
        self, task: TaskSpec, params: Params, x: np.ndarray, y: np.ndarray
    ) -> TaskResult:
        link = 0.0
        if self._pulled != (task.job_id, task.version):
            link += await self.pacer.transfer(params_nbytes(params), "download")
            self._pulled = (task.job_id, task.version)
        done = await self.inner.execute(task, params, x, y)
        link += await self.pacer.transfer(params_nbytes(done.params), "upload")
        return dataclasses.replace(
            done,
            busy_seconds=done.busy_seconds + link,
            link_seconds=link,
            overhead_seconds=link,
        )


@dataclass(frozen=True)
class AccuracyRun:
    rate_mbit: float
    devices: int
    topology: str
    rep: int
    reached: Reached
    wall: float  # seconds the fleet ran (to the target, or the limit)
    tasks: int  # tasks the devices finished
    samples_trained: int  # samples the devices trained
    failed: int  # devices whose daemon ended with an error
    sim_cpu: float  # the simulator process' CPU seconds per wall second (1.0 = one core)
    train_busy: float  # training seconds / (wall x training threads)
    machine_cpu: float  # the whole machine's busy cores (every process, others' work too)
    root_cpu: float  # the root leader process' cores
    link_bytes: tuple[int, int]  # root link bytes down (to the devices), up, over the run
    note: str = ""  # auto: what the root chose, and when
    rule: str = "fedasync"  # the root's async rule


# -- one run, inside the client namespace ---------------------------------------------------


def _busy_cores() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def _promotion(first: Promotion, started: datetime) -> str:
    busy = "unknown" if first.link_busy is None else f"{first.link_busy:.0%}"
    sizes = ", ".join(f"{leader}: {len(ws)} devices" for leader, ws in first.groups.items())
    return (
        f"promoted {(first.at - started).total_seconds():.1f} s after the start, at "
        f"{first.workers} workers with the link {busy} busy ({first.reason}); groups planned "
        f"{sizes} (later devices join the smallest)"
    )


def _link_bytes(device: str) -> tuple[int, int]:
    return net_dev_bytes(Path("/proc/net/dev").read_text(), device)


async def _point(args: argparse.Namespace) -> AccuracyRun:
    profiles = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "sgd")
    # auto: every device at the root, which splits by itself (the sub-leaders stand by)
    n, subs_n = args.devices, TOPOLOGIES[args.topology]
    beat = max(5.0, n / 40)
    spec = job_spec(n, args.task_seconds, args.max_task_samples, args.rep, args.async_rule)
    job_id = await submit_job(args.root, spec)
    watch = TargetWatch(TARGET)

    def on_event(event: Any) -> None:
        watch.add(event.kind, event.at, json.loads(event.data_json or "{}"))

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(args.train_threads, "train"))
        subs = stack.enter_context(sub_leaders(args.root, subs_n, Path(args.state), beat))
        host = FleetHost(
            subs if subs and args.topology != "auto" else [args.root],
            TOKEN,
            profiles,
            shard_of(n, 1, 0),
            executor=lambda p, link: RealExecutor(p, link, pool),
            datasets=[DATASET],
        )
        trained: list[tuple[int, float]] = []
        for daemon in host.daemons:
            daemon.on_task.append(lambda t: trained.append((t.samples, t.train_seconds)))
        started = datetime.now(UTC)
        me, root = psutil.Process(), psutil.Process(args.leader_pid)
        link0 = _link_bytes(args.client_dev)
        cpu0, root0, busy0 = sum(me.cpu_times()[:2]), sum(root.cpu_times()[:2]), _busy_cores()
        start, t0 = time.time(), time.monotonic()
        running = asyncio.create_task(host.run())
        watching = asyncio.create_task(watch_job(args.root, job_id, on_event))
        try:
            while not watch.reached and time.monotonic() - t0 < args.limit:
                if watching.done() or running.done():
                    break
                await asyncio.sleep(0.25)
            wall = time.monotonic() - t0
            link1 = _link_bytes(args.client_dev)
            cpu1, root1, busy1 = sum(me.cpu_times()[:2]), sum(root.cpu_times()[:2]), _busy_cores()
        finally:
            host.stop()
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watching
            await running
    note = ""
    if args.topology == "auto":
        chosen = promotions(Path(args.state) / "leader.log")
        note = _promotion(chosen[0], started) if chosen else "the root did not promote"
    return AccuracyRun(
        note=note,
        rule=args.async_rule,
        rate_mbit=args.rate,
        devices=n,
        topology=args.topology,
        rep=args.rep,
        reached=watch.result(start),
        wall=wall,
        tasks=len(trained),
        samples_trained=sum(s for s, _ in trained),
        failed=len(host.failures),
        sim_cpu=(cpu1 - cpu0) / wall,
        train_busy=sum(t for _, t in trained) / (wall * args.train_threads),
        machine_cpu=(busy1 - busy0) / wall,
        root_cpu=(root1 - root0) / wall,
        link_bytes=(link1[0] - link0[0], link1[1] - link0[1]),
    )


# -- the sweep, from the host namespace -----------------------------------------------------


def run_point(
    link: ShapedLink, topology: str, rep: int, where: Path, args: argparse.Namespace
) -> AccuracyRun:
    """A root in the server namespace, a forwarder to it, and the run's fleet process."""
    where.mkdir(parents=True)
    root = root_argv(where, args.devices)
    if topology == "auto":
        root += auto_flags(link.rate_mbit, link.server_dev)
    with spawned(link.command("server", root), where / "leader.log") as leader:
        port = leader_port(where / "leader.port", leader)
        fwd = [sys.executable, "-m", "bench.tcpfwd", f"{link.server_ip}:{port}", str(port)]
        with spawned(link.command("server", fwd), where / "fwd.log"):
            time.sleep(0.5)
            fleet = [sys.executable, "-m", "bench.fleet_accuracy", "point"]
            fleet += ["--out", str(where / "r.json"), "--root", f"{link.server_ip}:{port}"]
            fleet += ["--leader-pid", str(leader.pid), "--rate", f"{link.rate_mbit:g}"]
            fleet += ["--devices", str(args.devices), "--topology", topology]
            fleet += ["--rep", str(rep), "--state", str(where), "--client-dev", link.client_dev]
            fleet += ["--limit", f"{args.limit:g}", "--task-seconds", f"{args.task_seconds:g}"]
            fleet += ["--max-task-samples", str(args.max_task_samples)]
            fleet += ["--train-threads", str(args.train_threads)]
            fleet += ["--async-rule", args.async_rule]
            done = subprocess.run(
                link.command("client", fleet), cwd=REPO, timeout=args.limit + 180, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"{topology} rep {rep}: the fleet process ended {done.returncode}"
                )
    return load_run(json.loads((where / "r.json").read_text()))


def load_run(data: dict[str, Any]) -> AccuracyRun:
    data["reached"] = Reached(**data["reached"])
    data["link_bytes"] = tuple(data["link_bytes"])
    return AccuracyRun(**data)


def _sweep(args: argparse.Namespace) -> int:
    plan(args.rates, [args.devices], args.topologies)  # the same checks as bench.fleet_link
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"bench.fleet_accuracy: {reason}", file=sys.stderr)
        return 2
    runs: list[AccuracyRun] = []
    with tempfile.TemporaryDirectory(prefix="eddl-fleetacc-") as tmp:
        for rate in args.rates:
            with shaped_link(rate) as link:
                for rep in range(args.reps):
                    k = rep % len(args.topologies)  # a rotated order: load drifts, not a bias
                    for topology in [*args.topologies[k:], *args.topologies[:k]]:
                        where = Path(tmp) / f"{rate:g}-{topology}-{rep}"
                        try:
                            runs.append(run_point(link, topology, rep, where, args))
                        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                            print(f"bench.fleet_accuracy: {exc}", file=sys.stderr)
                            continue
                        r = runs[-1]
                        print(f"{rate:g} Mbit/s {topology} rep {rep}: {r.reached} "
                              f"wall {r.wall:.1f} s CPU {r.sim_cpu:.2f}", flush=True)  # fmt: skip
    if args.json is not None:  # every run, to write the report again: ``report``
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in runs]))
    command = f"python -m bench.fleet_accuracy {' '.join(sys.argv[1:])}"
    _write(describe(runs, args, f"Command: `{command}`"), args.no_write)
    return 0


def _write(body: str, no_write: bool) -> None:
    if no_write:
        print(body)
    else:
        write_section("fleet-accuracy", "Fleet simulator: time to 90% with real training", body)


def _report(args: argparse.Namespace) -> int:
    """The section again from the runs of earlier sweeps (``run --json``), one per command."""
    runs = [load_run(d) for path in args.runs for d in json.loads(path.read_text())]
    commands = "Commands (the runs below, in this order):\n\n" + "\n".join(
        f"* `{c}`" for c in args.commands
    )
    _write(describe(runs, args, commands), args.no_write)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_accuracy", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the sweep: shaped links, leaders and fleets")
    point = sub.add_parser("point", help="one run's fleet (run by `run`, in the client ns)")
    report = sub.add_parser("report", help="write the section from the runs of `run --json`")
    report.add_argument("runs", nargs="+", type=Path)
    report.add_argument("--commands", nargs="+", default=[], help="the commands that ran")
    report.add_argument("--no-write", action="store_true", help="print, do not write")
    for p in (run, point, report):
        p.add_argument("--devices", type=int, default=64)
        p.add_argument("--limit", type=float, default=240.0, help="seconds before giving up")
        p.add_argument("--task-seconds", type=float, default=1.0)
        p.add_argument("--max-task-samples", type=int, default=4096)
        p.add_argument("--train-threads", type=int, default=2)
        p.add_argument("--async-rule", choices=RULES, default=RULES[0], help="the root's rule")
    run.add_argument(
        "--rates", type=lambda s: [float(r) for r in s.split(",")], default=[20.0, 100.0]
    )
    run.add_argument("--topologies", nargs="+", default=["flat", "1-4"])
    run.add_argument("--reps", type=int, default=1)
    run.add_argument("--no-write", action="store_true", help="print, do not write the report")
    run.add_argument("--json", type=Path, help="also write every run to this file")
    for flag in ("--root", "--topology", "--state", "--client-dev"):
        point.add_argument(flag, required=True)
    point.add_argument("--out", required=True, type=Path)
    point.add_argument("--leader-pid", type=int, required=True)
    point.add_argument("--rate", type=float, required=True)
    point.add_argument("--rep", type=int, required=True)
    args = parser.parse_args(argv)
    if not (args.limit > 0 and args.task_seconds > 0 and args.train_threads >= 1):
        parser.error("--limit and --task-seconds must be > 0, --train-threads >= 1")
    if args.command == "report":
        return _report(args)
    if args.command == "run":
        if args.reps < 1:
            parser.error("--reps must be >= 1")
        try:
            return _sweep(args)
        except ValueError as exc:
            print(f"bench.fleet_accuracy: {exc}", file=sys.stderr)
            return 2
    configure_logging("json", "WARNING")
    result = asyncio.run(_point(args))
    args.out.write_text(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
