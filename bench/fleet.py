"""The fleet simulator: many virtual devices against one real leader, and what it costs the leader.

``python -m bench.fleet run --devices 1000 --seconds 30`` starts a real ``eddl-leader`` process
(plaintext on loopback, its Prometheus endpoint on), submits an async FedAsync job, runs the
devices (:mod:`bench.fleet_devices`: real worker daemons whose training sleeps a device
profile's time and whose links are paced by the profile) on one asyncio loop in this process,
and once every device has joined and a warm-up passed, measures for ``seconds``:

* updates/s taken by the leader, and the devices it counts alive;
* from the leader's own histogram ``eddl_leader_command_seconds`` (CPU time of its owner
  thread per command): the scheduler's cost per update (``_hand_out``, ``_hand_out_many`` and
  ``_hand_out_woken``, the GetTask commands) and the aggregator's (``submit_update``: the
  checks and the fold), and the heartbeats' CPU per second;
* the leader process' CPU per update (all its threads: gRPC, the owner, the store writer) and
  this process' CPU share (the devices' side).

``python -m bench.fleet host --leader HOST:PORT --devices N --hosts H --host-index I`` runs one
host's share of a fleet (device ``i`` on host ``i mod H``) against a running leader, so the
devices can spread over several processes or machines; see ``docs/benchmarks.md`` for running
hosts as Ray actors (an optional extra, not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import math
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.fleet_devices import PROFILES_DIR, DeviceProfile, FleetHost, load_profiles, shard
from bench.fleet_procs import fleet_leader, sub_leaders
from bench.fleet_report import describe
from bench.fleet_split import auto_flags, describe_promotion, promoted, promotions
from bench.report import write_section
from bench.scale import TOKEN
from eddl.cli.admin_client import submit_job
from eddl.log import configure_logging

__all__ = ["FleetResult", "LeaderFigures", "fleet_job", "main", "parse_figures", "run_fleet"]

SCHEDULER = ("_hand_out", "_hand_out_many", "_hand_out_woken")
AGGREGATOR = ("submit_update",)
HEARTBEAT = ("beat",)


@dataclass(frozen=True)
class LeaderFigures:
    """What one scrape of the leader's metrics says (counters since the leader started)."""

    updates: float  # updates taken, every outcome
    alive: float  # worker nodes alive
    command_seconds: dict[str, float]  # owner-thread CPU seconds per command
    command_counts: dict[str, float]
    syncs: float = 0.0  # synchronisations the root's sync meter timed
    sync_seconds: float = 0.0  # and their seconds
    sync_workers: float = 0.0  # the workers it counts in its window now

    def seconds(self, names: Sequence[str]) -> float:
        return sum(self.command_seconds.get(n, 0.0) for n in names)


def parse_figures(text: str) -> LeaderFigures:
    """Read :class:`LeaderFigures` from the leader's Prometheus text exposition."""
    updates = alive = syncs = sync_seconds = sync_workers = 0.0
    seconds: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "eddl_leader_updates_accepted_total":
                updates += s.value
            elif s.name == "eddl_leader_nodes_alive" and s.labels.get("role") == "worker":
                alive = s.value
            elif s.name == "eddl_leader_command_seconds_sum":
                seconds[s.labels["command"]] = s.value
            elif s.name == "eddl_leader_command_seconds_count":
                counts[s.labels["command"]] = s.value
            elif s.name == "eddl_leader_syncs_total":
                syncs = s.value
            elif s.name == "eddl_leader_sync_seconds_total":
                sync_seconds = s.value
            elif s.name == "eddl_leader_sync_workers":
                sync_workers = s.value
    return LeaderFigures(updates, alive, seconds, counts, syncs, sync_seconds, sync_workers)


def _scrape(url: str) -> LeaderFigures:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return parse_figures(reply.read().decode())


@dataclass(frozen=True)
class FleetResult:
    topology: str
    devices: int
    device_updates_per_s: float  # tasks the devices finished (their updates taken)
    alive: int  # devices the leader counted alive at the end
    failed: int  # devices whose daemon ended with an error
    failed_why: str  # the commonest errors, with their counts
    seconds: float
    updates_per_s: float  # updates the root took (a sub-leader's folded update counts one)
    t_sync: float  # mean seconds of a device's synchronisation (pull and push, paced)
    scheduler_us: float  # owner CPU per update in GetTask commands
    aggregator_us: float  # owner CPU per update in submit_update
    heartbeat_ms_per_s: float  # owner CPU per second of heartbeats
    leader_cpu_ms: float  # the leader process' CPU per update
    host_cpu_share: float  # this process' CPU seconds per wall second (1.0 = one core)
    members: tuple[int, ...] = ()  # devices with each watched sub-leader at the end
    note: str = ""  # auto: what the root decided
    link_bytes: tuple[int, int] = (0, 0)  # bytes the ``link`` counter saw in, out (window)
    root_buc: float = math.nan  # the root's own BUC: its workers / its mean t_sync (window)
    root_t_sync: float = math.nan  # the root's mean t_sync in the window


