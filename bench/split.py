"""When the root would split: BUC measured on a flat root, fed to the split policy.

For each client count ``n`` one leader process and ``n`` light asyncio clients in this process
run GetTask -> (PullModel when the version moved) -> PushUpdate over real gRPC (async FedAsync,
the leader-scale benchmark's load, ``bench.scale``) for ``seconds`` after a 2 s warm-up. Every
measured synchronisation (a task's PullModel and PushUpdate, from asking to acknowledgement)
goes to :class:`~eddl.leader.splitting.SplitPolicy` on a simulated clock, one window per client
count, in increasing ``n``; the table shows BUC = n / t_sync and what the policy decided after
each count, with its reason. The root's link is loopback here, with no capacity to compare
against, so only the BUC half of the saturation test is exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import markdown_table, write_section
from bench.scale import _leader, _phase
from eddl.leader.splitting import SplitConfig, SplitDecision, SplitPolicy

__all__ = ["Measured", "decisions", "main"]


@dataclass(frozen=True)
class Measured:
    workers: int
    updates_per_s: float
    sync_seconds: tuple[float, ...]  # every synchronisation measured at this count

    @property
    def t_sync(self) -> float:
        return statistics.fmean(self.sync_seconds)


def decisions(rows: Sequence[Measured], config: SplitConfig) -> list[SplitDecision]:
    """Feed each count's syncs, spread over one window of a simulated clock, then decide."""
    policy = SplitPolicy(config)
    out = []
    start = 0.0
    for row in rows:
        step = config.window / max(1, len(row.sync_seconds))
        for i, seconds in enumerate(row.sync_seconds):
            policy.observe_sync(start + i * step, row.workers, seconds)
        out.append(policy.decide(start + config.window - step / 2))
        start += 2 * config.window  # the next count's window starts clean
    return out


async def measure(tmp: Path, sizes: Sequence[int], seconds: float) -> list[Measured]:
    rows = []
    for n in sizes:
        with _leader(sys.executable, tmp / f"split-{n}") as (address, _pid):
            clients, rate = await _phase(address, n, "async", seconds, "c")
        syncs = tuple(t for c in clients for t in (c.sync_times[1:] or c.sync_times))
        rows.append(Measured(n, rate, syncs))
    return rows


def report(rows: Sequence[Measured], config: SplitConfig, seconds: float) -> str:
    table = []
    promoted_at: int | None = None
    for row, decision in zip(rows, decisions(rows, config), strict=True):
        if promoted_at is None and decision.action == "promote":
            promoted_at = row.workers
        table.append(
            [
                row.workers,
                f"{row.updates_per_s:.1f}",
                f"{1000 * row.t_sync:.1f}",
                f"{row.workers / row.t_sync:.1f}",
                decision.action,
                decision.reason,
            ]
        )
    verdict = (
        f"The policy promotes at n = {promoted_at}."
        if promoted_at is not None
        else "The policy did not promote in this range."
    )
    return (
        f"One leader process, 784-128-10 float32 model (407 KB), async FedAsync, light asyncio "
        f"clients in one process over real gRPC for {seconds:g} s per count after a 2 s warm-up "
        f"(the leader-scale load); every synchronisation fed to `SplitPolicy` (window "
        f"{config.window:g} s, min gain {config.min_gain:.0%}) on a simulated clock. The clients "
        f"share the machine's cores with the leader (and, here, with other loads: one noisy "
        f"count can decide). No sub-leader runs yet, so every row measures the flat root; "
        f"after a promotion the policy compares the counts that follow among themselves. "
        f"{verdict}\n\n"
        + markdown_table(
            [
                "clients n",
                "updates/s",
                "t_sync ms (mean)",
                "BUC = n / t_sync (1/s)",
                "decision",
                "reason",
            ],
            table,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4,8,16,32", help="client counts, comma-separated")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per count")
    p.add_argument("--no-write", action="store_true", help="print, do not write the report")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    config = SplitConfig()
    with tempfile.TemporaryDirectory(prefix="eddl-split-") as tmp:
        rows = asyncio.run(measure(Path(tmp), sizes, args.seconds))
    body = report(rows, config, args.seconds)
    if args.no_write:
        print(body)
    else:
        write_section("split-decision", "Leader role splitting: when the flat root saturates", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
