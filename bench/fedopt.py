"""Samples to 90% test accuracy under each server optimizer, in one process (``eddl.simulate``).

    python -m bench.fedopt           # 3 seeds, tasks of 64 and 256 samples (about a minute)
    python -m bench.fedopt --quick   # 1 seed, tasks of 64 only

The job a single process would train: mnist-10k, sgd 784-256-10 (tanh, softmax, ce), lr 0.05,
batch 32. Four simulated clients each train a small task of fresh samples per round (their
shard's next ``task`` samples); the round's models are aggregated by FedAvg with each server
optimizer of ``eddl.learn.aggregation``. The reference is one client training the same
number of samples per round alone (its "aggregate" is its own model): the samples a single
process needs at this evaluation granularity. Writes the section "fedopt" of
docs/benchmarks.md.
"""

from __future__ import annotations

import os

# One BLAS thread: on a small shared machine threaded BLAS makes timings and speed collapse.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.report import markdown_table, write_section
from eddl.simulate import FederatedConfig, run_federated

TARGET = 0.90
CLIENTS = 4
MODEL: dict[str, Any] = {"sizes": [784, 256, 10], "activations": ["tanh", "softmax"], "loss": "ce"}
HYPER: dict[str, Any] = {"lr": 0.05, "batch_size": 32}
# A run that has not reached the target after this many samples per client of the cluster
# (the reference: the cluster's total) is cut off.
MAX_SAMPLES_PER_CLIENT = 12_000


@dataclass(frozen=True)
class Variant:
    label: str
    clients: int
    sync_params: dict[str, Any]


VARIANTS = (
    Variant("one process (reference)", 1, {}),
    Variant("plain mean (FedAvg)", CLIENTS, {}),
    Variant("server lr 2", CLIENTS, {"server_lr": 2.0}),
    Variant("FedAvgM β 0.5, lr 1", CLIENTS, {"server_momentum": 0.5}),
    Variant("FedAdam lr 0.01", CLIENTS, {"server_opt": "adam", "server_lr": 0.01}),
    Variant("FedYogi lr 0.01", CLIENTS, {"server_opt": "yogi", "server_lr": 0.01}),
)


def one_run(v: Variant, task: int, seed: int) -> tuple[int | None, float]:
    """Samples to the target (``None``: not reached) and the run's seconds."""
    per_round = task * CLIENTS  # the reference trains as many samples per round as the cluster
    per_client = per_round // v.clients
    cfg = FederatedConfig(
        algo="sgd",
        dataset="mnist-10k",
        clients=v.clients,
        rounds=max(1, MAX_SAMPLES_PER_CLIENT * CLIENTS // per_round),  # same total cap
        seed=seed,
        buffer=per_client,
        model=MODEL,
        hyper=HYPER,
        sync_params=v.sync_params,
        target_accuracy=TARGET,
    )
    t0 = time.perf_counter()
    result = run_federated(cfg)
    return result.samples_to_target, time.perf_counter() - t0


def fmt(samples: int | None) -> str:
    return f"{samples:,}" if samples is not None else "not reached"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, tasks of 64 only")
    ap.add_argument("--no-write", action="store_true", help="print, do not write the report")
    args = ap.parse_args(argv)
    seeds = [0] if args.quick else [0, 1, 2]
    tasks = [64] if args.quick else [64, 256]
    rows: list[list[object]] = []
    for task in tasks:
        reference: float | None = None
        for v in VARIANTS:
            runs = [one_run(v, task, seed) for seed in seeds]
            samples = [s for s, _ in runs]
            reached = [s for s in samples if s is not None]
            median = statistics.median(reached) if len(reached) == len(samples) else None
            if v.clients == 1:
                reference = median
            ratio = f"{median / reference:.2f}×" if median and reference else "-"
            rows.append(
                [
                    task,
                    v.label,
                    fmt(int(median)) if median is not None else "not reached",
                    ratio,
                    ", ".join(fmt(s) for s in samples),
                    f"{statistics.median(t for _, t in runs):.1f}",
                ]
            )
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    headers = [
        "task / client",
        "aggregation",
        f"samples to {TARGET:.0%} (median)",
        "vs one process",
        "per seed",
        "run s (median)",
    ]
    body = (
        f"Samples trained until the test accuracy first reaches {TARGET:.0%}: mnist-10k, sgd "
        "784-256-10 (tanh, softmax, ce), lr 0.05, batch 32, evaluated after every round. "
        f"{CLIENTS} simulated clients each train a task of fresh samples per round; the "
        "round's models go through FedAvg and the server optimizer named (`eddl train "
        "--server-opt/--server-lr/--server-momentum`, a job's `[job.sync_params]`). The "
        f"reference is one client training {CLIENTS}× the task per round. Seeds "
        f"{', '.join(map(str, seeds))}; a run is cut off after {MAX_SAMPLES_PER_CLIENT:,} "
        "samples per client.\n\n" + markdown_table(headers, rows)
    )
    if not args.no_write:
        write_section("fedopt", "Server optimizers: samples to 90% in one process", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