def fleet_job(
    devices: int, sizes: Sequence[int], rounds: int, task_seconds: float
) -> dict[str, Any]:
    """An async FedAsync job sized for ``devices`` (staleness 4 per device, no evaluation)."""
    hidden = len(sizes) - 2
    return {
        "dataset": "mnist-10k",
        "algorithm": "sgd",
        "model": {
            "sizes": list(sizes),
            "activations": ["tanh"] * hidden + ["sigmoid"],
            "loss": "bce",
        },
        "hyper": {"lr": 0.1, "batch_size": 8},
        "rounds": rounds,
        "max_epochs": 10**6,
        "aggregation": "async",
        "async_rule": "fedasync",
        "eval_every": 10**6,
        "checkpoint_every": 1000,
        "max_staleness": 4 * devices,
        "task_seconds": task_seconds,
        "round_deadline": 60.0,
        "default_task_samples": 32,
        "min_task_samples": 8,
        "max_task_samples": 256,
    }


async def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no end of the {what} within {within:g} s")
        await asyncio.sleep(0.25)


async def run_fleet(
    targets: Sequence[str],
    metrics_url: str,
    leader_pid: int,
    profiles: Sequence[DeviceProfile],
    devices: int,
    seconds: float,
    warmup: float = 5.0,
    ramp_per_s: float = 20.0,
    ready: Any = None,
    watch: Sequence[str] = (),
    link: Callable[[], tuple[int, int]] | None = None,
) -> FleetResult:
    """Run ``devices`` against the leaders ``targets`` (the root, or its sub-leaders: device
    ``i`` dials ``targets[i % len(targets)]``), coming online ``ramp_per_s`` a second, and once
    all started (and ``ready()``, when given, within 60 s more) and ``warmup`` passed, measure
    for ``seconds``; the figures with ``root`` in their name are the root's (``metrics_url``,
    ``leader_pid``); ``members``: the devices with each sub-leader of ``watch`` at the end;
    ``link``, when given, counts a link's bytes (in, out), read at the window's ends."""
    host = FleetHost(targets, TOKEN, profiles, shard(devices, 1, 0), ramp_per_s=ramp_per_s)
    running = asyncio.create_task(host.run())
    leader = psutil.Process(leader_pid)
    me = psutil.Process()
    try:
        # Every device online (or failed), then a warm-up: the leader's figures at the end
        # say how many it still counts alive.
        ramp = devices / ramp_per_s
        await _until(lambda: host.started == devices or running.done(), ramp + 60, "ramp")
        if ready is not None:
            await _until(lambda: ready() or running.done(), 60, "wait for the root's split")
        await asyncio.sleep(warmup)
        before = await asyncio.to_thread(_scrape, metrics_url)
        host.syncs.clear()
        done0 = host.tasks_done
        link0 = link() if link is not None else (0, 0)
        cpu0, mine0, t0 = sum(leader.cpu_times()[:2]), sum(me.cpu_times()[:2]), time.monotonic()
        await asyncio.sleep(seconds)
        link1 = link() if link is not None else (0, 0)
        after = await asyncio.to_thread(_scrape, metrics_url)
        syncs, done1 = list(host.syncs), host.tasks_done
        cpu1, mine1, t1 = sum(leader.cpu_times()[:2]), sum(me.cpu_times()[:2]), time.monotonic()
        members = tuple(sum(d.link.address == a for d in host.daemons) for a in watch)
    finally:
        host.stop()
        await running
    updates = max(after.updates - before.updates, 1.0)
    wall = t1 - t0
    timed = after.syncs - before.syncs
    root_t_sync = (after.sync_seconds - before.sync_seconds) / timed if timed else math.nan
    kinds = Counter(f.split(": ")[1] for f in host.failures)
    return FleetResult(
        devices=devices,
        alive=int(after.alive),
        failed=len(host.failures),
        failed_why=", ".join(f"{n}x {k}" for k, n in kinds.most_common(3)),
        seconds=wall,
        topology=(
            f"auto ({len(watch)} candidates)"
            if watch
            else "flat"
            if len(targets) == 1
            else f"split ({len(targets)} sub-leaders)"
        ),
        device_updates_per_s=(done1 - done0) / wall,
        updates_per_s=(after.updates - before.updates) / wall,
        t_sync=statistics.fmean(syncs) if syncs else math.nan,
        scheduler_us=1e6 * (after.seconds(SCHEDULER) - before.seconds(SCHEDULER)) / updates,
        aggregator_us=1e6 * (after.seconds(AGGREGATOR) - before.seconds(AGGREGATOR)) / updates,
        heartbeat_ms_per_s=1e3 * (after.seconds(HEARTBEAT) - before.seconds(HEARTBEAT)) / wall,
        leader_cpu_ms=1e3 * (cpu1 - cpu0) / updates,
        host_cpu_share=(mine1 - mine0) / wall,
        members=members,
        link_bytes=(link1[0] - link0[0], link1[1] - link0[1]),
        root_buc=after.sync_workers / root_t_sync if root_t_sync > 0 else math.nan,
        root_t_sync=root_t_sync,
    )


