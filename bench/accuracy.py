"""Time to accuracy against the ideal: a cluster of throttled workers vs one process.

    python -m bench.accuracy [--reps 5] [--configs light,compute] [--models 64,256]
                             [--variants all|NAME,...] [--baseline-python PATH] [--no-write]

The job a single process would train: mnist-10k (8,000 train / 2,000 test), sgd 784-H-10
(tanh, softmax, ce), lr 0.05, batch 32, target 90% test accuracy, every other setting the job
spec's default. For each throttle set (``light`` = 1,1,2,4; ``compute`` = 40,40,80,160: slow
edge devices, compute-bound) one :class:`LocalCluster` of real processes runs every variant
(the default job; the former default, auto with plain means; sync and async with their default
rules; sync with each server optimizer, async with each async rule) ``--reps`` times in a
rotated order, seed = repetition, after one untimed warm-up job.

Measured per run, from the leader's own event stamps: the seconds from ``job_started`` to the
making of the first version whose test accuracy is >= 90% (the job then ends by its target),
and the samples folded into the model up to that version. **The ideal** is measured in the
same benchmark run: one process trains the same model, lr and batch alone (no cluster, no
wire), evaluated every 64 samples, until 90%: ``ideal seconds = its samples to 90% / the
cluster's combined speed``, the combined speed being the sum of the workers' speeds the
leader measured during that cell's runs. A second table says where each worker's time went
in each cell (compute, transfer, other, waiting: :mod:`bench.timeline`, from the workers' own
logs). Writes the section "accuracy" of docs/benchmarks.md.

``--baseline-python`` compares two EDDL installs side by side: a second cluster's daemons run
with that interpreter (a virtual environment with another commit installed, e.g. ``pip install
--no-deps`` of a ``git archive``), both clusters stay up, and each job runs on one then the
other (the order alternating by repetition), so both see the same load. Rows say which tree.
"""

from __future__ import annotations

import os

# One BLAS thread: the single-process reference stands for one device, like each worker.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cluster import _SETTLE_S, _STARTS, _sample_rates
from bench.report import markdown_table, write_section
from bench.timeline import WorkerTimeline, mean_timeline, read_timelines
from eddl.cli.admin_client import submit_job, watch_job
from eddl.cluster import LocalCluster
from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.proto.v1 import admin_pb2

__all__ = ["CONFIGS", "VARIANTS", "main", "single_process"]

TARGET = 0.90
HYPER: dict[str, Any] = {"lr": 0.05, "batch_size": 32}
CONFIGS: dict[str, list[float]] = {
    "light": [1.0, 1.0, 2.0, 4.0],
    "compute": [40.0, 40.0, 80.0, 160.0],
}
MAX_EPOCHS = 8.0  # a run that has not reached 90% after this many epochs ends unreached
_EVAL_EVERY = 64  # the single process is evaluated after every this many samples


def model(hidden: int) -> dict[str, Any]:
    return {"sizes": [784, hidden, 10], "activations": ["tanh", "softmax"], "loss": "ce"}


@dataclass(frozen=True)
class Variant:
    """One way of running the job: its aggregation mode and the spec keys that go with it."""

    label: str
    job: dict[str, Any] = field(default_factory=dict)


VARIANTS: tuple[Variant, ...] = (
    Variant("default (auto)", {}),
    # What the default job did before summed deltas and budgeted task sizes: plain means.
    Variant(
        "auto, plain means (former default)",
        {"sync_params": {"sum_samples": 0}, "async_params": {"sum_samples": 0}},
    ),
    Variant("sync, default rule", {"aggregation": "sync"}),
    Variant("async, default rule", {"aggregation": "async"}),
    Variant("sync, plain mean", {"aggregation": "sync", "sync_params": {"sum_samples": 0}}),
    Variant("sync, server lr 2", {"aggregation": "sync", "sync_params": {"server_lr": 2.0}}),
    Variant("sync, FedAvgM 0.5", {"aggregation": "sync", "sync_params": {"server_momentum": 0.5}}),
    Variant(
        "sync, FedAdam 0.01",
        {"aggregation": "sync", "sync_params": {"server_opt": "adam", "server_lr": 0.01}},
    ),
    Variant(
        "sync, FedYogi 0.01",
        {"aggregation": "sync", "sync_params": {"server_opt": "yogi", "server_lr": 0.01}},
    ),
    Variant(
        "async, FedBuff (mean)",
        {"aggregation": "async", "async_rule": "fedbuff", "async_params": {"sum_samples": 0}},
    ),
    Variant("async, async-delta", {"aggregation": "async", "async_rule": "async-delta"}),
    Variant("async, FedAsync", {"aggregation": "async", "async_rule": "fedasync"}),
)


