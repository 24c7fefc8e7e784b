"""TinyMetaFed vs Reptile, TinyReptile, FedAvg + fine-tuning and scratch: few-shot quality
and measured bytes per device per round, per use case, in one process.

Run: ``python -m bench.tinymetafed`` (``--rounds`` to change the run, ``--no-write``).

Methods (all on the same tasks, model, seed and inner learning rate; ``eddl.metasim``):

* ``tinymetafed``: 5 devices per round, ε 1 → 0, top-P 10% of φ − θ, last layer local
  (reconstructed, never sent); float32 values, and the same with int8 values.
* ``reptile``: 5 devices per round, ε 1 → 0, dense φ − θ of every layer.
* ``tinyreptile``: Reptile with one device per round (sequential).
* ``fedavg+ft``: every training device each round, 5 local epochs, ε = 1 (θ becomes the
  sample-weighted mean: FedAvg), then the same few-shot fine-tuning.
* ``scratch``: a fresh random model fine-tuned on the k shots only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.report import markdown_table, write_section
from eddl.learn.fewshot import few_shot_evaluate
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.metasim import MetaConfig, make_model, make_tasks, run_meta

__all__ = ["main"]

KS = (1, 5, 10)
USE_CASES: dict[str, dict[str, Any]] = {
    "sine": {"task": "sine", "samples": 10, "lr": 0.02},
    "digits 5-way": {"task": "characters", "dataset": "digits", "samples": 10, "lr": 0.05},
    "mnist-10k 5-way": {"task": "characters", "dataset": "mnist-10k", "samples": 10, "lr": 0.05},
    "presence": {"task": "presence", "samples": 20, "lr": 0.05},
}
TINY = {"top_p": 10.0, "local_layers": 1}
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "tinymetafed": ("tinymetafed", TINY),
    "tinymetafed int8": ("tinymetafed", {**TINY, "values": "int8"}),
    "reptile": ("reptile", {}),
    "tinyreptile": ("reptile", {"devices_per_round": 1}),
    "fedavg+ft": (
        "reptile",
        {"meta_lr": 1.0, "meta_lr_final": 1.0, "inner_epochs": 5, "devices_per_round": 100_000},
    ),
}


def _fmt(metric: str, v: float) -> str:
    return f"{v:.1%}" if metric == "accuracy" else f"{v:.3f}"


def _case(name: str, case: dict[str, Any], rounds: int, seed: int) -> list[list[object]]:
    base = MetaConfig(
        task=case["task"],
        dataset=case.get("dataset", "digits"),
        train_devices=20,
        held_out_devices=10,
        rounds=rounds,
        seed=seed,
        samples=case["samples"],
        shots=KS,
    )
    rows: list[list[object]] = []
    dense = 0.0
    for label, (algo, hyper) in METHODS.items():
        cfg = MetaConfig(**{**base.__dict__, "algo": algo, "hyper": {"lr": case["lr"], **hyper}})
        res = run_meta(cfg)
        if label == "reptile":
            dense = res.upload_bytes
        rows.append(
            [
                name,
                label,
                *(_fmt(res.metric, res.few_shot[k].mean) for k in KS),
                f"{res.upload_bytes:,.0f}",
                f"{res.download_bytes:,.0f}",
                f"{res.seconds:.1f}",
            ]
        )
    tasks = make_tasks(base)
    model = make_model(tasks)
    opts = MetaOptions.from_hyper("reptile", {"lr": case["lr"]})
    scratch = [
        few_shot_evaluate(
            model,
            LayerSplit(model.num_layers),
            None,
            tasks.held_out,
            k=k,
            opts=opts,
            seed=seed,
            training_ids=tasks.training_ids,
        )
        for k in KS
    ]
    rows.append([name, "scratch", *(_fmt(model.metric, r.mean) for r in scratch), "0", "0", "-"])
    for row in rows[:2]:  # the upload cut of TinyMetaFed against dense Reptile
        up = float(str(row[5]).replace(",", ""))
        row[1] = f"{row[1]} (−{1 - up / dense:.0%} up)"
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = [
        r for name, case in USE_CASES.items() for r in _case(name, case, args.rounds, args.seed)
    ]
    table = markdown_table(
        [
            "use case",
            "method",
            *(f"k={k}" for k in KS),
            "upload B/device/round",
            "download B/device/round",
            "run s",
        ],
        rows,
    )
    body = (
        f"20 training devices, 10 held-out devices (unseen tasks), {args.rounds} rounds, seed "
        f"{args.seed}. Few-shot: each held-out device fine-tunes θ for 10 passes over k shots "
        "(k per class for classification, k points for sine) with the inner learning rate and "
        "is scored on its own test samples (accuracy; MSE for sine, lower is better); mean over "
        "devices. Bytes are serialised protobuf records (dense `Tensor` or `SparseTensor`), "
        "measured, per sampled device per round. Method settings: see `bench/tinymetafed.py`. "
        f"Total time {time.perf_counter() - t0:.0f} s.\n\n" + table
    )
    if not args.no_write:
        write_section("tinymetafed", "TinyMetaFed: few-shot quality and bytes on the wire", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
