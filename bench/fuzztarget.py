"""The target of the fuzzer: a real leader process, the calls sent to it, its state compared.

``FuzzLeader`` starts ``eddl-leader`` on ``127.0.0.1:0`` with a join token and an admin token
the corpus does not know, submits one job (no worker ever joins, so nothing legitimate changes
its state) and stops the process by its pid. ``send_all`` sends raw bytes on a raw channel
(no serializer: mutated bytes go out as they are) with bounded concurrency and a deadline per
call, and counts the status codes; ``leader_state`` is what must not change: the model version
and a digest of its parameters, the members, the jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from bench.fuzzing import FUZZ_JOB, Call
from eddl.net import open_channel
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.security.sessions import SESSION_KEY

__all__ = ["BAD_CODES", "FuzzLeader", "LeaderState", "SendResult", "leader_state", "send_all"]

JOIN_TOKEN = "fuzz-join-secret"
ADMIN_TOKEN = "fuzz-admin-secret"
# The fuzzer calls as this joined node (its session on every call), so hostile requests get past
# authentication and reach the handlers; its own membership may change (a fuzzed Leave), so the
# state compared before and after leaves it out.
FUZZ_NODE = "fuzz-node"
Metadata = tuple[tuple[str, str], ...]
# A status that means the server did not handle the input: a bug.
BAD_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


class FuzzLeader:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.job_id = ""
        self.metadata: Metadata = ()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    async def start(self) -> None:
        port_file = self.tmp / "leader.port"
        argv = [sys.executable, "-P", "-m", "eddl.leader.main", "--bind", "127.0.0.1:0"]
        argv += ["--state-dir", str(self.tmp / "state"), "--join-token", JOIN_TOKEN]
        argv += ["--admin-token", ADMIN_TOKEN, "--port-file", str(port_file)]
        argv += ["--log-level", "warning", "--insecure"]
        self._spawn(argv)
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip().isdigit()):
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the leader did not start; see {self.tmp / 'leader.log'}")
            await asyncio.sleep(0.05)
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        async with open_channel(self.address) as ch:
            join = cluster_pb2_grpc.ClusterStub(ch).Join(
                cluster_pb2.JoinRequest(
                    envelope=common_pb2.Envelope(node_id=FUZZ_NODE), join_token=JOIN_TOKEN
                ),
                timeout=60,
            )
            await join
            trailers = dict((k, str(v)) for k, v in (await join.trailing_metadata()) or ())
            self.metadata = ((SESSION_KEY, trailers[SESSION_KEY]),)
            reply = await admin_pb2_grpc.AdminStub(ch).SubmitJob(
                admin_pb2.SubmitJobRequest(spec_json=json.dumps(FUZZ_JOB), admin_token=ADMIN_TOKEN),
                timeout=60,
            )
        self.job_id = reply.envelope.job_id

    def _spawn(self, argv: list[str]) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        with (self.tmp / "leader.log").open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_text(self) -> str:
        return (self.tmp / "leader.log").read_text(errors="replace")


@dataclass(frozen=True, slots=True)
class LeaderState:
    model_version: int
    params_sha256: str
    nodes: tuple[tuple[str, str], ...]
    jobs: tuple[tuple[str, str, int], ...]


async def leader_state(address: str, job_id: str, metadata: Metadata = ()) -> LeaderState:
    async with open_channel(address) as ch:
        admin = admin_pb2_grpc.AdminStub(ch)
        cluster = cluster_pb2_grpc.ClusterStub(ch)
        digest = hashlib.sha256()
        version = -1
        pull = cluster_pb2.PullModelRequest(
            envelope=common_pb2.Envelope(job_id=job_id), latest=True
        )
        async for message in cluster.PullModel(pull, timeout=30, metadata=metadata):
            if message.WhichOneof("body") == "header":
                version = message.header.envelope.model_version
            else:
                digest.update(message.chunk.SerializeToString())
        listed = await admin.ListNodes(admin_pb2.ListNodesRequest(), timeout=30)
        jobs = []
        for asked in ("", job_id):  # the newest job, and ours
            status = await admin.JobStatus(admin_pb2.JobStatusRequest(job_id=asked), timeout=30)
            jobs.append((status.envelope.job_id, status.state, status.round))
    nodes = tuple(sorted((n.node_id, n.state) for n in listed.nodes if n.node_id != FUZZ_NODE))
    return LeaderState(version, digest.hexdigest(), nodes, tuple(jobs))


@dataclass
class SendResult:
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    # (method, code, details) of every call answered UNKNOWN or INTERNAL
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


async def _one(
    channel: grpc.aio.Channel, call: Call, deadline_s: float, metadata: Metadata = ()
) -> grpc.StatusCode:
    rpc = call.rpc
    md = metadata or None
    try:
        if rpc.client_streaming and rpc.server_streaming:  # pragma: no cover - none today
            stream = channel.stream_stream(rpc.method)(
                iter(call.payloads), timeout=deadline_s, metadata=md
            )
            async for _ in stream:
                pass
        elif rpc.client_streaming:
            await channel.stream_unary(rpc.method)(
                iter(call.payloads), timeout=deadline_s, metadata=md
            )
        elif rpc.server_streaming:
            async for _ in channel.unary_stream(rpc.method)(
                call.payloads[0], timeout=deadline_s, metadata=md
            ):
                pass
        else:
            await channel.unary_unary(rpc.method)(call.payloads[0], timeout=deadline_s, metadata=md)
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        if code in BAD_CODES:
            raise _Bad(rpc.name, code, str(exc.details())) from exc
        return code
    return grpc.StatusCode.OK


class _Bad(Exception):
    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(method, code, details)
        self.method, self.code, self.details = method, code, details


async def send_all(
    address: str,
    calls: list[Call],
    *,
    concurrency: int = 16,
    deadline_s: float = 1.0,
    metadata: Metadata = (),
) -> SendResult:
    """Send every call (raw bytes), ``concurrency`` at a time; count the answers by code."""
    result = SendResult()
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in calls:
        queue.put_nowait(call)
    started = time.perf_counter()
    async with open_channel(address) as channel:

        async def worker() -> None:
            while not queue.empty():
                call = queue.get_nowait()
                try:
                    code = await _one(channel, call, deadline_s, metadata)
                    result.codes[f"{call.rpc.name} {code.name}"] += 1
                except _Bad as bad:
                    result.codes[f"{bad.method} {bad.code.name}"] += 1
                    result.bad.append((bad.method, bad.code.name, bad.details[:200]))
                result.sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