# -- the reference: one process --------------------------------------------------------------


@dataclass(frozen=True)
class Single:
    samples: int | None  # samples trained when the test accuracy first reached the target
    seconds: float  # training time (evaluations excluded) to that point
    sps: float


def single_process(hidden: int, seed: int, max_epochs: float = MAX_EPOCHS) -> Single:
    """Train alone, evaluating every ``_EVAL_EVERY`` samples, until the target accuracy."""
    ds = load_dataset("mnist-10k")
    algo = get_algorithm("sgd", model(hidden), HYPER)
    params = algo.init_params(seed)
    x = algo.prepare_inputs(ds.x_train)
    trainer = algo.make_trainer()
    rng = np.random.default_rng(seed)
    n = len(ds.y_train)
    order = np.concatenate([rng.permutation(n) for _ in range(int(np.ceil(max_epochs)))])
    trained, spent = 0, 0.0
    while trained + _EVAL_EVERY <= order.size:
        idx = order[trained : trained + _EVAL_EVERY]
        start = time.perf_counter()
        trainer.train(params, x[idx], ds.y_train[idx])
        spent += time.perf_counter() - start
        trained += _EVAL_EVERY
        if algo.evaluate(params, ds.x_test, ds.y_test) >= TARGET:
            return Single(trained, spent, trained / spent)
    return Single(None, spent, trained / spent)


# -- one cluster run ---------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float | None  # job start -> the first version at or above the target was made
    samples: int | None  # samples folded into the model up to that version
    combined_sps: float  # the sum of the workers' speeds the leader measured
    switches: list[str]
    timeline: list[WorkerTimeline] = field(default_factory=list)  # per worker, whole job


async def run_job(cluster: LocalCluster, spec: dict[str, Any]) -> Run:
    events: list[admin_pb2.JobEvent] = []
    made: dict[int, tuple[float, int]] = {}  # version -> (made at, cumulative samples)
    hit: list[int] = []
    rates: dict[str, float] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rates(cluster, rates, stop))
    total = [0]

    def on_event(event: admin_pb2.JobEvent) -> None:
        events.append(event)
        data = json.loads(event.data_json or "{}")
        if event.kind == "model_updated":
            total[0] += int(data.get("samples", 0))
            made[int(data["version"])] = (event.at, total[0])
        elif event.kind == "model_evaluated" and not hit:
            accuracy = data.get("accuracy")
            if accuracy is not None and accuracy >= TARGET:
                hit.append(int(data["version"]))

    try:
        job_id = await submit_job(cluster.address, spec, identity=cluster.identity)
        await asyncio.wait_for(
            watch_job(cluster.address, job_id, on_event, identity=cluster.identity), 600
        )
    finally:
        stop.set()
        await sampler
    start = next((e.at for e in events if e.kind in _STARTS), None)
    switches = [
        f"{e.at - (start or e.at):.1f} s: {e.message}"
        for e in events
        if e.kind == "policy_switched"
    ]
    combined = sum(rates.values()) if len(rates) == len(cluster.workers) else float("nan")
    names = [f"worker-{i}" for i in range(len(cluster.workers))]
    timeline = read_timelines(cluster.log_dir, names, job_id)
    if not hit or start is None or hit[0] not in made:
        return Run(None, None, combined, switches, timeline)
    at, samples = made[hit[0]]
    return Run(at - start, samples, combined, switches, timeline)


