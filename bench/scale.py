"""The scale part of the cluster benchmark: leader updates/s and wake-up latency per client count.

One leader process and ``n`` light asyncio clients in this process, over real gRPC:

* *throughput* (async FedAsync): clients loop GetTask -> (PullModel when the version moved) ->
  PushUpdate for ``seconds`` after a 2 s warm-up; updates/s, leader CPU per update, t_sync.
* *wake-up latency* (sync rounds, a fresh leader): a client that pushed its update long-polls
  GetTask until the round closes; the latency is from the acknowledgement of the update that
  closed the round (the one whose reply carries the new version) to each waiting client's
  GetTask reply with a task of that version. All stamps come from this process's clock.

Each leader is started as ``<python> -P -m eddl.leader.main``; ``leaders`` maps a label to an
interpreter, so the same run measures, side by side, this checkout's leader and one installed
in another environment (e.g. a venv holding an earlier commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from bench.report import markdown_table
from eddl.cli.admin_client import job_status, submit_job
from eddl.net import Reassembler, encode_tensors, params_nbytes
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.security.node import NodeSecurity
from eddl.security.tls import Identity

__all__ = ["scale"]

TOKEN = "bench-scale"
MODEL = {"sizes": [784, 128, 10], "activations": ["tanh", "sigmoid"], "loss": "bce"}


def _job(n: int, aggregation: str) -> dict[str, Any]:
    return {
        "dataset": "mnist-10k",
        "algorithm": "sgd",
        "model": MODEL,
        "hyper": {"lr": 0.1, "batch_size": 8},
        "rounds": 10**7,
        "max_epochs": 10**6,
        "aggregation": aggregation,
        "async_rule": "fedasync",
        "eval_every": 10**6,
        "checkpoint_every": 100,
        "max_staleness": 4 * n,
        "task_seconds": 0.05,
        "round_deadline": 10.0,
        "default_task_samples": 32,
        "min_task_samples": 8,
        "max_task_samples": 64,
    }


@functools.cache
def _knows_insecure(python: str) -> bool:
    """Whether the leader ``python`` runs has the ``--insecure`` flag (older ones, compared
    side by side, have no security and no such flag)."""
    done = subprocess.run(
        [python, "-P", "-m", "eddl.leader.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--insecure" in done.stdout


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` by its pid: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def _leader(
    python: str, state: Path, *, mtls: bool = False, extra: Sequence[str] = ()
) -> Iterator[tuple[str, int]]:
    """A leader process run by ``python``; yields its address and pid, stops it by pid.

    Plaintext on loopback (``--insecure``, session credentials) unless ``mtls``: then the
    cluster CA in ``state/leader/pki`` (made by the caller, who issues the clients' and the
    admin's certificates from it) secures every call. ``extra`` flags go last (a later
    ``--heartbeat-interval`` wins)."""
    port_file = state / "leader.port"
    state.mkdir(parents=True, exist_ok=True)
    argv = [python, "-P", "-m", "eddl.leader.main", "--bind", "127.0.0.1:0"]
    if not mtls and _knows_insecure(python):  # a leader from before mTLS speaks plaintext
        argv += ["--insecure"]
    argv += ["--state-dir", str(state / "leader"), "--join-token", TOKEN]
    # A patient leader: beats of clients sharing one loaded event loop may come late.
    argv += ["--port-file", str(port_file), "--heartbeat-interval", "5", *extra]
    with (state / "leader.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip().isdigit()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"leader {python} did not start; see {state / 'leader.log'}")
            time.sleep(0.05)
        yield f"127.0.0.1:{int(port_file.read_text())}", proc.pid
    finally:
        stop(proc)


@dataclass
class _Client:
    address: str
    node_id: str
    job_id: str
    term: int
    params: dict[str, np.ndarray] | None = None
    version: int = -1
    updates: int = 0
    refused: int = 0
    sync_times: list[float] = field(default_factory=list)
    # (asked at, answered at, base version) of each GetTask that returned a task
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    # new version -> when the update that made it was acknowledged
    closers: dict[int, float] = field(default_factory=dict)
    security: NodeSecurity = field(default_factory=lambda: NodeSecurity("insecure"))

    def env(self, version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=self.job_id, model_version=version, term=self.term, node_id=self.node_id
        )

    async def run(self, until: float) -> None:
        async with self.security.channel(self.address) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=self.env(), role="worker", join_token=TOKEN),
                timeout=30,
            )
            beats = asyncio.create_task(self._beat(stub, until))
            try:
                while time.monotonic() < until:
                    await self._one(stub)
            finally:
                beats.cancel()

    async def _one(self, stub: cluster_pb2_grpc.ClusterStub) -> None:
        asked = time.perf_counter()
        reply = await stub.GetTask(
            cluster_pb2.GetTaskRequest(envelope=self.env(), wait_ms=2000), timeout=30
        )
        if reply.WhichOneof("outcome") != "task":
            return
        task = reply.task
        base = task.envelope.model_version
        self.answers.append((asked, time.perf_counter(), base))
        start = time.perf_counter()
        if self.params is None or self.version != base:
            self.params = await _pull(stub, self.env(base))
            self.version = base
        try:
            ack = await stub.PushUpdate(_update(self.env(base), task, self.params), timeout=30)
        except grpc.aio.AioRpcError as exc:
            # Too stale for the rule in force: refused, as it should be.
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            self.refused += 1
            return
        acked = time.perf_counter()
        if ack.envelope.model_version > base:
            self.closers.setdefault(ack.envelope.model_version, acked)
        self.sync_times.append(acked - start)
        self.updates += 1

    async def _beat(self, stub: cluster_pb2_grpc.ClusterStub, until: float) -> None:
        while time.monotonic() < until:
            await stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=self.env()), timeout=30)
            await asyncio.sleep(1.0)


async def _pull(
    stub: cluster_pb2_grpc.ClusterStub, env: common_pb2.Envelope
) -> dict[str, np.ndarray]:
    reassembler: Reassembler | None = None
    async for m in stub.PullModel(cluster_pb2.PullModelRequest(envelope=env), timeout=30):
        if m.WhichOneof("body") == "header":
            reassembler = Reassembler(
                m.header.num_tensors, m.header.total_bytes, max_total_bytes=2**30
            )
        elif reassembler is not None:
            reassembler.add(m.chunk)
    assert reassembler is not None
    return reassembler.finish()


def _update_messages(
    env: common_pb2.Envelope, task: cluster_pb2.Task, params: dict[str, np.ndarray]
) -> list[cluster_pb2.UpdateChunk]:
    header = cluster_pb2.UpdateHeader(
        envelope=env,
        task_id=task.task_id,
        num_samples=len(task.indexes),
        num_tensors=len(params),
        total_bytes=params_nbytes(params),
        stats=cluster_pb2.TaskStats(samples=len(task.indexes), seconds=0.001),
    )
    return [cluster_pb2.UpdateChunk(header=header)] + [
        cluster_pb2.UpdateChunk(chunk=c) for c in encode_tensors(params)
    ]


async def _update(
    env: common_pb2.Envelope, task: cluster_pb2.Task, params: dict[str, np.ndarray]
) -> Any:
    for m in _update_messages(env, task, params):
        yield m


def wire_ratio(params: dict[str, np.ndarray]) -> tuple[int, int, float]:
    task = cluster_pb2.Task(task_id="job-x:1.00001.123", indexes=list(range(256)))
    env = common_pb2.Envelope(job_id="job-x", model_version=123, term=1, node_id="worker-00")
    payload = 0
    for m in _update_messages(env, task, params):
        size = m.ByteSize() + 5  # gRPC length-prefixed message
        payload += size + 9 * math.ceil(size / 16384)  # HTTP/2 DATA frame headers
    model = params_nbytes(params)
    return payload, model, payload / model


def wake_latencies(clients: Sequence[_Client]) -> list[float]:
    """Seconds from the acknowledgement of a round's closing update to each GetTask reply of
    that round's version that was already waiting when the round closed."""
    closers: dict[int, float] = {}
    for c in clients:
        for version, at in c.closers.items():
            closers[version] = min(at, closers.get(version, at))
    return [
        answered - closers[base]
        for c in clients
        for asked, answered, base in c.answers
        if base in closers and asked < closers[base]
    ]


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


