"""TinyMetaFed vs Reptile, TinyReptile, FedAvg + fine-tuning and scratch: few-shot quality
against rounds and measured bytes per device per round, per use case, in one process.

Run: ``python -m bench.tinymetafed`` (``--rounds``, ``--cases``, ``--seed``, ``--no-write``);
a run with other cases, rounds or seed than the defaults writes a section of its own.

Protocol (the same for every method; ``eddl.metasim``):

* Same tasks, model, initialisation and few-shot evaluation (10 fine-tuning passes over the k
  shots at the method's inner learning rate), the same device sampling, and the same device
  compute per round: 5 devices per round, each running ``inner_epochs`` online passes.
* The same tuning budget: every method picks its ``lr`` (the use case's base and twice it)
  and ``inner_epochs`` (1 or 5) from the same 4-point grid — scratch picks its ``lr`` only —
  by its k = 5 score on a *validation draw* (seed + 1: other training devices, other
  held-out tasks, another initialisation). The table reports the picked setting on the test
  draw (``--seed``); no setting is chosen on the test draw.

Methods:

* ``tinymetafed``: constant ε = 1, top-P 10% of φ − θ with error feedback (each device adds
  the entries it did not send to its next delta), the last layer local (rebuilt on the
  device with ``recon_epochs``' default 2 passes, never sent); float32 values, the same
  with int8 values, and the same setting without error feedback (each round's unsent
  entries dropped).
* ``dense, same setting``: the picked TinyMetaFed setting (ε, lr, inner epochs) with dense
  uploads of every layer and no local layer: what top-P and reconstruction change. With
  constant ε = 1 this is FedAvg's update with batch-1 local SGD.
* ``reptile``: Reptile as published, ε annealed linearly 1 → 0, dense φ − θ of every layer.
* ``tinyreptile``: the same with one device per round (sequential).
* ``fedavg+ft``: ε = 1, the sample-weighted mean of the devices' models, then fine-tuning.
* ``scratch``: a fresh random model fine-tuned on the k shots only.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.report import markdown_table, write_section
from eddl.learn.fewshot import few_shot_evaluate
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.metasim import MetaConfig, MetaResult, make_model, make_tasks, run_meta

__all__ = ["main"]

KS = (1, 5, 10)
USE_CASES: dict[str, dict[str, Any]] = {
    "sine": {"task": "sine", "samples": 10, "lr": 0.02},
    "digits": {"task": "characters", "dataset": "digits", "samples": 10, "lr": 0.05},
    "presence": {"task": "presence", "samples": 20, "lr": 0.05},
    "mnist": {"task": "characters", "dataset": "mnist-10k", "samples": 10, "lr": 0.05},
}
LABELS = {"digits": "digits 5-way", "mnist": "mnist-10k 5-way"}
DEFAULT_CASES = ("sine", "digits", "presence")
GRID = tuple({"lr_scale": m, "inner_epochs": e} for e in (1, 5) for m in (1, 2))
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "tinymetafed": ("tinymetafed", {"top_p": 10.0, "local_layers": 1, "error_feedback": True}),
    "reptile": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 0.0}),
    "tinyreptile": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 0.0, "devices_per_round": 1}),
    "fedavg+ft": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 1.0}),
}
SELECT_K = 5
HELD_OUT = 30


@dataclass(frozen=True)
class Row:
    method: str
    setting: str
    scores: dict[int, float]
    curve: dict[int, dict[int, float]]
    upload: float
    download: float
    seconds: float


def _fmt(metric: str, v: float) -> str:
    return f"{v:.1%}" if metric == "accuracy" else f"{v:.3f}"


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if metric == "accuracy" else a < b


def _config(case: dict[str, Any], rounds: int, seed: int, marks: tuple[int, ...]) -> MetaConfig:
    return MetaConfig(
        task=case["task"],
        dataset=case.get("dataset", "digits"),
        train_devices=20,
        held_out_devices=HELD_OUT,
        rounds=rounds,
        seed=seed,
        samples=case["samples"],
        shots=KS,
        checkpoints=marks,
    )


def _run(base: MetaConfig, algo: str, hyper: dict[str, Any]) -> MetaResult:
    return run_meta(MetaConfig(**{**base.__dict__, "algo": algo, "hyper": hyper}))


def _hyper(case: dict[str, Any], method: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    lr = case["lr"] * point["lr_scale"]
    return {**method, "lr": lr, "inner_epochs": point["inner_epochs"]}


def _row(method: str, hyper: dict[str, Any], res: MetaResult) -> Row:
    setting = f"lr {hyper['lr']:g}, {hyper['inner_epochs']} ep"
    curve = {r: {k: v.mean for k, v in row.items()} for r, row in res.curve.items()}
    scores = {k: v.mean for k, v in res.few_shot.items()}
    return Row(method, setting, scores, curve, res.upload_bytes, res.download_bytes, res.seconds)


def _scratch(case: dict[str, Any], base: MetaConfig, lr: float) -> dict[int, float]:
    tasks = make_tasks(base)
    model = make_model(tasks)
    opts = MetaOptions.from_hyper("reptile", {"lr": lr})
    split = LayerSplit(model.num_layers)
    return {
        k: few_shot_evaluate(
            model,
            split,
            None,
            tasks.held_out,
            k=k,
            opts=opts,
            seed=base.seed,
            training_ids=tasks.training_ids,
        ).mean
        for k in KS
    }


def _case(case: dict[str, Any], rounds: int, seed: int, marks: tuple[int, ...]) -> list[Row]:
    val = _config(case, rounds, seed + 1, ())
    test = _config(case, rounds, seed, marks)
    metric = make_model(make_tasks(val)).metric
    rows: list[Row] = []
    for method, (algo, fixed) in METHODS.items():
        best: tuple[float, dict[str, Any]] | None = None
        for point in GRID:
            hyper = _hyper(case, fixed, point)
            score = _run(val, algo, hyper).few_shot[SELECT_K].mean
            if best is None or _better(metric, score, best[0]):
                best = (score, hyper)
        assert best is not None
        rows.append(_row(method, best[1], _run(test, algo, best[1])))
        if method == "tinymetafed":
            int8 = {**best[1], "values": "int8"}
            rows.append(_row("tinymetafed int8", int8, _run(test, algo, int8)))
            plain = {**best[1], "error_feedback": False}
            rows.append(_row("tinymetafed no feedback", plain, _run(test, algo, plain)))
            tiny_only = ("top_p", "local_layers", "error_feedback")
            dense = {k: v for k, v in best[1].items() if k not in tiny_only}
            rows.append(_row("dense, same setting", dense, _run(test, "reptile", dense)))
    lrs = sorted({case["lr"] * p["lr_scale"] for p in GRID})
    picked = min(
        lrs,
        key=lambda lr: (1 if metric == "mse" else -1) * _scratch(case, val, lr)[SELECT_K],
    )
    scores = _scratch(case, test, picked)
    flat = {r: dict(scores) for r in marks}
    rows.append(Row("scratch", f"lr {picked:g}", scores, flat, 0.0, 0.0, 0.0))
    return rows


Table = list[list[object]]


def _tables(name: str, metric: str, rows: list[Row], marks: tuple[int, ...]) -> tuple[Table, Table]:
    dense = next(r.upload for r in rows if r.method == "reptile")
    final: Table = []
    curves: Table = []
    for r in rows:
        label = r.method
        if r.method.startswith("tinymetafed"):
            label = f"{r.method} (−{1 - r.upload / dense:.0%} up)"
        final.append(
            [
                name,
                label,
                r.setting,
                *(_fmt(metric, r.scores[k]) for k in KS),
                f"{r.upload:,.0f}",
                f"{r.download:,.0f}",
                f"{r.seconds:.1f}" if r.seconds else "-",
            ]
        )
        for k in KS:
            curves.append([name, r.method, str(k), *(_fmt(metric, r.curve[m][k]) for m in marks)])
    return final, curves


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"of {list(USE_CASES)}")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(USE_CASES))
    if unknown or not 4 <= args.rounds <= 10_000:
        p.error(f"unknown cases {unknown} or rounds outside 4..10000")
    marks = tuple(sorted({max(1, args.rounds * f // 8) for f in (1, 2, 4, 8)}))
    t0 = time.perf_counter()
    final: list[list[object]] = []
    curves: list[list[object]] = []
    for c in cases:
        rows = _case(USE_CASES[c], args.rounds, args.seed, marks)
        metric = "mse" if USE_CASES[c]["task"] == "sine" else "accuracy"
        f, cv = _tables(LABELS.get(c, c), metric, rows, marks)
        final += f
        curves += cv
        print(
            markdown_table(["case", "method", "picked", *map(str, KS), "up", "down", "s"], f),
            flush=True,
        )
    head = ["use case", "method", "picked setting", *(f"k={k}" for k in KS)]
    table = markdown_table(
        [*head, "upload B/device/round", "download B/device/round", "run s"], final
    )
    curve_table = markdown_table(
        ["use case", "method", "k", *(f"round {m}" for m in marks)], curves
    )
    intro = (
        f"20 training devices, {HELD_OUT} held-out devices (unseen tasks), {args.rounds} "
        f"rounds, test draw seed {args.seed}, settings picked on the validation draw seed "
        f"{args.seed + 1} by the k = {SELECT_K} score from the same grid for every method (lr "
        f"×1 or ×2 the use case's base, 1 or 5 inner epochs; scratch: lr only). Every method "
        f"samples 5 devices per round (TinyReptile 1). Few-shot: each held-out device fine-"
        f"tunes θ for 10 passes over k shots (k per class for classification, k points for "
        f"sine) with the inner learning rate and is scored on its own test samples (accuracy; "
        f"MSE for sine, lower is better); mean over devices. Bytes are serialised protobuf "
        f"records (dense `Tensor` or `SparseTensor`), measured, per sampled device per round; "
        f"the upload cut is against dense Reptile's. Methods: see `bench/tinymetafed.py`. "
        f"Total time "
    )
    body = (
        f"{intro}{time.perf_counter() - t0:.0f} s.\n\n{table}\n\nFew-shot score against rounds "
        f"(the same runs; scratch does not train, its row repeats):\n\n{curve_table}"
    )
    if not args.no_write:
        name, title = "tinymetafed", "TinyMetaFed: few-shot quality and bytes on the wire"
        if tuple(cases) != DEFAULT_CASES or args.rounds != 40 or args.seed != 0:
            # Another setting is a section of its own beside the default run's.
            name = f"tinymetafed-{'-'.join(cases)}-{args.rounds}r-seed{args.seed}"
            title = f"TinyMetaFed: {', '.join(cases)}, {args.rounds} rounds, seed {args.seed}"
        write_section(name, title, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
