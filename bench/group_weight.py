"""Root versions to 90% when the root's async rule weights a group's update by what it folds.

    python -m bench.group_weight --seeds 2          # every rule below, 2 seeds each
    python -m bench.group_weight --rules fedasync folds-delta --members 16 --per-member 240

In one process, no network: the root's model and four groups feeding it asynchronously, as in
the fleet's 1-4-n topology. Each step one group (picked at random) delivers: its ``members``
devices each train ``per_member`` fresh samples of mnist-10k from the model the group pulled
(784-256-10, tanh/softmax/ce, sgd lr 0.05, batch 32), the group folds them into one
sample-weighted mean (a sub-leader's FedAvg) and the root applies it with the rule compared,
making one version; the group then pulls that version. So a group's update is a few versions
stale (the other groups' deliveries since its pull), like the fleet's. Every version is
evaluated on the test set; the figure is the number of root versions to 90%, the quantity
that bounds the fleet's time when the root's link bounds its versions per second.

The rules (``a = alpha * (1 + s)^-0.5``, ``s`` staleness, ``m`` the updates the group folds,
``x`` the root model, ``x_in`` the group's model, ``x_b`` the version it started from):

* ``fedasync``: ``x + a (x_in - x)``; a group counts as one update (the fleet's job today).
* ``back-to-back``: FedAsync with ``1 - (1 - a)^m``: ``m`` updates arriving one after another.
* ``folds-delta``: FedAsync, plus the group's own step ``x_in - x_b`` counted ``min(m, cap)``
  times in all: ``x + a (x_in - x) + a (min(m, cap) - 1) (x_in - x_b)``.
* ``folds-sqrt``: the same with ``min(sqrt(m), cap)``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eddl.data import load_dataset
from eddl.learn.algorithms import get_algorithm
from eddl.learn.params import Params, clone

__all__ = ["RULES", "main", "versions_to_target"]

TARGET = 0.90
ALPHA = 0.6
MODEL = {"sizes": [784, 256, 10], "activations": ["tanh", "softmax"], "loss": "ce"}
HYPER = {"lr": 0.05, "batch_size": 32}

Rule = Callable[[Params, Params, Params, int, int, float], Params]


def _mix(x: Params, x_in: Params, x_b: Params, s: int, m: int, g: float) -> Params:
    a = ALPHA / math.sqrt(1 + s)
    return {k: x[k] + a * (x_in[k] - x[k]) + a * (g - 1.0) * (x_in[k] - x_b[k]) for k in x}


def _fedasync(x: Params, x_in: Params, x_b: Params, s: int, m: int, cap: float) -> Params:
    return _mix(x, x_in, x_b, s, m, 1.0)


def _back_to_back(x: Params, x_in: Params, x_b: Params, s: int, m: int, cap: float) -> Params:
    a = 1.0 - (1.0 - ALPHA / math.sqrt(1 + s)) ** m
    return {k: x[k] + a * (x_in[k] - x[k]) for k in x}


def _folds_delta(x: Params, x_in: Params, x_b: Params, s: int, m: int, cap: float) -> Params:
    return _mix(x, x_in, x_b, s, m, min(float(m), cap))


def _folds_sqrt(x: Params, x_in: Params, x_b: Params, s: int, m: int, cap: float) -> Params:
    return _mix(x, x_in, x_b, s, m, min(math.sqrt(m), cap))


RULES: dict[str, Rule] = {
    "fedasync": _fedasync,
    "back-to-back": _back_to_back,
    "folds-delta": _folds_delta,
    "folds-sqrt": _folds_sqrt,
}


@dataclass(frozen=True)
class Result:
    rule: str
    cap: float
    seed: int
    versions: int | None  # root versions to the target; None: not within max_versions
    best: float
    mean_staleness: float


def versions_to_target(
    rule: str, *, groups: int, members: int, per_member: int, cap: float, seed: int,
    max_versions: int,
) -> Result:  # fmt: skip
    data = load_dataset("mnist-10k")
    algo = get_algorithm("sgd", MODEL, HYPER)
    rng = np.random.default_rng(seed)
    x = algo.init_params(seed)
    history: dict[int, Params] = {0: x}
    bases = [0] * groups
    x_train = algo.prepare_inputs(data.x_train)
    order = rng.permutation(len(data.y_train))
    cursor = 0
    best, stale = 0.0, []
    for version in range(1, max_versions + 1):
        g = int(rng.integers(groups))
        x_b = history[bases[g]]
        total: dict[str, np.ndarray] = {}
        for _ in range(members):
            idx = np.take(order, np.arange(cursor, cursor + per_member), mode="wrap")
            cursor = (cursor + per_member) % len(order)
            local = clone(x_b)
            trainer = algo.make_trainer(seed=int(rng.integers(0, 2**32)))
            trainer.train(local, x_train[idx], data.y_train[idx], epochs=1, rng=rng)
            for k, v in local.items():
                total[k] = total[k] + v if k in total else v.astype(np.float64)
        x_in = {k: (v / members).astype(x[k].dtype) for k, v in total.items()}
        s = version - 1 - bases[g]
        stale.append(s)
        x = RULES[rule](x, x_in, x_b, s, members, cap)
        x = {k: v.astype(np.float32) for k, v in x.items()}
        history[version] = x
        bases[g] = version
        history = {v: history[v] for v in {*bases, version}}
        acc = algo.evaluate(x, data.x_test, data.y_test)
        best = max(best, acc)
        if not math.isfinite(acc):
            break
        if acc >= TARGET:
            return Result(rule, cap, seed, version, best, statistics.fmean(stale))
    return Result(rule, cap, seed, None, best, statistics.fmean(stale))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.group_weight", description=__doc__)
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--caps", nargs="+", type=float, default=[16.0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--per-member", type=int, default=240)
    p.add_argument("--max-versions", type=int, default=300)
    args = p.parse_args(argv)
    print("| rule | cap | seed | root versions to 90% | best accuracy | mean staleness |")
    print("|---|---|---|---|---|---|")
    for rule in args.rules:
        for cap in args.caps if rule.startswith("folds") else [0.0]:
            got = []
            for seed in range(args.seeds):
                r = versions_to_target(
                    rule, groups=args.groups, members=args.members,
                    per_member=args.per_member, cap=cap, seed=seed,
                    max_versions=args.max_versions,
                )  # fmt: skip
                got.append(r.versions)
                shown = "not reached" if r.versions is None else str(r.versions)
                print(f"| {rule} | {cap:g} | {seed} | {shown} | {r.best:.3f} | "
                      f"{r.mean_staleness:.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
