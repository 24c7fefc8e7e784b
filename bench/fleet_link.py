"""The fleet simulator with the root behind a ``tc tbf``-shaped link: flat vs split, BUC per n.

``python -m bench.fleet_link run --rates 100,20 --devices 4 8 16 32 64 128`` measures, for
each root link rate, device count and topology, a fleet of virtual devices
(:mod:`bench.fleet_devices`) against real leader processes, with every byte to or from the
root crossing a shaped link:

* two network namespaces joined by a veth pair shaped in both directions
  (:func:`eddl.profiler.netlab.shaped_link`); the root leader runs in the *server* namespace
  (``--insecure`` binds loopback, so :mod:`bench.tcpfwd` relays the veth address to it; its
  metrics endpoint listens on the veth address);
* the devices (on one asyncio loop, :func:`bench.fleet.run_fleet`) and the sub-leaders run in
  the *client* namespace, in one process per point (``python -m bench.fleet_link point``),
  so device <-> sub-leader traffic stays on that namespace's loopback, unshaped.

Topologies (:data:`TOPOLOGIES`): ``flat`` (every device at the root), ``1-2`` and ``1-4``
(EDDL's fixed two-level trees: that many sub-leaders started by hand, device ``i`` at
sub-leader ``i mod k``), and ``auto`` (every device at the root, which runs ``--split auto``
with the link's rate as its declared capacity and four standby sub-leaders, as many as the
largest fixed tree has; measured once it promoted: :mod:`bench.fleet_split`). The root link's
use is the client end's byte counters (``/proc/net/dev`` of the client namespace) over the
window, per direction, over the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.fleet import FleetResult, fleet_job, run_fleet
from bench.fleet_devices import PROFILES_DIR, load_profiles
from bench.fleet_procs import sub_leaders
from bench.fleet_split import auto_flags, describe_promotion, promoted, promotions
from bench.report import markdown_table, write_section
from bench.scale import TOKEN, stop
from eddl.cli.admin_client import submit_job
from eddl.log import configure_logging
from eddl.profiler.netlab import ShapedLink, netns_unavailable_reason, shaped_link

__all__ = [
    "TOPOLOGIES",
    "Point",
    "leader_port",
    "link_use",
    "main",
    "net_dev_bytes",
    "plan",
    "root_argv",
    "spawned",
]

REPO = Path(__file__).resolve().parent.parent
MODEL = (784, 256, 10)  # ~0.8 MB of float32
METRICS_PORT = 9464
# name -> sub-leaders started beside the root (auto: the standby candidates, as many as the
# largest fixed tree has sub-leaders: the root decides whether and how many to promote)
FIXED = {"flat": 0, "1-2": 2, "1-4": 4}
TOPOLOGIES = {**FIXED, "auto": max(FIXED.values())}


@dataclass(frozen=True)
class Point:
    """One measurement: the root link's rate, the devices, the topology."""

    rate_mbit: float
    devices: int
    topology: str

    @property
    def sub_leaders(self) -> int:
        return TOPOLOGIES[self.topology]


def plan(rates: Sequence[float], counts: Sequence[int], topologies: Sequence[str]) -> list[Point]:
    """Every (rate, count, topology), rate by rate, count by count; bad values are refused."""
    if not rates or not counts or not topologies:
        raise ValueError("give at least one rate, one device count and one topology")
    for rate in rates:
        if not (math.isfinite(rate) and 0.1 <= rate <= 10_000):
            raise ValueError(f"a root link rate lies in [0.1, 10000] Mbit/s, got {rate!r}")
    for n in counts:
        if n < 1:
            raise ValueError(f"a device count must be >= 1, got {n}")
    for topology in topologies:
        if topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {topology!r}; known: {', '.join(TOPOLOGIES)}")
        if n_subs := TOPOLOGIES[topology]:
            short = [n for n in counts if n < n_subs]
            if short:
                raise ValueError(f"{topology} needs >= {n_subs} devices, got {short}")
    return [Point(r, n, t) for r in rates for n in counts for t in topologies]


def net_dev_bytes(text: str, device: str) -> tuple[int, int]:
    """Bytes received and sent by ``device``, from the text of ``/proc/net/dev``."""
    for line in text.splitlines():
        name, sep, counters = line.partition(":")
        if sep and name.strip() == device:
            fields = counters.split()
            return int(fields[0]), int(fields[8])
    raise ValueError(f"no interface {device!r} in /proc/net/dev")


def link_use(nbytes: int, seconds: float, rate_mbit: float) -> float:
    """The share of a link of ``rate_mbit`` that ``nbytes`` in ``seconds`` used."""
    if not (seconds > 0 and rate_mbit > 0) or nbytes < 0:
        raise ValueError("link use needs bytes >= 0, seconds > 0 and a rate > 0")
    return nbytes * 8 / (seconds * rate_mbit * 1e6)


# -- one point, inside the client namespace -------------------------------------------------


def _counter(device: str) -> tuple[int, int]:
    return net_dev_bytes(Path("/proc/net/dev").read_text(), device)