def job_spec(hidden: int, variant: Variant, seed: int) -> dict[str, Any]:
    return {
        "dataset": "mnist-10k",
        "algorithm": "sgd",
        "model": model(hidden),
        "hyper": HYPER,
        "target_accuracy": TARGET,
        "max_epochs": MAX_EPOCHS,
        "seed": seed,
        **variant.job,
    }


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)

    def reached(self) -> list[Run]:
        return [r for r in self.runs if r.seconds is not None]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def bench_config(
    name: str,
    hidden_sizes: Sequence[int],
    variants: Sequence[Variant],
    reps: int,
    tmp: Path,
    singles: dict[int, list[Single]],
    timelines: list[list[str]],
    baseline_python: str = "",
) -> list[list[str]]:
    throttles = CONFIGS[name]
    rows: list[list[str]] = []
    # (label, interpreter): this tree alone, or this tree and a baseline install side by side.
    trees = [("", "")] if not baseline_python else [(THIS, ""), (BASELINE, baseline_python)]
    with contextlib.ExitStack() as stack:
        clusters = []
        for label, python in trees:
            where = tmp / (f"{name}-{label.replace(' ', '-')}" if label else name)
            cluster = stack.enter_context(LocalCluster(where, throttles, python=python))
            await asyncio.to_thread(cluster.start)
            await cluster.wait_for_nodes(len(throttles), 120)
            clusters.append((label, cluster))
        for hidden in hidden_sizes:
            for _, cluster in clusters:
                # Untimed: every worker's first tasks pay its cold start (imports, dataset).
                warm = job_spec(hidden, Variant("warm-up", {"aggregation": "sync"}), 10**6)
                await run_job(cluster, {**warm, "rounds": 4, "target_accuracy": 0.999})
                await asyncio.sleep(_SETTLE_S)
            cells = {(t, v.label): Cell() for t, _ in trees for v in variants}
            for rep in range(reps):
                k = rep % len(variants)
                for variant in [*variants[k:], *variants[:k]]:
                    j = rep % len(clusters)
                    for label, cluster in [*clusters[j:], *clusters[:j]]:
                        run = await run_job(cluster, job_spec(hidden, variant, rep))
                        cells[label, variant.label].runs.append(run)
                        print(
                            f"{name} 784-{hidden}-10 rep {rep} {_titled(variant.label, label)}: "
                            f"{run.seconds} s, {run.samples} samples, combined "
                            f"{run.combined_sps:.0f}/s {run.switches}",
                            flush=True,
                        )
                        await asyncio.sleep(_SETTLE_S)
            single = [s.samples for s in singles[hidden] if s.samples is not None]
            single_samples = _median(single)
            for tree, variant in [(t, v) for v in variants for t, _ in trees]:
                cell = cells[tree, variant.label]
                ok = cell.reached()
                combined = _median([r.combined_sps for r in cell.runs if r.combined_sps > 0])
                ideal = single_samples / combined
                med = _median([r.seconds for r in ok if r.seconds is not None])
                samples = _median([r.samples for r in ok if r.samples is not None])
                switched = sum(1 for r in cell.runs if r.switches)
                # What the cluster trained per second on its way to the target, against the
                # sum of its workers' speeds: the share the per-task fixed costs left.
                rate = _median([r.samples / r.seconds for r in ok if r.samples and r.seconds])
                titled = _titled(variant.label, tree)
                timelines.extend(_timeline_rows(name, hidden, titled, cell, throttles))
                rows.append(
                    [
                        f"{name} ({','.join(f'{t:g}' for t in throttles)})",
                        f"784-{hidden}-10",
                        titled,
                        f"{med:.2f}" if ok else "not reached",
                        ", ".join(f"{r.seconds:.2f}" if r.seconds else "-" for r in cell.runs),
                        f"{samples:,.0f} ({samples / single_samples:.1f}x)" if ok else "-",
                        f"{ideal:.2f} ({combined:.0f}/s)",
                        f"{rate:,.0f} ({rate / combined:.2f})" if ok else "-",
                        f"{med / ideal:.2f}" if ok else "-",
                        f"{switched}/{len(cell.runs)}"
                        if variant.job.get("aggregation") is None
                        else "-",
                    ]
                )
    return rows


THIS, BASELINE = "this tree", "baseline"


def _titled(variant: str, tree: str) -> str:
    return f"{variant} [{tree}]" if tree else variant


def _timeline_rows(
    name: str, hidden: int, variant: str, cell: Cell, throttles: Sequence[float]
) -> list[list[str]]:
    rows = []
    for i, throttle in enumerate(throttles):
        mine = [t for r in cell.runs for t in r.timeline if t.worker == f"worker-{i}"]
        if not mine:
            continue
        t = mean_timeline(mine)
        rows.append(
            [
                name,
                f"784-{hidden}-10",
                variant,
                f"{t.worker} (x{throttle:g})",
                f"{t.tasks}",
                f"{t.samples / max(1, t.tasks):.0f}",
                f"{t.span_s / max(1, t.tasks) * 1000:.0f}",
                f"{t.compute:.0%}",
                f"{t.transfer:.0%}",
                f"{t.other:.0%}",
                f"{t.waiting:.0%}",
            ]
        )
    return rows


