"""Cluster benchmarks: heterogeneity, sync/async/auto policies, wire overhead and scale.

    python -m bench.cluster [--part hetero|policies|scale|all] [--reps N] [--quick] [--no-write]
    python -m bench.cluster --part scale --leader-python before=OLD/bin/python \
        --leader-python after=NEW/bin/python [--clients 4,8,16,32] [--seconds 8]

Every run uses real processes (``eddl-leader``/``eddl-worker`` via :class:`LocalCluster`) or,
for the scale part (:mod:`bench.scale`), one leader process and light asyncio clients over
real gRPC, which also measures how fast waiting workers are woken and compares leaders run by
different interpreters side by side. Throttles
emulate heterogeneous devices (a worker with throttle F idles (F-1)x its training CPU time); they
are multiplied by ``--scale`` so that two worker processes per core do not compete for CPU.
Times come from the leader's own event stamps (job_started -> job_completed). Results go to
docs/benchmarks.md (sections cluster-hetero, cluster-policies, cluster-scale).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.disturb import FREEZE_GAP_S, FREEZE_S, churn, freeze
from bench.report import markdown_table, write_section
from bench.scale import scale
from eddl.cli.admin_client import cancel_job, submit_job, watch_job
from eddl.cluster import LocalCluster
from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel

__all__ = ["main"]

MODEL = {"sizes": [784, 128, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}
HYPER = {"lr": 0.1, "batch_size": 8}


def _job(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "dataset": "mnist-10k",
        "algorithm": "sgd",
        "model": MODEL,
        "hyper": HYPER,
        "task_seconds": 0.5,
        "round_deadline": 10.0,
        "max_task_samples": 8192,
    }
    job.update(changes)
    return job


async def _run_job(cluster: LocalCluster, spec: dict[str, Any]) -> dict[str, Any]:
    """Submit ``spec``, wait for its end; seconds from the leader's start/end event stamps."""
    events: list[admin_pb2.JobEvent] = []
    job_id = await submit_job(cluster.address, spec, identity=cluster.identity)
    await asyncio.wait_for(
        watch_job(cluster.address, job_id, events.append, identity=cluster.identity), 900
    )
    start = next(e.at for e in events if e.kind in _STARTS)
    end = events[-1]
    return {
        "job_id": job_id,
        "seconds": end.at - start,
        "end": end.message,
        "switches": _switches(events, start),
    }


_STARTS = ("job_started", "job_resumed")


def _switches(events: Sequence[admin_pb2.JobEvent], start: float) -> list[str]:
    """The job's policy switches, each as ``at <seconds since start> s: <message>``."""
    return [f"at {e.at - start:.1f} s: {e.message}" for e in events if e.kind == "policy_switched"]


# Time to target in the policies part: the first version at which the mean test accuracy of
# the versions made in the trailing _SMOOTH_S seconds (at least _SMOOTH_MIN of them) reaches
# the target. One evaluation is a noisy sample: a single lucky version crossing it says more
# about the noise of SGD than about the policy.
_SMOOTH_S = 2.0
_SMOOTH_MIN = 3
_UNREACHABLE = 0.995  # the job's own target: it runs until the benchmark cancels it


