"""The price of mutual TLS: handshake, per-update cost and updates/s, with and without it.

    python -m bench.tls [--clients 8 16] [--seconds 8] [--handshakes 100] [--repeats 3]

Writes the ``tls`` section of docs/benchmarks.md. For each client count, two leader processes
run one after the other in the same run: one ``--insecure`` (plaintext on loopback, the
session credential from Join on every call) and one with mutual TLS (the cluster CA, a
certificate per client). The clients are bench.scale's: async FedAsync with a 784-128-10
model, GetTask -> PullModel when the version moved -> PushUpdate. The handshake is a new
channel and its first call (health Check) against the same leader, ``--handshakes`` times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.report import markdown_table, write_section
from bench.scale import _leader, _phase
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.node import NodeSecurity
from eddl.security.tls import Identity

__all__ = ["main", "measure"]


def _identity(authority: Authority, node_id: str, role: str) -> Identity:
    key = pki.new_key()
    issued = authority.issue(pki.make_csr(key, node_id), role)
    return Identity(pki.key_pem(key), issued.cert_pem, authority.ca_pem)


async def _handshakes(address: str, security: NodeSecurity, count: int) -> float:
    """Median ms of a new channel plus its first call."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        async with security.channel(address) as ch:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


async def _one(tmp: Path, mtls: bool, n: int, seconds: float, handshakes: int) -> dict[str, Any]:
    state = tmp / f"{'mtls' if mtls else 'plain'}-{n}"
    admin: Identity | None = None
    ids: dict[str, NodeSecurity] = {}
    authority: Authority | None = None
    if mtls:
        authority = Authority(state / "leader" / "pki")
        admin = _identity(authority, "bench-admin", "admin")

    def security(node_id: str) -> NodeSecurity:
        if authority is None:
            return NodeSecurity("insecure")
        ids[node_id] = NodeSecurity("mtls", _identity(authority, node_id, "worker"))
        return ids[node_id]

    with _leader(sys.executable, state, mtls=mtls) as (address, pid):
        leader = psutil.Process(pid)
        probe = NodeSecurity("mtls", admin) if admin is not None else NodeSecurity("off")
        handshake_ms = await _handshakes(address, probe, handshakes)
        cpu0 = sum(leader.cpu_times()[:2])
        clients, rate = await _phase(
            address, n, "async", seconds, "c", admin=admin, security=security
        )
        cpu = sum(leader.cpu_times()[:2]) - cpu0
    updates = sum(c.updates for c in clients)
    t_update = statistics.fmean(t for c in clients for t in c.sync_times[1:] or c.sync_times)
    return {
        "rate": rate,
        "t_update_ms": 1000 * t_update,
        "cpu_ms": 1000 * cpu / max(updates, 1),
        "handshake_ms": handshake_ms,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def measure(
    tmp: Path, sizes: Sequence[int], seconds: float, handshakes: int, repeats: int = 3
) -> str:
    rows = []
    for n in sizes:
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for rep in range(repeats):
            # Interleaved, the first of each pair alternating: drift on a shared machine
            # (other load, thermal) falls on both transports alike.
            for mtls_first in (rep % 2 == 1,):
                for secure in (mtls_first, not mtls_first):
                    got = await _one(tmp / f"r{rep}", secure, n, seconds, handshakes)
                    runs[secure].append(got)
        plain, mtls = _median(runs[False]), _median(runs[True])
        for label, got in (("plaintext (--insecure)", plain), ("mTLS", mtls)):
            rows.append(
                [
                    n,
                    label,
                    f"{got['handshake_ms']:.2f}",
                    f"{got['t_update_ms']:.1f}",
                    f"{got['cpu_ms']:.2f}",
                    f"{got['rate']:.1f}",
                ]
            )
        rows.append(
            [
                n,
                "**mTLS / plaintext**",
                f"{mtls['handshake_ms'] / plain['handshake_ms']:.2f}x",
                f"{mtls['t_update_ms'] / plain['t_update_ms']:.2f}x",
                f"{mtls['cpu_ms'] / plain['cpu_ms']:.2f}x",
                f"{mtls['rate'] / plain['rate']:.2f}x",
            ]
        )
    return (
        f"Medians of {repeats} interleaved runs per row, each a fresh leader process, clients "
        f"in this process over real gRPC on loopback for {seconds:g} s after a 2 s warm-up "
        f"(bench.scale's async FedAsync clients, 784-128-10 "
        f"float32 model, 407 KB per update). Handshake: a new channel and its first call, "
        f"median of {handshakes}. Per-update: mean time from a task's receipt to the "
        f"PushUpdate acknowledgement (model pull when the version moved included). The "
        f"clients share the machine's cores with the leader.\n\n"
        + markdown_table(
            [
                "clients",
                "transport",
                "handshake ms",
                "per-update ms",
                "leader CPU ms/update",
                "updates/s",
            ],
            rows,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[8, 16])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--handshakes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eddl-bench-tls-") as tmp:
        body = asyncio.run(
            measure(Path(tmp), args.clients, args.seconds, args.handshakes, args.repeats)
        )
    print(body)
    write_section("tls", "The price of mutual TLS", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
