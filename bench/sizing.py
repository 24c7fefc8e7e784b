"""What the sync round's target costs the leader's owner thread, per task handed out.

``TaskSizer.round_target`` rates the short round of the ``j`` fastest workers for every ``j``
(leader-logic.md, "The round's target from the budget, the link and the speeds"); the owner
runs it for each task it hands out, sync or async. This times it for ``n`` workers of spread
speeds against the rule's definition, one round at a time in Python (:func:`rounds_one_by_one`,
``n²`` steps: what the sizer ran before it rated all rounds at once), in the same run.

    python -m bench.sizing [--workers 4,8,16,32,64,128] [--calls 2000] [--no-write]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from bench.report import markdown_table, write_section
from eddl.leader.sizing import TaskSizer

__all__ = ["rounds_one_by_one"]

# The scale benchmark's job: mini-batches of 8, tasks of 8..64 samples, budget 8 batches.
GRANULARITY, MIN_SAMPLES, MAX_SAMPLES, BUDGET = 8, 8, 64, 64


def rounds_one_by_one(
    sizer: TaskSizer, rates: Sequence[float]
) -> tuple[list[float], list[float], list[float]]:
    """For ``rates`` (fastest first), each short round of the ``j`` fastest as the rule defines
    it: its training time, the longest of its tasks, the samples they hold."""
    g = sizer.granularity

    def task(share: float) -> int:  # the share to the nearest mini-batch, clamped
        return max(sizer.min_samples, min(sizer.max_samples, math.floor(share / g + 0.5) * g))

    shorts, longest, held = [], [], []
    speed = 0.0
    for j, rate in enumerate(rates, 1):
        speed += rate
        short = max(sizer.round_samples / speed, sizer.min_samples / rate)
        sizes = [(task(r * short), r) for r in rates[:j]]
        shorts.append(short)
        longest.append(max(n / r for n, r in sizes))
        held.append(float(sum(n for n, _ in sizes)))
    return shorts, longest, held


def _sizer(n: int) -> tuple[TaskSizer, list[str]]:
    sizer = TaskSizer(
        task_seconds=0.05,
        min_samples=MIN_SAMPLES,
        max_samples=MAX_SAMPLES,
        default_samples=32,
        granularity=GRANULARITY,
        round_samples=BUDGET,
    )
    workers = [f"w{i}" for i in range(n)]
    for i, w in enumerate(workers):  # speeds spread 1x..4x, 40 ms of cost per task
        sps = 250.0 * (1 + 3 * i / max(n - 1, 1))
        sizer.observe(w, 32, 32 / sps, 0.001, wall=32 / sps + 0.04)
    return sizer, workers


def _short_rounds(sizer: TaskSizer, rates: list[float]) -> object:
    return sizer.short_rounds(np.array(rates))


def _per_call(fn: Callable[[], object], calls: int) -> float:
    fn()  # warm (numpy's first call, caches)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def measure(sizes: Sequence[int], calls: int) -> str:
    rows = []
    for n in sizes:
        sizer, workers = _sizer(n)
        rates = sorted((sizer.samples_per_second(w) or 0.0 for w in workers), reverse=True)
        ref = rounds_one_by_one(sizer, rates)
        got = sizer.short_rounds(np.array(rates))
        same = all(list(map(float, a)) == list(b) for a, b in zip(got, ref, strict=True))
        whole = _per_call(functools.partial(sizer.round_target, workers), calls)
        reference = _per_call(functools.partial(rounds_one_by_one, sizer, rates), calls)
        fast = _per_call(functools.partial(_short_rounds, sizer, rates), calls)
        rows.append(
            (
                n,
                f"{reference * 1e6:.1f}",
                f"{fast * 1e6:.1f}",
                f"{fast / reference:.2f}x",
                f"{whole * 1e6:.1f}",
                "yes" if same else "NO",
            )
        )
    table = markdown_table(
        (
            "workers n",
            "rounds one by one (µs)",
            "all rounds at once (µs)",
            "at once / one by one",
            "round_target, whole call (µs)",
            "same rounds",
        ),
        rows,
    )
    return (
        f"Wall time per call (one thread), mean of {calls} calls after one warm-up call; workers "
        f"of speeds spread 1x-4x (250-1,000 samples/s), mini-batches of {GRANULARITY}, tasks "
        f"of {MIN_SAMPLES}-{MAX_SAMPLES} samples, a budget of {BUDGET} samples (the scale "
        "benchmark's job). 'Rounds one by one' is the rule's definition in Python "
        "(`bench.sizing.rounds_one_by_one`, n² steps); 'all rounds at once' is "
        "`TaskSizer.short_rounds` (n x n in numpy, in blocks); the whole `round_target` call "
        "adds reading each worker's speed and choosing the round. 'Same rounds': both give the "
        "same training times, longest tasks and samples, to the bit.\n\n" + table
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("--workers", default="4,8,16,32,64,128")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    body = measure([int(n) for n in args.workers.split(",")], args.calls)
    print(body)
    if not args.no_write:
        write_section("sizing", "Leader: what sizing a round costs per task", body)


if __name__ == "__main__":
    main()