async def measure(
    state: Path,
    profiles: Sequence[DeviceProfile],
    counts: Sequence[int],
    seconds: float,
    sizes: Sequence[int],
    task_seconds: float,
    ramp_per_s: float = 20.0,
    topologies: Sequence[str] = ("flat",),
    link_mbps: float = 8.0,
) -> list[FleetResult]:
    """Each device count with each topology in turn: ``flat`` (every device at the root),
    ``split`` (two sub-leaders started by hand, the devices shared between them) or ``auto``
    (every device at the root, which runs ``--split auto`` against a declared link of
    ``link_mbps`` with two standby sub-leaders: :mod:`bench.fleet_split`)."""
    results = []
    for n in counts:
        for topology in topologies:
            where = state / f"fleet-{topology}-{n}"
            # A fleet's beats are spread out: one every n / 40 s (25 s for a thousand devices).
            beat = max(5.0, n / 40)
            extra = auto_flags(link_mbps) if topology == "auto" else []
            with fleet_leader(where, beat, extra) as (address, url, pid):
                await submit_job(address, fleet_job(n, sizes, 10**8, task_seconds))
                with contextlib.ExitStack() as stack:
                    targets, subs = [address], []
                    if topology != "flat":
                        subs = stack.enter_context(sub_leaders(address, 2, where, beat))
                    if topology == "split":
                        targets = subs
                    started = datetime.now(UTC)
                    log = where / "leader.log"
                    result = await run_fleet(
                        targets,
                        url,
                        pid,
                        profiles,
                        n,
                        seconds,
                        ramp_per_s=ramp_per_s,
                        ready=functools.partial(promoted, log) if topology == "auto" else None,
                        watch=subs if topology == "auto" else (),
                    )
                    if topology == "auto":
                        note = describe_promotion(promotions(log)[0], started, result.members)
                        result = dataclasses.replace(result, note=note)
                    results.append(result)
    return results


async def _host(args: argparse.Namespace, profiles: Sequence[DeviceProfile]) -> int:
    numbers = shard(args.devices, args.hosts, args.host_index)
    host = FleetHost([args.leader], args.token, profiles, numbers, ramp_per_s=args.ramp)
    running = asyncio.create_task(host.run())
    await asyncio.sleep(args.seconds)
    host.stop()
    await running
    print(
        f"host {args.host_index}/{args.hosts}: {len(host.daemons)} devices, "
        f"{host.tasks_done} tasks done"
    )
    return 0


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in text.split("-"))
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"a model looks like 784-16-10, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--profiles",
        nargs="+",
        type=Path,
        default=sorted(PROFILES_DIR.glob("*.json")),
        help="eddl profile --json files the devices play, in turn (default: the examples)",
    )
    parser.add_argument("--ramp", type=float, default=20.0, help="devices online per second")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="a leader and a fleet on this machine, measured")
    run.add_argument("--devices", type=int, nargs="+", default=[1000])
    run.add_argument("--seconds", type=float, default=30.0)
    run.add_argument("--model", type=_sizes, default=(784, 16, 10))
    run.add_argument("--task-seconds", type=float, default=2.0)
    run.add_argument(
        "--topologies",
        nargs="+",
        choices=["flat", "split", "auto"],
        default=["flat"],
        help="per count: flat, two sub-leaders by hand, or the root's own split",
    )
    run.add_argument(
        "--root-link-mbps",
        type=float,
        default=8.0,
        help="auto: the root's declared link capacity (Mbit/s), its busy signal",
    )
    run.add_argument("--no-write", action="store_true", help="print, do not write the report")
    host = sub.add_parser("host", help="one host's share of a fleet against a running leader")
    host.add_argument("--leader", required=True, help="HOST:PORT of the leader")
    host.add_argument("--token", default=TOKEN, help="the leader's join token")
    host.add_argument("--devices", type=int, required=True, help="devices in the whole fleet")
    host.add_argument("--hosts", type=int, default=1)
    host.add_argument("--host-index", type=int, default=0)
    host.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    configure_logging("json", "WARNING")
    try:
        profiles = load_profiles(args.profiles, "sgd")
        if args.command == "host":
            return asyncio.run(_host(args, profiles))
        if min(args.devices) < 1 or not math.isfinite(args.seconds) or args.seconds <= 0:
            parser.error("--devices and --seconds must be positive")
        with tempfile.TemporaryDirectory(prefix="eddl-fleet-") as tmp:
            results = asyncio.run(
                measure(
                    Path(tmp),
                    profiles,
                    args.devices,
                    args.seconds,
                    args.model,
                    args.task_seconds,
                    ramp_per_s=args.ramp,
                    topologies=args.topologies,
                    link_mbps=args.root_link_mbps,
                )
            )
    except ValueError as exc:
        print(f"bench.fleet: {exc}", file=sys.stderr)
        return 2
    body = describe(profiles, args.model, args.seconds, args.ramp, results)
    if args.no_write:
        print(body)
    else:
        if "auto" in args.topologies:  # beside the fleet table, not over it
            write_section("fleet-auto", "Fleet simulator: the root splits by itself", body)
        else:
            write_section("fleet", "Fleet simulator: virtual devices against one leader", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
