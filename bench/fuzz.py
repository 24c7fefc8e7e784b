"""Fuzz a real leader with ``--messages`` seeded hostile requests over every RPC and report what
``tests/integration/test_fuzz_rpc.py`` asserts on 5,000: crashes, UNKNOWN/INTERNAL answers,
state changes (model version and parameters, members, jobs), and the leader's memory.

    python -m bench.fuzz                      # 100,000 messages; writes docs/reliability.md
    python -m bench.fuzz --messages 20000 --no-write

The corpus (``bench.fuzzing``) is half hypothesis-drawn messages, half byte-mutated valid
requests; calls go out as raw bytes, 16 at a time, each with a 1 s deadline. The leader's RSS
is read after a warm-up of 2,000 messages and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc

from bench.fuzzing import Hints, by_method, corpus
from bench.fuzztarget import FuzzLeader, SendResult, leader_state, send_all
from bench.report import RELIABILITY_FILE, markdown_table, write_section
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["main", "run"]

WARMUP = 2000


async def run(messages: int, seed: int, tmp: Path) -> tuple[dict[str, object], SendResult]:
    leader = FuzzLeader(tmp)
    try:
        await leader.start()
        hints = Hints(job_id=leader.job_id)
        started = time.perf_counter()
        calls = corpus(messages, hints, seed)
        generated = time.perf_counter() - started
        before = await leader_state(leader.address, leader.job_id, leader.metadata)
        warm = await send_all(leader.address, calls[:WARMUP], metadata=leader.metadata)
        rss_warm = leader.rss()
        rest = await send_all(leader.address, calls[WARMUP:], metadata=leader.metadata)
        rss_end = leader.rss()
        alive = leader.alive()
        after = (
            await leader_state(leader.address, leader.job_id, leader.metadata) if alive else None
        )
        events = await job_events(leader.address, leader.job_id) if after != before else []
    finally:
        code = leader.stop()
    result = SendResult(
        sent=warm.sent + rest.sent,
        codes=warm.codes + rest.codes,
        bad=warm.bad + rest.bad,
        seconds=warm.seconds + rest.seconds,
    )
    figures: dict[str, object] = {
        "messages": result.sent,
        "structured": sum(c.origin == "structured" for c in calls),
        "mutated": sum(c.origin == "mutated" for c in calls),
        "rpcs": len(by_method(calls)),
        "generate_s": generated,
        "send_s": result.seconds,
        "crashes": 0 if alive else 1,
        "internal_unknown": len(result.bad),
        "state_changed": after != before,
        "state_before": before,
        "state_after": after,
        "rss_warm_mib": rss_warm / 2**20,
        "rss_end_mib": rss_end / 2**20,
        "exit_code": code,
        "unexpected_logged": leader.log_text().count("unexpected error"),
        "events": events,
    }
    return figures, result


async def job_events(address: str, job_id: str) -> list[str]:
    """The job's events (to say what changed), read for at most 3 s."""
    out: list[str] = []
    async with open_channel(address) as ch:
        with contextlib.suppress(grpc.aio.AioRpcError):
            request = admin_pb2.WatchJobRequest(job_id=job_id)
            async for event in admin_pb2_grpc.AdminStub(ch).WatchJob(request, timeout=3):
                out.append(f"{event.seq} {event.kind}: {event.message[:200]}")
    return out


def _codes_table(codes: Counter[str]) -> str:
    by_code: Counter[str] = Counter()
    for key, n in codes.items():
        by_code[key.split()[1]] += n
    return markdown_table(["status", "calls"], [[k, f"{n:,}"] for k, n in by_code.most_common()])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures, result = asyncio.run(run(args.messages, args.seed, Path(tmp)))
    for key, value in figures.items():
        print(f"{key}: {value}")
    for bad in result.bad[:20]:
        print("BAD", bad)
    summary = markdown_table(
        ["messages", "RPCs", "crashes", "UNKNOWN/INTERNAL", "state changes",
         "leader RSS after warm-up", "leader RSS at the end", "send time"],
        [[f"{figures['messages']:,}", figures["rpcs"], figures["crashes"],
          figures["internal_unknown"], 1 if figures["state_changed"] else 0,
          f"{figures['rss_warm_mib']:.1f} MiB", f"{figures['rss_end_mib']:.1f} MiB",
          f"{figures['send_s']:.0f} s"]],
    )  # fmt: skip
    body = (
        f"{summary}\n\n{figures['structured']:,} hypothesis-drawn and {figures['mutated']:,} "
        f"byte-mutated messages (seed {args.seed}); answers by status code:\n\n"
        f"{_codes_table(result.codes)}\n"
    )
    if not args.no_write:
        write_section("fuzz", "RPC fuzzing", body, path=RELIABILITY_FILE)


if __name__ == "__main__":
    main()