async def run(args: argparse.Namespace) -> str:
    hidden_sizes = [int(h) for h in args.models.split(",")]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"--configs: unknown {c!r}; known: {', '.join(CONFIGS)}")
    variants = list(VARIANTS)
    if args.variants != "all":
        wanted = [w.strip() for w in args.variants.split(";")]
        variants = [v for v in VARIANTS if v.label in wanted]
        if len(variants) != len(wanted):
            raise SystemExit(f"--variants: known: {'; '.join(v.label for v in VARIANTS)}")
    singles = {h: [single_process(h, seed) for seed in range(args.reps)] for h in hidden_sizes}
    reference = []
    for h, runs in singles.items():
        samples = [s.samples for s in runs if s.samples is not None]
        reference.append(
            f"784-{h}-10: {_median(samples):,.0f} samples to 90% (each: "
            f"{', '.join(str(s.samples) for s in runs)}), "
            f"{_median([s.seconds for s in runs]):.2f} s of training at "
            f"{_median([s.sps for s in runs]):,.0f} samples/s"
        )
    load_start = os.getloadavg()[0]
    rows: list[list[str]] = []
    timelines: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="eddl-accuracy-") as tmp:
        for name in configs:
            rows += await bench_config(
                name,
                hidden_sizes,
                variants,
                args.reps,
                Path(tmp),
                singles,
                timelines,
                args.baseline_python,
            )
    load_end = os.getloadavg()[0]
    return (
        f"Seconds from the job's start to the making of the first model version with >= 90% "
        f"test accuracy on mnist-10k, sgd 784-H-10 (tanh, softmax, ce), lr 0.05, batch 32, every "
        f"other setting the job spec's default; 4 worker processes with the throttles given, "
        f"{args.reps} repetitions per cell in a rotated order (seed = repetition) after an "
        f"untimed warm-up job, each run listed. 'samples' is what the model holds at that "
        f"version (x the single process's). **Ideal**: one process alone (the same model, lr "
        f"and batch, evaluated every {_EVAL_EVERY} samples, seeds 0..{args.reps - 1}, measured "
        f"in this benchmark run) needs S samples; the ideal is S / the sum of the workers' "
        f"speeds the leader measured during the cell's runs (given beside it). 'auto switched' "
        f"counts the runs in which auto changed mode. 'samples/s to 90%': samples / seconds "
        f"of each run (median), and that over the combined speed: x ideal ≈ (samples x the "
        f"single process's) / (this share). Single process: "
        + "; ".join(reference)
        + f". 1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the end."
        + (
            f" [{THIS}]: daemons of this checkout's install; [{BASELINE}]: daemons run by "
            f"{args.baseline_python} (another install), both clusters up, each job run on one "
            "then the other (the order alternating by repetition).\n\n"
            if args.baseline_python
            else "\n\n"
        )
        + markdown_table(
            [
                "throttles",
                "model",
                "variant",
                "s to 90% (median)",
                "each run (s)",
                "samples to 90% (median)",
                "ideal s (combined speed)",
                "samples/s to 90% (x combined)",
                "x ideal",
                "auto switched",
            ],
            rows,
        )
        + "\n\nTargets: <= 1.5x the ideal compute-bound (40,40,80,160), <= 2x light (1,1,2,4); "
        "the default no slower than before in any cell.\n\n"
        "Where each worker's time went (bench/timeline.py, from the workers' own logs, over "
        "each worker's span in the job, the whole job to its end, mean of the cell's runs): "
        "compute = training plus the throttle's idle (the emulated device computing); "
        "transfer = model pull, sample fetch and update push (a push returns once the leader "
        "has taken the update); other = the rest of a task; waiting = between tasks (the "
        "long poll for work: in sync mode the round's barrier and close).\n\n"
        + markdown_table(
            [
                "throttles",
                "model",
                "variant",
                "worker",
                "tasks",
                "samples/task",
                "ms/task",
                "compute",
                "transfer",
                "other",
                "waiting",
            ],
            timelines,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per cell (>= 1)")
    p.add_argument("--configs", default="light,compute", help="throttle sets: light, compute")
    p.add_argument("--models", default="64,256", help="hidden layer sizes")
    p.add_argument(
        "--variants", default="all", help="'all' or labels separated by ';' (see VARIANTS)"
    )
    p.add_argument(
        "--baseline-python",
        default="",
        help="run each job also on a cluster of daemons run by this interpreter (another "
        "EDDL install), interleaved",
    )
    p.add_argument("--no-write", action="store_true", help="print, do not touch the docs")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error("--reps must be >= 1")
    body = asyncio.run(run(args))
    print(body)
    if not args.no_write:
        write_section("accuracy", "Time to accuracy against the ideal", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