async def _run_to_target(
    cluster: LocalCluster, spec: dict[str, Any], target: float
) -> dict[str, Any]:
    """Run ``spec`` until the smoothed test accuracy reaches ``target``, then cancel it.

    Returns seconds (smoothed, None if never reached), raw (first single version at or above
    ``target``), the final event's message and the policy switches, all timed from the
    leader's own event stamps.
    """
    events: list[admin_pb2.JobEvent] = []
    evals: list[tuple[float, float]] = []
    hits: dict[str, float] = {}
    crossed = asyncio.Event()
    job_id = await submit_job(
        cluster.address, {**spec, "target_accuracy": _UNREACHABLE}, identity=cluster.identity
    )

    def on_event(event: admin_pb2.JobEvent) -> None:
        events.append(event)
        if event.kind in _STARTS:
            hits.setdefault("start", event.at)
        if event.kind != "model_updated" or "start" not in hits:
            return
        accuracy = json.loads(event.data_json or "{}").get("accuracy")
        if accuracy is None:
            return
        evals.append((event.at, float(accuracy)))
        at = event.at - hits["start"]
        if accuracy >= target:
            hits.setdefault("raw", at)
        window = [a for t, a in evals if t >= event.at - _SMOOTH_S]
        if len(window) >= _SMOOTH_MIN and statistics.fmean(window) >= target:
            hits.setdefault("smooth", at)
            crossed.set()

    async def cancel_when_crossed() -> None:
        await crossed.wait()
        await cancel_job(cluster.address, job_id, identity=cluster.identity)

    canceller = asyncio.create_task(cancel_when_crossed())
    try:
        await asyncio.wait_for(
            watch_job(cluster.address, job_id, on_event, identity=cluster.identity), 900
        )
    finally:
        canceller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await canceller
    return {
        "job_id": job_id,
        "seconds": hits.get("smooth"),
        "raw": hits.get("raw"),
        "end": events[-1].message if events else "no events",
        "switches": _switches(events, hits.get("start", events[0].at if events else 0.0)),
    }


def _base_sps() -> float:
    """Samples/s of one unthrottled worker's kernel (this machine, one process)."""
    ds = load_dataset("mnist-10k")
    algo = get_algorithm("sgd", MODEL, HYPER)
    params = algo.init_params(0)
    x = algo.prepare_inputs(ds.x_train[:2000])
    trainer = algo.make_trainer()
    trainer.train(params, x[:200], ds.y_train[:200])
    start = time.perf_counter()
    trainer.train(params, x, ds.y_train[:2000])
    return 2000 / (time.perf_counter() - start)


# -- 1. heterogeneity ---------------------------------------------------------------------------