async def _phase(
    address: str,
    n: int,
    aggregation: str,
    seconds: float,
    prefix: str,
    *,
    admin: Identity | None = None,
    security: Callable[[str], NodeSecurity] | None = None,
) -> tuple[list[_Client], float]:
    job_id = await submit_job(address, _job(n, aggregation), identity=admin)
    term = (await job_status(address, job_id, identity=admin)).envelope.term
    clients = [_Client(address, f"{prefix}{i:02d}", job_id, term) for i in range(n)]
    if security is not None:
        for c in clients:
            c.security = security(c.node_id)
    until = time.monotonic() + seconds + 2.0
    runs = [asyncio.create_task(c.run(until)) for c in clients]
    await asyncio.sleep(2.0)  # warm-up: every client joined and pushed before measuring
    for c in clients:
        c.answers.clear()
        c.closers.clear()
    t0 = time.monotonic()
    counted0 = sum(c.updates for c in clients)
    await asyncio.gather(*runs)
    return clients, (sum(c.updates for c in clients) - counted0) / (time.monotonic() - t0)


async def _measure(python: str, state: Path, n: int, seconds: float) -> dict[str, Any]:
    with _leader(python, state / "async") as (address, pid):
        leader = psutil.Process(pid)
        cpu0 = sum(leader.cpu_times()[:2])
        clients, rate = await _phase(address, n, "async", seconds, "c")
        cpu = sum(leader.cpu_times()[:2]) - cpu0
    with _leader(python, state / "sync") as (address, _):
        waiting, _ = await _phase(address, n, "sync", seconds, "s")
    updates = sum(c.updates for c in clients)
    t_sync = statistics.fmean(t for c in clients for t in c.sync_times[1:] or c.sync_times)
    latencies = wake_latencies(waiting)
    return {
        "rate": rate,
        "cpu_ms": 1000 * cpu / max(updates, 1),
        "t_sync": t_sync,
        "refused": sum(c.refused for c in clients),
        "p50": 1000 * _percentile(latencies, 50),
        "p99": 1000 * _percentile(latencies, 99),
        "wakes": len(latencies),
        "params": clients[0].params,
    }


