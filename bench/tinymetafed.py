"""TinyMetaFed vs Reptile, TinyReptile, FedAvg + fine-tuning and scratch: few-shot quality
against rounds and measured bytes per device per round, per use case, in one process.

Run: ``python -m bench.tinymetafed`` (``--rounds``, ``--cases``, ``--seed``, ``--draws``,
``--val-draws``, ``--no-write``); a run with other values than the defaults writes a section of
its own.

Protocol (the same for every method; ``eddl.metasim``):

* Same tasks, model, initialisation and few-shot evaluation (10 fine-tuning passes over the k
  shots at the method's inner learning rate), the same device sampling, and the same inner
  loop per round: 5 devices per round, each running ``inner_epochs`` online passes
  (TinyMetaFed's devices, in training and in the few-shot evaluation, also first rebuild the
  local output layer with 2 passes that train that layer alone).
* The same tuning budget: every method picks its ``lr`` (×0.25, ×0.5, ×1 or ×2 the use
  case's base) and ``inner_epochs`` (1, 5 or 20 online passes over the device's samples)
  from the same 12-point grid — scratch picks its ``lr`` only — by its mean k = 5 score
  over ``--val-draws`` *validation draws* (seeds ``seed + 100``, ...: other training
  devices, other held-out tasks, another initialisation). The one picked setting then runs
  on each of ``--draws`` *test draws* (seeds ``seed``, ``seed + 1``, ...); no setting is
  chosen on a test draw, and validation and test seeds never meet. A point whose training
  diverges on a validation draw is not picked.
* Scores are the mean and sample standard deviation over the test draws. A target "A above
  B" is judged on the paired per-draw difference (:mod:`bench.drawstats`): met when its 95%
  Student-t interval lies above 0, missed when below, "within noise" otherwise.

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

import numpy as np

from bench.drawstats import MAX_DRAWS, paired, spread
from bench.report import markdown_table, write_section
from eddl.learn.fewshot import few_shot_evaluate
from eddl.learn.metaoptions import MetaOptions
from eddl.learn.reconstruction import LayerSplit
from eddl.learn.trainer import DivergedError
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
LR_SCALES = (0.25, 0.5, 1, 2)
INNER_EPOCHS = (1, 5, 20)
GRID = tuple({"lr_scale": m, "inner_epochs": e} for e in INNER_EPOCHS for m in LR_SCALES)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "tinymetafed": ("tinymetafed", {"top_p": 10.0, "local_layers": 1, "error_feedback": True}),
    "reptile": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 0.0}),
    "tinyreptile": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 0.0, "devices_per_round": 1}),
    "fedavg+ft": ("reptile", {"meta_lr": 1.0, "meta_lr_final": 1.0}),
}
SELECT_K = 5
HELD_OUT = 30
VAL_OFFSET = 100
MSE_POINT = 0.0425
"""One "point" of sine MSE: 1% of the MSE of predicting 0 (mean ``A²/2`` = 4.25 for
``A ~ U[0.1, 5]``)."""


@dataclass(frozen=True)
class Row:
    method: str
    setting: str
    scores: dict[int, list[float]]
    """k -> the score on each test draw, in draw order."""
    curve: dict[int, dict[int, float]]
    """round -> k -> mean score over the test draws."""
    upload: float
    download: float
    seconds: float
    """Mean run time of one draw."""


def _fmt(metric: str, v: float) -> str:
    return f"{v:.1%}" if metric == "accuracy" else f"{v:.3f}"


def _fmt_spread(metric: str, values: list[float]) -> str:
    s = spread(values)
    if metric == "accuracy":
        return f"{s.mean:.1%} ± {100 * s.sd:.1f}"
    return f"{s.mean:.3f} ± {s.sd:.3f}"


def _scales() -> str:
    return ", ".join(f"×{m:g}" for m in LR_SCALES[:-1]) + f" or ×{LR_SCALES[-1]:g}"


def _epochs() -> str:
    return ", ".join(map(str, INNER_EPOCHS[:-1])) + f" or {INNER_EPOCHS[-1]}"


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


def _row(method: str, hyper: dict[str, Any], runs: list[MetaResult]) -> Row:
    setting = f"lr {hyper['lr']:g}, {hyper['inner_epochs']} ep"
    rounds = runs[0].curve
    curve = {
        r: {k: float(np.mean([x.curve[r][k].mean for x in runs])) for k in rounds[r]}
        for r in rounds
    }
    scores = {k: [x.few_shot[k].mean for x in runs] for k in runs[0].few_shot}
    return Row(
        method,
        setting,
        scores,
        curve,
        float(np.mean([x.upload_bytes for x in runs])),
        float(np.mean([x.download_bytes for x in runs])),
        float(np.mean([x.seconds for x in runs])),
    )


def _scratch(base: MetaConfig, lr: float) -> dict[int, float]:
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


@dataclass(frozen=True)
class Draws:
    rounds: int
    test: tuple[int, ...]
    val: tuple[int, ...]
    marks: tuple[int, ...]


def _pick(case: dict[str, Any], d: Draws, algo: str, fixed: dict[str, Any], metric: str) -> Any:
    best: tuple[float, dict[str, Any]] | None = None
    for point in GRID:
        hyper = _hyper(case, fixed, point)
        try:
            runs = [_run(_config(case, d.rounds, s, ()), algo, hyper) for s in d.val]
        except DivergedError:
            continue
        score = float(np.mean([r.few_shot[SELECT_K].mean for r in runs]))
        if best is None or _better(metric, score, best[0]):
            best = (score, hyper)
    if best is None:
        raise DivergedError(f"{algo}: every point of the grid diverged")
    return best[1]


def _case(case: dict[str, Any], d: Draws) -> list[Row]:
    metric = make_model(make_tasks(_config(case, d.rounds, d.val[0], ()))).metric

    def on_test(algo: str, hyper: dict[str, Any]) -> list[MetaResult]:
        return [_run(_config(case, d.rounds, s, d.marks), algo, hyper) for s in d.test]

    rows: list[Row] = []
    for method, (algo, fixed) in METHODS.items():
        hyper = _pick(case, d, algo, fixed, metric)
        rows.append(_row(method, hyper, on_test(algo, hyper)))
        if method == "tinymetafed":
            int8 = {**hyper, "values": "int8"}
            rows.append(_row("tinymetafed int8", int8, on_test(algo, int8)))
            plain = {**hyper, "error_feedback": False}
            rows.append(_row("tinymetafed no feedback", plain, on_test(algo, plain)))
            tiny_only = ("top_p", "local_layers", "error_feedback")
            dense = {k: v for k, v in hyper.items() if k not in tiny_only}
            rows.append(_row("dense, same setting", dense, on_test("reptile", dense)))
    lrs = sorted({case["lr"] * p["lr_scale"] for p in GRID})
    sign = 1 if metric == "mse" else -1

    def val_score(lr: float) -> float:
        cfgs = [_config(case, d.rounds, s, ()) for s in d.val]
        return sign * float(np.mean([_scratch(c, lr)[SELECT_K] for c in cfgs]))

    picked = min(lrs, key=val_score)
    per_draw = [_scratch(_config(case, d.rounds, s, ()), picked) for s in d.test]
    scores = {k: [x[k] for x in per_draw] for k in KS}
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    flat = {r: dict(means) for r in d.marks}
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
                *(_fmt_spread(metric, r.scores[k]) for k in KS),
                f"{r.upload:,.0f}",
                f"{r.download:,.0f}",
                f"{r.seconds:.1f}" if r.seconds else "-",
            ]
        )
        for k in KS:
            curves.append([name, r.method, str(k), *(_fmt(metric, r.curve[m][k]) for m in marks)])
    return final, curves


def _targets(name: str, metric: str, rows: list[Row]) -> Table:
    """Per use case: the issue's targets at k = SELECT_K, judged on the paired draws."""
    by = {r.method: r for r in rows}
    tmf = by["tinymetafed"].scores[SELECT_K]
    acc = metric == "accuracy"

    def gain(other: str) -> str:
        p = paired(tmf, by[other].scores[SELECT_K], higher_is_better=acc)
        scale, unit = (100.0, " pt") if acc else (1.0, "")
        return f"{scale * p.gain:+.3f} ± {scale * p.half_width:.3f}{unit}: {p.verdict}"

    cut = 1 - by["tinymetafed"].upload / by["reptile"].upload
    p_rep = paired(tmf, by["reptile"].scores[SELECT_K], higher_is_better=acc)
    # "At <= 1 point lower", on the mean over the draws; for MSE a point is MSE_POINT.
    point = 0.01 if acc else MSE_POINT
    loss_ok = p_rep.gain >= -point
    scale, unit = (100.0, " pt") if acc else (1.0, "")
    loss = (
        f"{scale * p_rep.gain:+.3f} ± {scale * p_rep.half_width:.3f}{unit}: "
        f"{'within' if loss_ok else 'more than'} 1 point"
    )
    upload = f"−{cut:.0%}, {'met' if cut >= 0.85 and loss_ok else 'missed'}"
    return [[name, gain("fedavg+ft"), gain("scratch"), loss, upload]]