async def _point(args: argparse.Namespace) -> FleetResult:
    point = Point(args.rate, args.devices, args.topology)
    state = Path(args.state)
    profiles = load_profiles(sorted(PROFILES_DIR.glob("*.json")), "sgd")
    beat = max(5.0, point.devices / 40)
    await submit_job(args.root, fleet_job(point.devices, MODEL, 10**8, args.task_seconds))
    log = Path(args.root_log)
    with contextlib.ExitStack() as stack:
        subs: list[str] = []
        if point.sub_leaders:
            subs = stack.enter_context(sub_leaders(args.root, point.sub_leaders, state, beat))
        auto = point.topology == "auto"
        started = datetime.now(UTC)
        # auto: measured once the root promoted, or flat if it did not within 40 s of the ramp
        give_up = time.monotonic() + point.devices / 20 + 40
        result = await run_fleet(
            subs if subs and not auto else [args.root],
            args.metrics,
            args.leader_pid,
            profiles,
            point.devices,
            args.seconds,
            warmup=args.warmup,
            ready=(lambda: promoted(log) or time.monotonic() > give_up) if auto else None,
            watch=subs if auto else (),
            link=functools.partial(_counter, args.client_dev),
        )
        if auto:
            chosen = promotions(log)
            note = (
                describe_promotion(chosen[0], started, result.members)
                if chosen
                else "no promotion within 40 s after the last device started: stayed flat"
            )
            result = dataclasses.replace(result, note=note)
    return dataclasses.replace(result, topology=point.topology)


# -- the sweep, from the host namespace -----------------------------------------------------