async def scale(
    tmp: Path,
    sizes: Sequence[int],
    seconds: float,
    leaders: Mapping[str, str],
    reps: int = 1,
) -> str:
    """The benchmark for each client count and each leader (label -> interpreter).

    Interleaved: each repetition measures every client count with every leader in turn (the
    order of the leaders alternates between repetitions), so a machine that gets busier or
    quieter during the run weighs on all leaders alike; each figure is the median over the
    repetitions, and the ratios compare each leader with the first one.
    """
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    ratio_line = ""
    labels = list(leaders)
    for rep in range(reps):
        for n in sizes:
            for label in labels if rep % 2 == 0 else labels[::-1]:
                state = tmp / f"scale-{label}-{n}-{rep}"
                got = await _measure(leaders[label], state, n, seconds)
                runs.setdefault((label, n), []).append(got)
                if not ratio_line and got["params"] is not None:
                    payload, model, ratio = wire_ratio(got["params"])
                    ratio_line = (
                        f"Bytes on the wire per aggregated update: {payload} for a "
                        f"{model}-byte model = **{ratio:.4f}x** (protobuf + gRPC prefix + "
                        "HTTP/2 DATA frame headers; target <= 1.05)."
                    )

    def median(label: str, n: int, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[(label, n)])

    rows = []
    for n in sizes:
        base = labels[0]
        for label in labels:
            rate, p50, p99 = (median(label, n, k) for k in ("rate", "p50", "p99"))
            t_sync = median(label, n, "t_sync")
            rows.append(
                [
                    label,
                    n,
                    f"{rate:.1f}",
                    f"{rate / median(base, n, 'rate'):.2f}x",
                    f"{median(label, n, 'cpu_ms'):.2f}",
                    f"{1000 * t_sync:.1f}",
                    f"{n / t_sync:.1f}",
                    int(median(label, n, "refused")),
                    f"{p50:.1f}",
                    f"{p50 / median(base, n, 'p50'):.2f}x",
                    f"{p99:.1f}",
                    f"{p99 / median(base, n, 'p99'):.2f}x",
                    int(median(label, n, "wakes")),
                ]
            )
    names = ", ".join(f"{label} = `{python}`" for label, python in leaders.items())
    return (
        f"Leaders: {names}. One leader process, 101,770-parameter model (784-128-10 float32, "
        f"407 KB), light asyncio clients in one process over real gRPC for {seconds:g} s after a "
        f"2 s warm-up. Throughput: async FedAsync, GetTask -> (PullModel when the version moved) "
        f"-> PushUpdate (max_staleness 4n; staler updates are refused and counted). Wake-up: "
        f"sync rounds on a fresh leader, from the acknowledgement of the update that closed a "
        f"round to each already-waiting client's GetTask reply. The clients share the "
        f"machine's cores with the leader. Medians of {reps} interleaved repetition(s) (the "
        f"leaders take turns at each client count, their order alternating); ratios are to "
        f"`{labels[0]}` at the same client count.\n\n"
        + ratio_line
        + "\n\n"
        + markdown_table(
            [
                "leader",
                "clients n",
                "updates/s",
                "vs " + labels[0],
                "leader CPU ms/update",
                "t_sync ms (mean)",
                "BUC = n / t_sync (1/s)",
                "stale refusals",
                "wake p50 ms",
                "vs " + labels[0],
                "wake p99 ms",
                "vs " + labels[0],
                "wakes",
            ],
            rows,
        )
    )
