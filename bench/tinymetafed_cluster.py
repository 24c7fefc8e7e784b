"""TinyMetaFed and Reptile as cluster jobs on real processes: few-shot accuracy and the bytes
each device uploaded per round, counted by the leader on the wire.

Run: ``python -m bench.tinymetafed_cluster`` (``--rounds``, ``--no-write``). A leader, two
Python workers and a gateway with two host-simulated MCUs (``LocalCluster``), the job of
``docs/jobs/tinymetafed-digits.toml`` with its ``rounds`` and ``top_p``/``values``/algorithm
changed per row; each row is one job on the same warm cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report import markdown_table, write_section
from eddl.cli.admin_client import submit_job, watch_job
from eddl.cluster import LocalCluster
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from eddl.security.admin import admin_channel

__all__ = ["main"]

JOB = Path(__file__).resolve().parents[1] / "docs" / "jobs" / "tinymetafed-digits.toml"
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "tinymetafed": ("tinymetafed", {}),
    "tinymetafed int8": ("tinymetafed", {"values": "int8"}),
    "tinymetafed lsgd-q8": ("tinymetafed", {"kernel": "lsgd-q8"}),
    "reptile": ("reptile", {}),
}
_TINY_ONLY = ("top_p", "local_layers", "recon_epochs", "values")


def _spec(algorithm: str, extra: dict[str, Any], rounds: int) -> dict[str, Any]:
    spec: dict[str, Any] = tomllib.loads(JOB.read_text())["job"]
    hyper = {
        k: v for k, v in spec["hyper"].items() if algorithm == "tinymetafed" or k not in _TINY_ONLY
    }
    return {**spec, "algorithm": algorithm, "rounds": rounds, "hyper": {**hyper, **extra}}


async def _run(cluster: LocalCluster, spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    job_id = await submit_job(cluster.address, spec, identity=cluster.identity)
    await asyncio.wait_for(
        watch_job(cluster.address, job_id, lambda e: None, identity=cluster.identity), 900
    )
    async with admin_channel(cluster.address, cluster.identity) as ch:
        status = await admin_pb2_grpc.AdminStub(ch).JobStatus(
            admin_pb2.JobStatusRequest(job_id=job_id), timeout=10
        )
    detail = json.loads(status.detail_json)
    result = detail.get("result") or {}
    return {
        "state": status.state,
        "meta": detail.get("meta") or result.get("meta"),
        "work": detail.get("work") or result.get("work") or {},
        "seconds": time.monotonic() - t0,
    }


async def _bench(rounds: int) -> list[list[object]]:
    rows: list[list[object]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(Path(tmp), [1.0, 1.0], mcus=2, mcu_kind="host") as cluster,
    ):
        await asyncio.to_thread(cluster.start)
        await cluster.wait_for_nodes(4, 120)
        dense = None
        for label, (algorithm, extra) in ROWS.items():
            out = await _run(cluster, _spec(algorithm, extra, rounds))
            meta = out["meta"]
            if out["state"] != "completed" or not isinstance(meta, dict):
                raise RuntimeError(f"{label}: the job ended {out['state']}: {out}")
            up = float(meta["upload_bytes_per_device_round"])
            if algorithm == "reptile":
                dense = up
            mcu_tasks = sum(w["tasks"] for n, w in out["work"].items() if ".mcu" in n)
            rows.append(
                [
                    label,
                    f"{meta['few_shot']:.1%}",
                    f"{meta['best_few_shot']:.1%}",
                    f"{up:,.0f}",
                    f"{meta['uploads']} ({mcu_tasks} by MCUs)",
                    f"{out['seconds']:.1f}",
                ]
            )
        for row in rows[:3]:
            if dense:
                row[0] = f"{row[0]} (−{1 - float(str(row[3]).replace(',', '')) / dense:.0%} up)"
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    rows = asyncio.run(_bench(args.rounds))
    table = markdown_table(
        [
            "method",
            "few-shot k=5 (last)",
            "best",
            "upload B/device/round (wire)",
            "uploads",
            "job s",
        ],
        rows,
    )
    body = (
        "Real processes: a leader, 2 Python workers and a gateway with 2 host-simulated MCUs "
        f"(`LocalCluster`), the job of `docs/jobs/tinymetafed-digits.toml` ({args.rounds} "
        "rounds, 2 of the 4 nodes sampled per round, each node a device with its own 5-way "
        "digits task, 10 held-out devices). Upload bytes are the serialised size of each "
        "whole `PushUpdate` stream (header included) as the leader read it, per device per "
        "round; Reptile uploads φ of all layers densely, TinyMetaFed the top 10% of φ − θ of "
        "the shared layers as sparse records; `lsgd-q8` runs the inner loop on int8 weights "
        "(lr 0.05 → 2^-4) on workers and MCUs alike. Few-shot accuracy is the job's, from the "
        "leader (k = 5 per class, 10 fine-tuning passes). One seed, one run per row.\n\n" + table
    )
    if not args.no_write:
        write_section("tinymetafed-cluster", "TinyMetaFed in the cluster: bytes on the wire", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
