"""The report of :mod:`bench.fleet_accuracy`: each run, and split vs flat against the 0.5x target.

A run that did not reach the target within the limit counts as "more than the limit": the
median of a topology's runs is then a lower bound when that run is in the upper half, and a
ratio against a flat median that is such a bound is an upper bound (split / more than the
limit) — :func:`compare` says which, and whether the target holds.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.fleet_link import TOPOLOGIES, link_use
from bench.report import markdown_table

if TYPE_CHECKING:
    from bench.fleet_accuracy import AccuracyRun

__all__ = ["GOAL", "Comparison", "compare", "describe", "label", "median_time"]

GOAL = 0.5  # time to target, split / flat
LABELS = {"flat": "flat", "1-2": "1-2-n", "1-4": "1-4-n", "auto": "root's choice"}


def median_time(times: Sequence[float | None]) -> float:
    """The median of the runs' times to target, a run that missed it counting as infinite."""
    if not times:
        raise ValueError("no runs")
    return statistics.median(math.inf if t is None else t for t in times)


@dataclass(frozen=True)
class Comparison:
    split: float  # median seconds (inf: the median run did not reach the target)
    flat: float
    ratio: float  # split / flat; with flat infinite: split / limit, an upper bound
    bound: bool  # ratio is an upper bound (flat's median run did not reach the target)
    holds: bool | None  # the <= GOAL target; None: cannot be told from these runs

    def text(self) -> str:
        if math.isinf(self.split):
            return "split did not reach 90% in its median run: the target cannot be checked"
        ratio = f"{'< ' if self.bound else ''}{self.ratio:.2f}x"
        if self.holds is None:
            return (
                f"{ratio} flat: flat's median run did not reach 90%, so the <= {GOAL:g}x "
                "target can be neither confirmed nor ruled out"
            )
        verdict = "holds" if self.holds else "missed"
        return f"{ratio} flat: the <= {GOAL:g}x target {verdict}"


def compare(
    split: Sequence[float | None], flat: Sequence[float | None], limit: float
) -> Comparison:
    """Split's runs against flat's (seconds to target, None: not reached within ``limit``)."""
    if not limit > 0:
        raise ValueError("the limit must be > 0")
    s, f = median_time(split), median_time(flat)
    if math.isinf(s):
        return Comparison(s, f, math.nan, False, None)
    if math.isinf(f):
        ratio = s / limit  # flat took longer than the limit: the ratio is below this
        return Comparison(s, f, ratio, True, True if ratio <= GOAL else None)
    return Comparison(s, f, s / f, False, s / f <= GOAL)


def label(run: AccuracyRun) -> str:
    """A run's topology, with the root's rule for a split one (flat: every update is a
    device's own, the same under both rules)."""
    name = LABELS[run.topology]
    return name if run.topology == "flat" else f"{name}, {run.rule}"


def _seconds(t: float | None, limit: float, unit: str = "") -> str:
    return f"not in {limit:g} s" if t is None else f"{t:.1f}{unit}"


def _rows(runs: Sequence[AccuracyRun], limit: float) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in runs:
        down, up = (link_use(b, r.wall, r.rate_mbit) for b in r.link_bytes)
        best = "-" if r.reached.best is None else f"{r.reached.best:.3f}"
        rows.append(
            [f"{r.rate_mbit:g}", label(r), r.rep, _seconds(r.reached.seconds, limit),
             r.reached.version if r.reached.version is not None else "-",
             f"{r.reached.samples:,}" if r.reached.samples is not None else "-",
             best, r.reached.versions, f"{r.tasks / r.wall:.1f}",
             f"{r.samples_trained / r.wall:,.0f}", r.failed,
             f"{down:.0%} / {up:.0%}", f"{r.sim_cpu:.2f}", f"{r.train_busy:.0%}",
             f"{r.machine_cpu:.2f}", f"{r.root_cpu:.2f}"]
        )  # fmt: skip
    return rows


def describe(runs: Sequence[AccuracyRun], args: argparse.Namespace, commands: str) -> str:
    """The section: what ran, each run, and per rate each split topology against flat."""
    table = markdown_table(
        ["root link Mbit/s", "topology", "rep", "s to 90%", "root version", "samples at it",
         "best accuracy", "root versions", "device tasks/s", "samples trained/s",
         "devices failed", "root link use down / up", "simulator CPU (cores)",
         "training pool busy", "machine CPU busy (cores, all work)", "root CPU (cores)"],
        _rows(runs, args.limit),
    )  # fmt: skip
    verdicts = []
    for rate in dict.fromkeys(r.rate_mbit for r in runs):
        at = [r for r in runs if r.rate_mbit == rate]
        flat = [r.reached.seconds for r in at if r.topology == "flat"]
        for topology in dict.fromkeys(label(r) for r in at if r.topology != "flat"):
            split = [r.reached.seconds for r in at if label(r) == topology]
            if not flat:
                continue
            c = compare(split, flat, args.limit)
            verdicts.append(
                f"* {rate:g} Mbit/s, {topology} vs flat, median of "
                f"{len(split)} and {len(flat)} runs: "
                f"{_seconds(_finite(c.split), args.limit, ' s')} vs "
                f"{_seconds(_finite(c.flat), args.limit, ' s')}: {c.text()}"
            )
    return (
        f"{commands}\n\n"
        f"{args.devices} virtual devices of the fleet simulator (the example profiles, their "
        "links paced) training for real: each is a real worker daemon whose executor is the "
        "worker's own numpy executor (784-256-10, tanh/softmax/ce, lr 0.05, batch 32, on the "
        "shipped mnist-10k, which every device holds), the training of all devices in one "
        f"pool of {args.train_threads} threads (one BLAS thread each) so the asyncio loop "
        "keeps pacing the links. The root leader in its own network namespace behind a veth "
        "shaped with `tc tbf` (the rate per direction), the devices and the sub-leaders in the "
        "other (1-2-n / 1-4-n: two / four sub-leaders started by hand, device i at sub-leader "
        "i mod k; root's choice: every device dials the root, which runs `--split auto` with "
        f"{TOPOLOGIES['auto']} standby sub-leaders as its candidates and promotes as many as "
        "it decides). Async job (the root's rule beside each split topology: `fedasync`, or "
        "`fedasync-folds`, which counts a sub-leader's update for the updates it folds; a "
        "device's own update is FedAsync's under both) with target_accuracy 0.9, task_seconds "
        f"{args.task_seconds:g}, tasks of 8-{args.max_task_samples} samples, every root "
        "version evaluated on the 2,000 test images. **s to 90%**: from the first device's "
        "start to the making of the first root version whose test accuracy is >= 90% (the "
        f"root's events); a run stops there or after {args.limit:g} s. Samples at it: the "
        "samples the root's model holds at that version (a sub-leader's folded update counts "
        "its group's). Simulator CPU: the devices' process (1.0 = one core); training pool "
        "busy: the devices' training seconds over the run's wall time x the pool's threads; "
        "machine CPU busy: every process on this 2-core machine over the run (the root, the "
        "sub-leaders, the simulator, and other work running beside this benchmark); root link "
        "use: the client end's byte counters over the run and the rate. One process of each "
        "kind shares the machine's 2 cores with other work: times move between runs.\n\n"
        + table
        + "\n\n"
        + "".join(
            f"{label(r)}, {r.rate_mbit:g} Mbit/s, rep {r.rep}: {r.note}\n\n" for r in runs if r.note
        )
        + (
            "\n".join(verdicts)
            if verdicts
            else "No split vs flat comparison: a topology had no run."
        )
    )


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x
