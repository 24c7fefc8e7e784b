"""Where a sync round's time goes, read from the workers' own logs.

    python -m bench.rounds [--jobs 2] [--config compute] [--hidden 256] [--no-write]

Runs sync jobs of the time-to-accuracy benchmark (:mod:`bench.accuracy`: its cluster of
throttled worker processes, its job) and splits each round, the tasks handed out from one
model version, into:

* **training**: the longest member's ``busy_s`` (training plus the throttle's idle: the
  emulated device computing), which no leader can shorten;
* **closing push**: the ``push_s`` of the update acknowledged last. The leader closes the round
  inside that push, so its aggregation is in here;
* **start spread**: from the first member to the last taking its task (the new model going out
  to every member, inline in the ``GetTask`` replies);
* **the rest** of the round's wall time (first task taken to last update acknowledged) beyond
  those three: the last member's own work around its training (model and samples in, the
  update's encoding);
* **gap**: from a round's last acknowledgement to the next round's first task taken.

A round's fixed cost, what the leader and the link add to the training, is its wall time less
its training, plus the gap to the next round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.accuracy import CONFIGS, Variant, job_spec, run_job
from bench.report import markdown_table, write_section
from bench.timeline import TaskSpan, task_spans
from eddl.cluster.local import LocalCluster

__all__ = ["Round", "main", "rounds_of", "summary"]


@dataclass(frozen=True)
class Round:
    """One sync round: the tasks handed out from one version of one job."""

    job_id: str
    version: int
    members: int
    wall_s: float  # first task taken -> last update acknowledged
    training_s: float  # the longest member's busy time
    closing_push_s: float  # the push of the update acknowledged last
    start_spread_s: float  # first member's task taken -> last member's
    gap_s: float | None  # last acknowledgement -> the next round's first task (None: last)

    @property
    def rest_s(self) -> float:
        return max(0.0, self.wall_s - self.training_s - self.closing_push_s - self.start_spread_s)


def rounds_of(spans: Sequence[TaskSpan], min_members: int = 2) -> list[Round]:
    """The rounds the tasks in ``spans`` make, in order; a version handed out to fewer than
    ``min_members`` workers (an async job's, the end of the data) is no round."""
    groups: dict[tuple[str, int], list[TaskSpan]] = defaultdict(list)
    for span in spans:
        groups[(span.job_id, span.version)].append(span)
    kept = [g for g in groups.values() if len(g) >= min_members]
    kept.sort(key=lambda g: min(s.start for s in g))
    rounds: list[Round] = []
    for i, group in enumerate(kept):
        first = min(s.start for s in group)
        closer = max(group, key=lambda s: s.end)
        after = kept[i + 1] if i + 1 < len(kept) else None
        same_job = after is not None and after[0].job_id == group[0].job_id
        rounds.append(
            Round(
                group[0].job_id,
                group[0].version,
                len(group),
                closer.end - first,
                max(s.busy_s for s in group),
                closer.push_s,
                max(s.start for s in group) - first,
                min(s.start for s in after) - closer.end if after and same_job else None,
            )
        )
    return rounds


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (
        statistics.median(ordered),
        ordered[len(ordered) // 10],
        ordered[(9 * len(ordered)) // 10],
    )


def summary(rounds: Sequence[Round]) -> str:
    """A table of each part of a round: median, p10, p90 (ms), and its share of the median."""
    wall = statistics.median(r.wall_s for r in rounds)
    parts = [
        ("round wall time", [r.wall_s for r in rounds]),
        ("training (longest member)", [r.training_s for r in rounds]),
        ("closing push", [r.closing_push_s for r in rounds]),
        ("start spread", [r.start_spread_s for r in rounds]),
        ("the rest", [r.rest_s for r in rounds]),
        ("gap to the next round", [r.gap_s for r in rounds if r.gap_s is not None]),
    ]
    rows = []
    for name, values in parts:
        if not values:
            continue
        med, p10, p90 = _quantiles(values)
        rows.append(
            (
                name,
                f"{1000 * med:.1f}",
                f"{1000 * p10:.1f}",
                f"{1000 * p90:.1f}",
                f"{med / wall:.0%}",
            )
        )
    members = statistics.median(r.members for r in rounds)
    return (
        markdown_table(("part", "median ms", "p10 ms", "p90 ms", "of the median round"), rows)
        + f"\n\n{len(rounds)} rounds; median members {members:g}."
    )


async def measure(config: str, hidden: int, jobs: int, tmp: Path) -> tuple[list[Round], list[str]]:
    throttles = CONFIGS[config]
    runs: list[str] = []
    with LocalCluster(tmp / config, throttles) as cluster:
        await asyncio.to_thread(cluster.start)
        await cluster.wait_for_nodes(len(throttles), 120)
        warm = job_spec(hidden, Variant("warm-up", {"aggregation": "sync"}), 10**6)
        await run_job(cluster, {**warm, "rounds": 4, "target_accuracy": 0.999})
        first_task = _log_lengths(cluster.log_dir, len(throttles))
        for seed in range(jobs):
            run = await run_job(
                cluster, job_spec(hidden, Variant("sync", {"aggregation": "sync"}), seed)
            )
            reached = "not reached" if run.seconds is None else f"{run.seconds:.2f} s"
            runs.append(f"seed {seed}: 90% at {reached}, combined speed {run.combined_sps:,.0f}/s")
        spans: list[TaskSpan] = []
        for i in range(len(throttles)):
            path = cluster.log_dir / f"worker-{i}.log"
            lines = path.read_text(errors="replace").splitlines()[first_task[i] :]
            spans.extend(task_spans(f"worker-{i}", lines))
    return rounds_of(spans), runs


def _log_lengths(log_dir: Path, workers: int) -> list[int]:
    """Lines in each worker's log so far (the warm-up's, left out of the rounds)."""
    return [
        len((log_dir / f"worker-{i}.log").read_text(errors="replace").splitlines())
        for i in range(workers)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rounds", description=__doc__)
    p.add_argument("--jobs", type=int, default=2, help="sync jobs (seeds 0..jobs-1)")
    p.add_argument("--config", default="compute", choices=sorted(CONFIGS))
    p.add_argument("--hidden", type=int, default=256, help="hidden units of 784-H-10")
    p.add_argument("--no-write", action="store_true", help="print only; leave the report alone")
    args = p.parse_args(argv)
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        rounds, runs = asyncio.run(measure(args.config, args.hidden, args.jobs, Path(tmp)))
    if not rounds:
        raise SystemExit("no sync round found in the workers' logs")
    throttles = ",".join(f"{t:g}" for t in CONFIGS[args.config])
    body = (
        f"The sync rounds of {args.jobs} job(s) of `bench.accuracy`'s job (784-{args.hidden}-10, "
        f"its default rule), on its {args.config} cluster (4 worker processes throttled "
        f"{throttles}), after an untimed warm-up job; from the workers' own logs "
        f"(`bench/rounds.py` defines each part).\n\n"
        + summary(rounds)
        + "\n\nRuns: "
        + "; ".join(runs)
        + "."
    )
    print(body)
    if not args.no_write:
        write_section("rounds", "Where a sync round's time goes", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
