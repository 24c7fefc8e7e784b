"""The price of sharing the CA's ledger: enrolment time on a root with and without a standby.

    python -m bench.ledger [--enrolments 30]

Two clusters side by side in this process, each on its own real etcd process, over real gRPC
on loopback with mTLS: one lone root candidate, and a root candidate with a standby (the two
given one cluster CA). Each enrolment is a whole enrolment as a node does it: a new key and
CSR, GetCA, the sealed token, Enrol at the root's bootstrap port. With a standby the root
answers only once the standby holds the spent token and the new serial (a ``pki`` replica
payload); alone it answers at once. Enrolments alternate between the two clusters (the order
swapped each time), so load on the shared machine hits both alike. Writes the ``ledger``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.failover import Rig, _free_port
from bench.report import markdown_table, write_section
from eddl.leader.config import LeaderConfig
from eddl.leader.replica import PkiOp, encode
from eddl.leader.server import LeaderDaemon
from eddl.security.authority import Authority
from eddl.security.enrol import enrol

__all__ = ["main"]


def _candidate(tmp: Path, etcd: str, name: str) -> LeaderDaemon:
    address = f"127.0.0.1:{_free_port()}"
    config = LeaderConfig(
        bind=address, advertise=address, state_dir=tmp / name, join_token="bench-token",
        coordinator=f"etcd://{etcd}", leader_id=name, lease_ttl_s=3, grace_s=0.2,
        bootstrap_bind="127.0.0.1:0",
    )  # fmt: skip
    return LeaderDaemon(config)


async def _until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _enrol(root: LeaderDaemon, host: Authority, node_id: str) -> float:
    assert root.security is not None and root.security.bootstrap is not None
    token = str(host.new_token("worker"))
    t0 = time.perf_counter()
    await enrol(root.security.bootstrap.address, token, node_id)
    return 1000 * (time.perf_counter() - t0)


async def _root(daemon: LeaderDaemon) -> LeaderDaemon:
    await daemon.start()
    assert daemon.leadership is not None
    await _until(daemon.leadership.is_root, 30, "a root")
    return daemon


async def measure(tmp: Path, etcds: tuple[str, str], count: int) -> tuple[list[float], ...]:
    """Enrolment ms on the lone root and on the root with a standby; the ledger's bytes."""
    lone_ca = Authority(tmp / "x" / "pki")
    ca = Authority(tmp / "a" / "pki")  # the paired candidates' one cluster CA
    (tmp / "b" / "pki").mkdir(parents=True)
    for part in ("ca.key", "ca.pem"):
        shutil.copy(ca.dir / part, tmp / "b" / "pki" / part)
    started: list[LeaderDaemon] = []
    try:
        for daemon in (_candidate(tmp, etcds[0], "x"), _candidate(tmp, etcds[1], "a")):
            started.append(await _root(daemon))
        lone, root = started
        standby = _candidate(tmp, etcds[1], "b")
        started.append(standby)
        await standby.start()
        assert root.ha is not None
        await _until(lambda: len(root.ha.status()["standbys"]) == 1, 30, "a sees b")  # type: ignore[union-attr]
        for i in range(2):  # the standby's first payload is a snapshot; warm both
            await _enrol(root, ca, f"warm-{i}")
            await _enrol(lone, lone_ca, f"warm-{i}")
        alone, paired = [], []
        for i in range(count):
            if i % 2:
                alone.append(await _enrol(lone, lone_ca, f"n{i}"))
                paired.append(await _enrol(root, ca, f"n{i}"))
            else:
                paired.append(await _enrol(root, ca, f"n{i}"))
                alone.append(await _enrol(lone, lone_ca, f"n{i}"))
        return alone, paired, [float(len(encode([PkiOp(ca.ledger())])))]
    finally:
        for daemon in reversed(started):
            await daemon.stop(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger", description=__doc__)
    parser.add_argument("--enrolments", type=int, default=30)
    args = parser.parse_args(argv)
    if not 1 <= args.enrolments <= 1000:
        parser.error("--enrolments must be within 1 .. 1000")
    with tempfile.TemporaryDirectory(prefix="eddl-ledger-") as tmp_dir:
        rigs = [Rig(Path(tmp_dir) / f"rig{i}") for i in range(2)]
        try:
            for rig in rigs:
                rig.start_etcd()
            alone, paired, size = asyncio.run(
                measure(Path(tmp_dir) / "leaders", (rigs[0].etcd, rigs[1].etcd), args.enrolments)
            )
        finally:
            for rig in rigs:
                rig.stop()
    rows = []
    for name, times in (("root alone (the ideal)", alone), ("root + 1 standby", paired)):
        median = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        ratio = median / statistics.median(alone)
        rows.append([name, f"{median:.1f}", f"{p90:.1f}", f"{ratio:.2f}x"])
    body = (
        f"{args.enrolments} enrolments on each of two mTLS clusters side by side in one "
        "process (real gRPC on loopback, each cluster on its own etcd), alternating between "
        "them: a lone root candidate, and a root candidate with a standby. Each is a node's "
        "whole enrolment (new key and CSR, GetCA, sealed token, Enrol); with a standby the "
        "root answers once the standby holds the spent token and the new serial. The paired "
        f"cluster's ledger after the run is {size[0]:,.0f} bytes as a replica payload.\n\n"
        + markdown_table(["cluster", "enrol ms (median)", "enrol ms (p90)", "vs alone"], rows)
        + "\n\nThe difference is the wait for the standby: one replica payload (the whole ledger, "
        "read on the root, checked and merged into the standby's files) per enrolment or "
        "renewal. Enrolments and renewals are rare (a node's start, two thirds of a "
        "certificate's life); training calls do not carry the ledger. On a shared, loaded "
        "machine the p90 column is mostly other processes' noise."
    )
    write_section("ledger", "The price of sharing the CA ledger between candidates", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