async def _sample_rates(
    cluster: LocalCluster, rates: dict[str, float], stop: asyncio.Event
) -> None:
    """Keep each worker's latest samples/s as the leader measures it during a job."""
    async with admin_channel(cluster.address, cluster.identity) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        while not stop.is_set():
            reply = await stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10)
            for node in reply.nodes:
                if node.samples_per_second > 0:
                    rates[node.node_id] = node.samples_per_second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def hetero(scale: float, tmp: Path, reps: int) -> str:
    rel = [1.0, 1.0, 2.0, 4.0]
    throttles = [scale * r for r in rel]
    base = _base_sps()
    n = len(load_dataset("mnist-10k").y_train)
    ideal_kernel = n / sum(base / t for t in throttles)
    # Static tasks are default_task_samples long; 250 keeps their round trips from dominating.
    # A 4x-slower worker's first task (before its speed is known) may come back many versions
    # later: max_staleness 64 keeps that work instead of refusing it.
    common = {
        "rounds": 10**6,
        "max_epochs": 1.0,
        "aggregation": "async",
        "async_rule": "fedasync",
        "eval_every": 10**6,
        "default_task_samples": 250,
        "max_staleness": 64,
    }
    runs: list[tuple[float, float, float]] = []  # (ideal from measured speeds, dynamic, static)
    measured = ""
    with LocalCluster(tmp / "hetero", throttles) as cluster:
        await asyncio.to_thread(cluster.start)
        await cluster.wait_for_nodes(len(throttles), 120)
        for rep in range(reps):
            rates: dict[str, float] = {}
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_rates(cluster, rates, stop))
            dynamic = await _run_job(cluster, _job(**common, distribution="dynamic", seed=rep))
            stop.set()
            await sampler
            static = await _run_job(cluster, _job(**common, distribution="static", seed=rep))
            # The in-run ideal uses the speeds the leader measured on this (shared) machine
            # during the dynamic run; the kernel ideal uses one unloaded process's speed / throttle.
            ideal = n / sum(rates.values()) if len(rates) == len(throttles) else ideal_kernel
            runs.append((ideal, dynamic["seconds"], static["seconds"]))
            measured = ", ".join(f"{k} {v:.0f}" for k, v in sorted(rates.items()))
            print(
                f"hetero rep {rep}: ideal {ideal:.2f} dynamic {dynamic['seconds']:.2f} "
                f"static {static['seconds']:.2f}",
                flush=True,
            )
    ideal = statistics.median(r[0] for r in runs)
    dyn = statistics.median(r[1] for r in runs)
    sta = statistics.median(r[2] for r in runs)
    dyn_x = statistics.median(r[1] / r[0] for r in runs)
    speedup = statistics.median(r[2] / r[1] for r in runs)

    def each(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    rows = [
        [
            "ideal, speeds measured in the run",
            f"{ideal:.2f}",
            "1.00",
            "-",
            each([r[0] for r in runs]),
        ],
        [
            "ideal, kernel speed / throttle",
            f"{ideal_kernel:.2f}",
            f"{ideal_kernel / ideal:.2f}",
            "-",
            "-",
        ],
        [
            "dynamic (EDDL)",
            f"{dyn:.2f}",
            f"{dyn_x:.2f}",
            f"{speedup:.2f}",
            each([r[1] for r in runs]),
        ],
        [
            "static equal shards",
            f"{sta:.2f}",
            f"{sta / ideal:.2f}",
            "1.00",
            each([r[2] for r in runs]),
        ],
    ]
    return (
        f"One epoch of mnist-10k ({n} samples), 4 worker processes throttled "
        f"{','.join(f'{r:g}' for r in rel)} (x{scale:g}), sgd 784-128-10, async (FedAsync) "
        f"aggregation (max staleness 64), task target 0.5 s; {reps} repetitions (dynamic and "
        f"static alternate on the same workers, seed = repetition), medians; 'x ideal' and "
        f"'speed-up' are medians of the per-repetition ratios. Unthrottled kernel: "
        f"{base:.0f} samples/s; speeds the leader measured during the last dynamic run "
        f"(samples/s): {measured or 'n/a'}.\n\n"
        + markdown_table(
            ["distribution", "seconds (median)", "x ideal", "speed-up vs static", "each run (s)"],
            rows,
        )
        + "\n\nTargets: dynamic <= 1.25x ideal, >= 1.8x faster than static."
    )


# -- 2. policies --------------------------------------------------------------------------------

POLICIES = ("sync", "async", "auto")
# Three heartbeats (LocalCluster's 0.5 s): long enough for every stale task to be cancelled.
_SETTLE_S = 1.5


SCENARIOS = (
    "one 4x straggler",
    "churn",
    "crashes",
    "homogeneous",
    "one 10x straggler",
    "freezes",
    "homogeneous 8",
)


async def policies(
    scale: float,
    tmp: Path,
    churn_period: float,
    crash_period: float,
    target: float,
    reps: int,
    only: Sequence[str] = SCENARIOS,
    first_rep: int = 0,
) -> str:
    # name -> (throttles, what happens to worker 3: None, "leave", "crash" or "freeze")
    scenarios: dict[str, tuple[list[float], str | None]] = {
        "one 4x straggler": ([scale, scale, scale, 4 * scale], None),
        "churn": ([scale] * 4, "leave"),
        "crashes": ([scale] * 4, "crash"),
        "homogeneous": ([scale] * 4, None),
        "one 10x straggler": ([scale, scale, scale, 10 * scale], None),
        "freezes": ([scale] * 4, "freeze"),
        "homogeneous 8": ([scale] * 8, None),
    }
    rows = []
    details: list[str] = []
    load_start = os.getloadavg()[0]
    for name, (throttles, disturbance) in scenarios.items():
        if name not in only:
            continue
        times: dict[str, list[float]] = {p: [] for p in POLICIES}
        raw: dict[str, list[float]] = {p: [] for p in POLICIES}
        notes: list[str] = []
        switched: list[str] = []
        flips: list[int] = []
        with LocalCluster(tmp / name.replace(" ", "-"), throttles) as cluster:
            await asyncio.to_thread(cluster.start)
            await cluster.wait_for_nodes(len(throttles), 120)
            # A short job first, not timed: a worker's first tasks pay its cold start (imports,
            # loading the dataset; a throttled worker multiplies its first, slow training call
            # until a few tasks set its median), which would land on whichever policy runs
            # first. Sync rounds make every worker finish each of its 8 tasks.
            await _run_job(cluster, _job(rounds=8, aggregation="sync", seed=10**6))
            await asyncio.sleep(_SETTLE_S)
            for rep in range(first_rep, first_rep + reps):
                # Rotate the order so no policy always runs first (or last) in a repetition.
                for policy in POLICIES[rep % 3 :] + POLICIES[: rep % 3]:
                    stop = asyncio.Event()
                    churner = (
                        asyncio.create_task(freeze(cluster.procs["worker-3"], stop))
                        if disturbance == "freeze"
                        else asyncio.create_task(
                            churn(
                                cluster,
                                3,
                                crash_period if disturbance == "crash" else churn_period,
                                stop,
                                crash=disturbance == "crash",
                            )
                        )
                        if disturbance
                        else None
                    )
                    result = await _run_to_target(
                        cluster,
                        _job(max_epochs=4.0, aggregation=policy, async_rule="fedbuff", seed=rep),
                        target,
                    )
                    stop.set()
                    if churner is not None:
                        flips.append(await churner)
                        if cluster.procs["worker-3"].poll() is not None:
                            cluster.start_worker(3)
                        await cluster.wait_for_nodes(len(throttles), 60)
                    # An async job ends with every worker mid-task; those tasks run on until a
                    # heartbeat cancels them. Without a pause the next job (always the same
                    # policy, the rotation keeps the cyclic order) would start late.
                    await asyncio.sleep(_SETTLE_S)
                    if result["seconds"] is None:
                        notes.append(f"{policy} rep {rep}: not reached ({result['end']})")
                    else:
                        times[policy].append(result["seconds"])
                    if result["raw"] is not None:
                        raw[policy].append(result["raw"])
                    print(
                        f"{name} rep {rep} {policy}: {result['seconds']} s (raw {result['raw']}); "
                        f"{result['end']}; {result['switches']}",
                        flush=True,
                    )
                    if policy == "auto":
                        switched.append(
                            " then ".join(_short(m) for m in result["switches"]) or "none"
                        )
                        if result["switches"] and not _details_has(details, name):
                            details.append(f"* {name}: {result['switches'][0]}")
        med = {p: statistics.median(v) if v else math.inf for p, v in times.items()}
        best = min(med["sync"], med["async"])
        low, high = _ratio_interval(times)
        raw_med = {p: statistics.median(v) if v else math.inf for p, v in raw.items()}
        raw_low, raw_high = _ratio_interval(raw)
        churn_note = ""
        if disturbance:
            verb = {"crash": "killed", "leave": "left", "freeze": "frozen"}[disturbance]
            churn_note = f"; worker 3 {verb} {sum(flips)} times"
        rows.append(
            [
                name,
                *(f"{med[p]:.1f} ({', '.join(f'{v:.1f}' for v in times[p])})" for p in POLICIES),
                f"{med['auto'] / best:.2f} ({low:.2f}-{high:.2f})",
                " / ".join(f"{raw_med[p]:.1f}" for p in POLICIES)
                + f"; {raw_med['auto'] / min(raw_med['sync'], raw_med['async']):.2f} "
                f"({raw_low:.2f}-{raw_high:.2f})",
                "; ".join(switched) + churn_note + (" / " + " / ".join(notes) if notes else ""),
            ]
        )
    load_end = os.getloadavg()[0]
    return (
        f"Time (s) to {target:.0%} test accuracy on mnist-10k: the first model version at which "
        f"the mean test accuracy of the versions made in the trailing {_SMOOTH_S:g} s (at least "
        f"{_SMOOTH_MIN}) reaches {target:.0%}; the benchmark then cancels the job. The 'raw' "
        f"column is the first single version at or above {target:.0%} in the same runs (a "
        f"noisier measure: one lucky evaluation). sgd 784-128-10, 4 worker "
        f"processes (throttle x{scale:g}); async = FedBuff (buffer 3); churn: worker 3 leaves "
        f"every {churn_period:g} s and rejoins 2 s later; crashes: worker 3 is killed (SIGKILL) "
        f"every {crash_period:g} s and started again 2 s later (heartbeat 0.5 s, so the leader "
        f"declares it gone 1-1.5 s after the kill); freezes: worker 3 is stopped (SIGSTOP) for "
        f"{FREEZE_S:g} s and continued (SIGCONT) {FREEZE_GAP_S:g} s, over and over (shorter than "
        f"the heartbeat patience, so the leader declares it gone only now and then); homogeneous "
        f"8: eight equal workers; auto with the default policy "
        f"(`PolicyConfig()`, see leader-logic.md). {reps} repetitions per policy (numbered "
        f"{first_rep}-{first_rep + reps - 1}), the order rotated each repetition, seed = "
        f"repetition for every policy, after one untimed "
        f"warm-up job per cluster and with a {_SETTLE_S:g} s pause after each job; the table "
        f"gives the median and each run. 1-minute load average {load_start:.1f} at the start, "
        f"{load_end:.1f} at the end (2 cores).\n\n"
        + markdown_table(
            [
                "scenario",
                "sync",
                "async",
                "auto",
                "auto / best fixed (medians; 90% interval)",
                "raw: sync / async / auto medians; auto / best (90% interval)",
                "auto's switches per run / notes",
            ],
            rows,
        )
        + "\n\nTarget: auto within 10% of the better fixed policy (auto / best <= 1.10). The "
        "interval is a bootstrap of the ratio of medians (each policy's runs resampled with "
        f"replacement, {_BOOTSTRAP} times): how far run-to-run noise alone moves it.\n\n"
        + "First switch of auto, with its logged reason, per scenario:\n\n"
        + ("\n".join(details) or "(none)")
    )


_BOOTSTRAP = 2000


def _ratio_interval(times: dict[str, list[float]]) -> tuple[float, float]:
    """5th and 95th percentiles of median(auto) / min(median(sync), median(async)) when each
    policy's runs are resampled with replacement."""
    if not all(times.values()):
        return math.nan, math.nan  # a policy never reached the target
    rng = np.random.default_rng(0)
    runs = {p: np.asarray(v, dtype=float) for p, v in times.items()}
    ratios = np.empty(_BOOTSTRAP)
    for i in range(_BOOTSTRAP):
        med = {p: float(np.median(rng.choice(v, size=v.size))) for p, v in runs.items()}
        ratios[i] = med["auto"] / min(med["sync"], med["async"])
    low, high = np.percentile(ratios, [5, 95])
    return float(low), float(high)


def _short(switch: str) -> str:
    """``at 3.1 s: sync -> async: ...`` -> ``sync -> async at 3.1 s``."""
    at, _, rest = switch.partition(": ")
    return f"{rest.split(':')[0]} {at}"


def _details_has(details: list[str], name: str) -> bool:
    return any(d.startswith(f"* {name}:") for d in details)


def _leader_pythons(values: Sequence[str]) -> dict[str, str]:
    """``[LABEL=]PATH`` values as label -> interpreter (default: this one, labelled "this")."""
    leaders: dict[str, str] = {}
    for i, value in enumerate(values):
        label, sep, path = value.partition("=")
        if not sep:
            label, path = (f"leader{i + 1}" if len(values) > 1 else "this"), value
        if not label or not path:
            raise ValueError(f"--leader-python {value!r}: give PATH or LABEL=PATH")
        if label in leaders:
            raise ValueError(f"--leader-python: label {label!r} given twice")
        if not os.access(path, os.X_OK):
            raise ValueError(f"--leader-python {path!r} is not an executable interpreter")
        leaders[label] = path
    return leaders or {"this": sys.executable}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["hetero", "policies", "scale", "all"], default="all")
    p.add_argument("--scale", type=float, default=4.0, help="throttle multiplier")
    p.add_argument("--churn-period", type=float, default=10.0, help="seconds between churns")
    p.add_argument("--crash-period", type=float, default=5.0, help="seconds between crashes")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"policies: comma-separated subset of {', '.join(SCENARIOS)}",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions (the median is reported)")
    p.add_argument(
        "--first-rep",
        type=int,
        default=0,
        help="policies: number of the first repetition (its seed and order), to split a long "
        "measurement into runs",
    )
    p.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    p.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    p.add_argument(
        "--leader-python",
        action="append",
        metavar="[LABEL=]PATH",
        help="scale: the interpreter that runs a leader under test (repeat to compare leaders "
        "side by side, e.g. before=/venvs/old/bin/python; default: this interpreter)",
    )
    p.add_argument(
        "--clients",
        default="",
        help="scale: comma-separated client counts (default 4,8,16,32; --quick: 4,8)",
    )
    p.add_argument("--seconds", type=float, default=0.0, help="scale: measured seconds")
    args = p.parse_args(argv)
    try:
        leaders = _leader_pythons(args.leader_python or [])
        sizes = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if any(size < 1 for size in sizes):
        p.error(f"--clients must be positive counts, got {args.clients!r}")
    if not args.seconds >= 0:
        p.error(f"--seconds must be >= 0, got {args.seconds}")
    only = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    periods = {"--churn-period": args.churn_period, "--crash-period": args.crash_period}
    for flag, value in periods.items():
        if not value > 0:
            p.error(f"{flag} must be > 0 seconds, got {value}")
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    if not 0 <= args.first_rep <= 10**6:
        p.error(f"--first-rep must be in 0..1000000, got {args.first_rep}")
    command = ["python", "-m", "bench.cluster", *(argv if argv is not None else sys.argv[1:])]

    def emit(name: str, title: str, body: str) -> None:
        # Written as soon as a part is done: a later failure must not lose earlier results.
        print(f"## {title}\n\n{body}\n", flush=True)
        if not args.no_write:
            write_section(name, title, body, command=command)

    with tempfile.TemporaryDirectory(prefix="eddl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.part in ("hetero", "all"):
            body = asyncio.run(hetero(24 * args.scale, tmp, 1 if args.quick else args.reps))
            emit("cluster-hetero", "Cluster: heterogeneous workers", body)
        if args.part in ("policies", "all"):
            target = 0.85 if args.quick else 0.9
            # Throttled far enough that the slowest policy takes ~30-60 s to the target, so
            # the policy (not start-up) decides the time.
            body = asyncio.run(
                policies(
                    (16 if args.quick else 80) * args.scale,
                    tmp,
                    args.churn_period,
                    args.crash_period,
                    target,
                    1 if args.quick else args.reps,
                    only,
                    args.first_rep,
                )
            )
            emit("cluster-policies", "Cluster: sync vs async vs auto", body)
        if args.part in ("scale", "all"):
            sizes = sizes or ([4, 8] if args.quick else [4, 8, 16, 32])
            seconds = args.seconds or (3.0 if args.quick else 8.0)
            reps = 1 if args.quick else args.reps
            body = asyncio.run(scale(tmp, sizes, seconds, leaders, reps))
            emit("cluster-scale", "Cluster: wire overhead and leader scale", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