@contextlib.contextmanager
def spawned(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


def leader_port(path: Path, proc: subprocess.Popen[bytes], within: float = 60.0) -> int:
    deadline = time.monotonic() + within
    while not (path.exists() and path.read_text().strip().isdigit()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no port in {path}; see its log beside it")
        time.sleep(0.05)
    return int(path.read_text())


def root_argv(where: Path, devices: int) -> list[str]:
    """The root leader of a point: plaintext on loopback (the forwarder relays the veth address
    to it), its state and port file under ``where``, heartbeats patient with many devices."""
    beat = max(5.0, devices / 40)
    root = [sys.executable, "-P", "-m", "eddl.leader.main", "--insecure"]
    root += ["--bind", "127.0.0.1:0", "--state-dir", str(where / "leader")]
    root += ["--join-token", TOKEN, "--port-file", str(where / "leader.port")]
    return [*root, "--heartbeat-interval", f"{beat:g}"]


def run_point(link: ShapedLink, point: Point, where: Path, args: argparse.Namespace) -> FleetResult:
    """A root in the server namespace, a forwarder to it, and the point's fleet process."""
    where.mkdir(parents=True)
    root = root_argv(where, point.devices)
    root += ["--metrics-bind", f"{link.server_ip}:{METRICS_PORT}"]
    if point.topology == "auto":
        root += auto_flags(point.rate_mbit, link.server_dev)
    with spawned(link.command("server", root), where / "leader.log") as leader:
        port = leader_port(where / "leader.port", leader)
        fwd = [sys.executable, "-m", "bench.tcpfwd", f"{link.server_ip}:{port}", str(port)]
        with spawned(link.command("server", fwd), where / "fwd.log"):
            time.sleep(0.5)
            fleet = [sys.executable, "-m", "bench.fleet_link", "--seconds", f"{args.seconds:g}"]
            fleet += ["--warmup", f"{args.warmup:g}", "--task-seconds", f"{args.task_seconds:g}"]
            fleet += ["point", "--out", str(where / "r.json")]
            fleet += ["--root", f"{link.server_ip}:{port}", "--leader-pid", str(leader.pid)]
            fleet += ["--metrics", f"http://{link.server_ip}:{METRICS_PORT}/metrics"]
            fleet += ["--rate", f"{point.rate_mbit:g}", "--devices", str(point.devices)]
            fleet += ["--topology", point.topology, "--state", str(where)]
            fleet += ["--root-log", str(where / "leader.log"), "--client-dev", link.client_dev]
            limit = point.devices / 20 + 60 + args.warmup + args.seconds + 120
            done = subprocess.run(
                link.command("client", fleet), cwd=REPO, timeout=limit, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"{point}: the fleet process ended {done.returncode}")
    data = json.loads((where / "r.json").read_text())
    data["members"] = tuple(data["members"])
    data["link_bytes"] = tuple(data["link_bytes"])
    return FleetResult(**data)


LABELS = {"flat": "flat", "1-2": "1-2-n", "1-4": "1-4-n", "auto": "root's choice"}


def _table(rows: Sequence[tuple[Point, FleetResult]]) -> str:
    body = []
    for p, r in rows:
        down, up = (link_use(b, r.seconds, p.rate_mbit) for b in r.link_bytes)
        body.append(
            [f"{p.rate_mbit:g}", p.devices, LABELS[p.topology], r.alive,
             f"{r.failed}" if not r.failed else f"{r.failed} ({r.failed_why})",
             f"{r.device_updates_per_s:.2f}", f"{r.updates_per_s:.2f}",
             f"{1000 * r.t_sync:.0f}", f"{r.devices / r.t_sync:.1f}",
             f"{1000 * r.root_t_sync:.0f}", f"{r.root_buc:.1f}",
             f"{down:.0%} / {up:.0%}", f"{r.host_cpu_share:.2f}"]
        )  # fmt: skip
    return markdown_table(
        ["root link Mbit/s", "devices", "topology", "alive at the root", "devices failed",
         "device updates/s", "root versions/s", "device t_sync ms", "devices' n / t_sync",
         "root t_sync ms", "root BUC (1/s)",
         "root link use down / up", "simulator CPU (cores)"],
        body,
    )  # fmt: skip


def describe(args: argparse.Namespace, rows: Sequence[tuple[Point, FleetResult]]) -> str:
    notes = "".join(
        f"\n\n{p.rate_mbit:g} Mbit/s, {p.devices} devices, root's choice: {r.note}"
        for p, r in rows
        if r.note
    )
    return (
        "The root leader in its own network namespace behind a veth pair shaped with `tc tbf` "
        "in both directions (the rate per direction); the virtual devices of the fleet "
        "simulator (real worker daemons on one asyncio loop, the example profiles, training "
        "slept, their own links paced) and the sub-leaders in the other namespace, so every "
        "byte to or from the root crosses the shaped link and device <-> sub-leader traffic "
        "stays on that namespace's loopback. Async FedAsync job, model 784-256-10 float32 "
        f"(~0.8 MB), task_seconds {args.task_seconds:g}. Topologies: flat; 1-2-n and 1-4-n "
        "(two or four sub-leaders started by hand, device i at sub-leader i mod k); root's "
        "choice (`--split auto` with the link's rate as `--link-capacity-mbps`, "
        f"{TOPOLOGIES['auto']} standby sub-leaders, measured once it promoted). Measured for "
        f"{args.seconds:g} s after every "
        f"device started and {args.warmup:g} s more, one run per row. Root versions/s: updates "
        "the root took (a sub-leader's folded update counts one). t_sync: a device's task "
        "time less its training (model pull and update push, with its leader: the root when "
        "flat, its sub-leader when split, paced by the device's own link as well). Root BUC: "
        "the root's own sync meter (its `eddl_leader_sync*` metrics): the workers it counts "
        "in its window (a sub-leader as the group it folded) over the mean time of the "
        "synchronisations (pull and push, timed at its gRPC edge) in the measured window. "
        "Root link use: the client end's byte counters over the "
        "window and the rate, down (root to devices) / up. Every process shares this "
        "machine's 2 cores with other work: figures move between runs.\n\n" + _table(rows) + notes
    )


def _sweep(args: argparse.Namespace) -> int:
    points = plan(args.rates, args.devices, args.topologies)
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"bench.fleet_link: {reason}", file=sys.stderr)
        return 2
    rows: list[tuple[Point, FleetResult]] = []
    with tempfile.TemporaryDirectory(prefix="eddl-fleetlink-") as tmp:
        for rate in args.rates:
            with shaped_link(rate) as link:
                for point in (p for p in points if p.rate_mbit == rate):
                    where = Path(tmp) / f"{rate:g}-{point.devices}-{point.topology}"
                    try:
                        rows.append((point, run_point(link, point, where, args)))
                    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                        print(f"bench.fleet_link: {point}: {exc}", file=sys.stderr)
                        continue
                    print(_table(rows[-1:]).splitlines()[-1], flush=True)
    body = describe(args, rows)
    if args.no_write:
        print(body)
    else:
        write_section(
            "fleet-link", "Fleet simulator: flat vs split with the root's link shaped", body
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_link", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--task-seconds", type=float, default=2.0)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="the sweep: shaped links, leaders and fleets")
    run.add_argument(
        "--rates", type=lambda s: [float(r) for r in s.split(",")], default=[100.0, 20.0]
    )
    run.add_argument("--devices", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128])
    run.add_argument("--topologies", nargs="+", default=list(TOPOLOGIES))
    run.add_argument("--no-write", action="store_true", help="print, do not write the report")
    point = sub.add_parser("point", help="one point's fleet (run by `run`, in the client ns)")
    for flag in ("--root", "--metrics", "--topology", "--state", "--root-log", "--client-dev"):
        point.add_argument(flag, required=True)
    point.add_argument("--out", required=True, type=Path)
    point.add_argument("--leader-pid", type=int, required=True)
    point.add_argument("--rate", type=float, required=True)
    point.add_argument("--devices", type=int, required=True)
    args = parser.parse_args(argv)
    if not (args.seconds > 0 and args.warmup >= 0 and args.task_seconds > 0):
        parser.error("--seconds and --task-seconds must be > 0, --warmup >= 0")
    try:
        if args.command == "run":
            return _sweep(args)
        configure_logging("json", "WARNING")
        result = asyncio.run(_point(args))
    except ValueError as exc:
        print(f"bench.fleet_link: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(dataclasses.asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