def _draws(args: argparse.Namespace) -> Draws:
    marks = tuple(sorted({max(1, args.rounds * f // 8) for f in (1, 2, 4, 8)}))
    test = tuple(range(args.seed, args.seed + args.draws))
    start = args.seed + VAL_OFFSET
    return Draws(args.rounds, test, tuple(range(start, start + args.val_draws)), marks)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=5, help=f"test draws, 1..{MAX_DRAWS}")
    p.add_argument("--val-draws", type=int, default=3, help="validation draws, 1..10")
    p.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"of {list(USE_CASES)}")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(USE_CASES))
    if unknown or not 4 <= args.rounds <= 10_000:
        p.error(f"unknown cases {unknown} or rounds outside 4..10000")
    if not 1 <= args.draws <= MAX_DRAWS or not 1 <= args.val_draws <= 10:
        p.error(f"--draws must be in 1..{MAX_DRAWS} and --val-draws in 1..10")
    if not 0 <= args.seed <= 1_000_000:
        p.error("--seed must be in 0..1000000")
    d = _draws(args)
    t0 = time.perf_counter()
    final: Table = []
    curves: Table = []
    targets: Table = []
    for c in cases:
        rows = _case(USE_CASES[c], d)
        metric = "mse" if USE_CASES[c]["task"] == "sine" else "accuracy"
        f, cv = _tables(LABELS.get(c, c), metric, rows, d.marks)
        final += f
        curves += cv
        targets += _targets(LABELS.get(c, c), metric, rows)
        print(
            markdown_table(["case", "method", "picked", *map(str, KS), "up", "down", "s"], f),
            flush=True,
        )
    head = ["use case", "method", "picked setting", *(f"k={k} mean ± sd" for k in KS)]
    table = markdown_table(
        [*head, "upload B/device/round", "download B/device/round", "run s"], final
    )
    curve_table = markdown_table(
        ["use case", "method", "k", *(f"round {m}" for m in d.marks)], curves
    )
    target_table = markdown_table(
        [
            "use case",
            f"TinyMetaFed − FedAvg + ft, k={SELECT_K}",
            f"TinyMetaFed − scratch, k={SELECT_K}",
            f"TinyMetaFed − dense Reptile, k={SELECT_K} (mean within 1 point?)",
            "upload cut vs dense Reptile (target ≥ 85% at ≤ 1 point lower)",
        ],
        targets,
    )
    seeds = f"{d.test[0]}..{d.test[-1]}"
    vals = f"{d.val[0]}..{d.val[-1]}"
    intro = (
        f"20 training devices, {HELD_OUT} held-out devices (unseen tasks), {args.rounds} "
        f"rounds. Each method's setting is picked once, by its mean k = {SELECT_K} score over "
        f"the {len(d.val)} validation draws (seeds {vals}), from the same grid for every "
        f"method (lr {_scales()} the use case's base, {_epochs()} inner epochs; scratch: lr "
        f"only; a point that diverges is not picked), "
        f"and then run on each of the {len(d.test)} test draws (seeds {seeds}); scores are "
        f"the mean ± sample standard deviation over the test draws. Every method "
        f"samples 5 devices per round (TinyReptile 1). Few-shot: each held-out device fine-"
        f"tunes θ for 10 passes over k shots (k per class for classification, k points for "
        f"sine) with the inner learning rate and is scored on its own test samples (accuracy; "
        f"MSE for sine, lower is better); mean over devices. Bytes are serialised protobuf "
        f"records (dense `Tensor` or `SparseTensor`), measured, per sampled device per round "
        f"(mean over the test draws); the upload cut is against dense Reptile's. Methods: see "
        f"`bench/tinymetafed.py`. Total time "
    )
    verdict = (
        f"Targets, judged on the per-draw (paired) differences: the mean gain of TinyMetaFed "
        f"(accuracy points; MSE: the other's minus TinyMetaFed's, so positive favours "
        f"TinyMetaFed) ± the half-width of its 95% Student-t interval over the "
        f'{len(d.test)} test draws; "better" / "worse" when the interval excludes 0, '
        f'otherwise "within noise". The upload target\'s "at ≤ 1 point lower" is on the mean '
        f"(a point of sine MSE: {MSE_POINT}, 1% of the MSE of predicting 0).\n\n{target_table}"
    )
    body = (
        f"{intro}{time.perf_counter() - t0:.0f} s.\n\n{verdict}\n\n{table}\n\nFew-shot "
        f"score against rounds (the same runs, mean over the test draws; scratch does not "
        f"train, its row repeats):\n\n{curve_table}"
    )
    if not args.no_write:
        name, title = "tinymetafed", "TinyMetaFed: few-shot quality and bytes on the wire"
        draws = (args.draws, args.val_draws) != (5, 3)
        if tuple(cases) != DEFAULT_CASES or args.rounds != 40 or args.seed != 0 or draws:
            # Another setting is a section of its own beside the default run's.
            name = f"tinymetafed-{'-'.join(cases)}-{args.rounds}r-seed{args.seed}"
            name += f"-{args.draws}d{args.val_draws}v" if draws else ""
            title = (
                f"TinyMetaFed: {', '.join(cases)}, {args.rounds} rounds, test seeds {seeds}, "
                f"validation seeds {vals}"
            )
        write_section(name, title, body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
