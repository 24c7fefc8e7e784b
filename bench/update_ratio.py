"""How far real updates move from the model they start from: the figure that sets
``max_update_ratio`` (``eddl.leader.sanity``).

For the jobs ``eddl local`` runs (``DEFAULT_JOB``: SGD on digits; ``MCU_JOB``: integer TIFeD on
digits), ``clients`` workers train tasks of ``task`` samples each from the current global model,
for ``rounds`` FedAvg / integer-mean rounds, and every update's
``||update - base|| / max(||base||, 1)`` is recorded: its median, 99th percentile and maximum
per job and task size, with the accuracy reached. Task sizes span the leader's range up to a
whole client shard (the largest task a dynamic job hands out on digits).

    python -m bench.update_ratio            # writes its section of docs/reliability.md
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.report import RELIABILITY_FILE, markdown_table, write_section
from eddl.cluster.local import DEFAULT_JOB, MCU_JOB
from eddl.data import load_dataset
from eddl.leader.sanity import update_ratio
from eddl.learn.aggregation import ClientUpdate, SyncRule, make_rule
from eddl.learn.algorithms import get_algorithm
from eddl.learn.params import clone

__all__ = ["measure"]


def measure(
    job: Mapping[str, Any], task: int, rounds: int, clients: int, seed: int = 0
) -> tuple[list[float], float]:
    """Every update's ratio over ``rounds`` rounds of ``clients`` tasks, and the accuracy."""
    data = load_dataset(str(job["dataset"]))
    algo = get_algorithm(str(job["algorithm"]), job["model"], job.get("hyper"))
    rule = make_rule(algo.sync_rule_name)
    assert isinstance(rule, SyncRule)
    params = algo.init_params(seed)
    x = algo.prepare_inputs(data.x_train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y_train))
    at = 0
    ratios: list[float] = []
    for version in range(rounds):
        updates = []
        for c in range(clients):
            idx = np.take(order, range(at, at + task), mode="wrap")
            at = (at + task) % len(order)
            local = clone(params)
            trainer = algo.make_trainer(seed=int(rng.integers(0, 2**32)))
            trainer.train(local, x[idx], data.y_train[idx], epochs=1, rng=rng)
            ratios.append(update_ratio(local, params))
            updates.append(ClientUpdate(params=local, num_samples=task, base_version=version))
            del c
        params = rule.aggregate(params, updates, version=version + 1)
    return ratios, algo.evaluate(params, data.x_test, data.y_test)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.update_ratio", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--tasks", default="25,64,256,1024")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    for name, job in (("DEFAULT_JOB (sgd)", DEFAULT_JOB), ("MCU_JOB (tifed)", MCU_JOB)):
        for task in (int(t) for t in args.tasks.split(",")):
            ratios, acc = measure(job, task, args.rounds, args.clients)
            every = np.asarray(ratios)
            r = every[~np.isnan(every)]  # NaN: against a base of all zeros, no ratio
            rows.append(
                [name, task, len(r), len(every) - len(r), f"{np.median(r):.3g}",
                 f"{np.quantile(r, 0.99):.3g}", f"{r.max():.3g}", f"{acc:.3f}"]
            )  # fmt: skip
            print(rows[-1], flush=True)
    table = markdown_table(
        [
            "job",
            "task samples",
            "updates",
            "against a zero base",
            "median",
            "p99",
            "max",
            "accuracy after",
        ],
        rows,
    )
    if not args.no_write:
        write_section("update-ratio", "Update ratios of real jobs", table, path=RELIABILITY_FILE)


if __name__ == "__main__":
    main()
