"""``ClusterServicer``: the Cluster service (workers -> leader), thin over the Coordinator.

Each handler checks the envelope (node id, job id, term), decodes tensors through
``eddl.net``, makes one coordinator call and encodes the answer. A refused call changes nothing:
the checks run before the coordinator is called, and the coordinator itself validates before it
changes state. ``GetTask`` is a long-poll: it waits up to ``wait_ms`` for work, woken by the
:class:`Notifier` whenever an update, join or leave may have made work available.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from eddl.leader.actor import LeaderCore
from eddl.leader.capability import McuCapabilities
from eddl.leader.config import LeaderConfig
from eddl.leader.errors import (
    InvalidArgumentError,
    NodeExpiredError,
    UnknownJobError,
    UnknownNodeError,
    UpdateRejectedError,
)
from eddl.leader.jobs import JobSpec
from eddl.leader.membership import NodeProfile
from eddl.leader.run import Wait
from eddl.leader.scheduler import Task
from eddl.leader.servicers.common import (
    Notifier,
    check_envelope,
    check_finite,
    guarded,
    guarded_stream,
)
from eddl.net import ChunkError, ChunkTooLargeError, Reassembler, encode_tensors, params_nbytes
from eddl.net.chunks import MAX_CHUNK_BYTES
from eddl.net.tensors import tensor_from_array
from eddl.profiler.convert import link_from_proto
from eddl.profiler.profiles import LinkEstimate
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2

__all__ = ["ClusterServicer"]


def _bandwidth_bps(links: list[LinkEstimate]) -> float | None:
    """The node's slower direction over its best-measured link, in bits per second."""
    rates = [
        min(r for r in (link.upload_bytes_per_second, link.download_bytes_per_second) if r)
        for link in links
        if link.upload_bytes_per_second or link.download_bytes_per_second
    ]
    return 8.0 * max(rates) if rates else None


# A sample batch message stays near 1 MiB, like tensor chunks.
_SAMPLE_BATCH_BYTES = 1 << 20
# A worker's reason for a failed task, kept to one line of this length in events and logs.
_MAX_FAILURE_CHARS = 500
# Recent model versions kept for PullModel (see ``_remember``), bounded in bytes.
_MODEL_CACHE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class _JobWire:
    """What every task of a job carries, computed once per job."""

    spec: JobSpec
    model_json: str
    hyper_json: str


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(
        self, core: LeaderCore, config: LeaderConfig, notifier: Notifier | None = None
    ) -> None:
        self.core = core
        self.coordinator = core.coordinator
        self.config = config
        self.notifier = notifier or Notifier()
        self.leaders: list[str] = list(config.leaders)
        self.profiles: dict[str, dict[str, Any]] = {}
        self._node_profiles: dict[str, NodeProfile] = {}
        self._jobs: dict[str, _JobWire] = {}
        self._models: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = OrderedDict()
        self._model_bytes = 0

    @property
    def term(self) -> int:
        return self.coordinator.term

    def _envelope(self, job_id: str = "", version: int = 0, node_id: str = "") -> Any:
        return common_pb2.Envelope(
            job_id=job_id, model_version=version, term=self.term, node_id=node_id
        )

    # -- membership --------------------------------------------------------------------------

    async def Join(
        self, request: cluster_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.JoinReply:
        async def call() -> cluster_pb2.JoinReply:
            check_envelope(request.envelope, term=self.term, check_term=False)
            info = request.info
            sps = check_finite(
                "info.benchmark_samples_per_second", info.benchmark_samples_per_second
            )
            profile = NodeProfile(
                benchmark_sps=sps or None,
                static=MessageToDict(request.profile.static) if request.profile.static else None,
            )
            # A microcontroller's gateway says what the device can run; membership refuses
            # role "mcu" without it and any other role with it.
            mcu = (
                McuCapabilities.from_proto(request.profile.mcu)
                if request.profile.HasField("mcu")
                else None
            )
            node_id = request.envelope.node_id
            reply = await self.core.call(
                self.coordinator.join,
                node_id,
                request.join_token,
                role=request.role or "worker",
                profile=profile,
                address=context.peer(),
                term=request.envelope.term or None,
                mcu=mcu,
            )
            self._node_profiles[node_id] = profile
            self.profiles[node_id] = {
                "info": MessageToDict(info),
                "profile": MessageToDict(request.profile),
            }
            self.notifier.notify()
            return cluster_pb2.JoinReply(
                envelope=self._envelope(reply.job_id or "", node_id=node_id),
                heartbeat_interval_ms=max(1, round(reply.heartbeat_interval * 1000)),
                heartbeat_jitter=reply.heartbeat_jitter,
                leaders=self.leaders,
                leader_id=self.config.leader_id,
                max_chunk_bytes=self.config.chunk_bytes,
            )

        return await guarded(context, call())

    async def Heartbeat(
        self, request: cluster_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.HeartbeatReply:
        async def call() -> cluster_pb2.HeartbeatReply:
            check_envelope(request.envelope, term=self.term)
            node_id = request.envelope.node_id
            load = request.load
            for name in ("cpu_percent", "samples_per_second"):
                check_finite(f"load.{name}", getattr(load, name))
            known = self._node_profiles.get(node_id, NodeProfile())
            links = [link_from_proto(link) for link in request.network.links]  # validates
            profile = NodeProfile(
                benchmark_sps=known.benchmark_sps,
                static=known.static,
                dynamic=MessageToDict(request.dynamic) if request.HasField("dynamic") else None,
                bandwidth_bps=_bandwidth_bps(links) or known.bandwidth_bps,
            )
            try:
                reply = await self.core.call(
                    self.coordinator.heartbeat, node_id, profile=profile, term=request.envelope.term
                )
            except (UnknownNodeError, NodeExpiredError):
                # The explicit answer to a forgotten node: join again, no timeout needed.
                return cluster_pb2.HeartbeatReply(
                    envelope=self._envelope(node_id=node_id), known=False
                )
            self._node_profiles[node_id] = profile
            entry = self.profiles.setdefault(node_id, {})
            entry["load"] = MessageToDict(load)
            if links:
                entry["network"] = MessageToDict(request.network)
            return cluster_pb2.HeartbeatReply(
                envelope=self._envelope(reply.job_id or "", reply.model_version or 0, node_id),
                known=True,
                heartbeat_interval_ms=max(1, round(reply.heartbeat_interval * 1000)),
                leaders=self.leaders,
                cancel_task=reply.cancel_task,
            )

        return await guarded(context, call())

    async def Leave(
        self, request: cluster_pb2.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.LeaveReply:
        async def call() -> cluster_pb2.LeaveReply:
            check_envelope(request.envelope, term=self.term)
            node_id = request.envelope.node_id
            requeued = await self.core.call(
                self.coordinator.leave, node_id, term=request.envelope.term, reason=request.reason
            )
            self._node_profiles.pop(node_id, None)
            self.notifier.notify()
            return cluster_pb2.LeaveReply(
                envelope=self._envelope(node_id=node_id), requeued_tasks=requeued
            )

        return await guarded(context, call())

    # -- tasks -------------------------------------------------------------------------------

    async def _job_wire(self, job_id: str) -> _JobWire:
        wire = self._jobs.get(job_id)
        if wire is None:
            record = await self.core.call(self.coordinator.store.job, job_id)
            if record is None:
                raise UnknownJobError(f"no job {job_id!r}")
            # The stored spec holds the model the job really runs (defaults resolved from the
            # dataset at submission), so workers build exactly the leader's model.
            spec = JobSpec.from_mapping(record.spec)
            model = dict(spec.model)
            wire = _JobWire(
                spec,
                json.dumps(model, sort_keys=True),
                json.dumps(dict(spec.hyper), sort_keys=True),
            )
            self._jobs[job_id] = wire
        return wire

    async def _task_message(self, task: Task, job_id: str) -> cluster_pb2.Task:
        wire = await self._job_wire(job_id)
        return cluster_pb2.Task(
            envelope=self._envelope(job_id, task.base_version, task.node_id),
            task_id=task.task_id,
            dataset=wire.spec.dataset,
            indexes=np.asarray(task.indexes, dtype=np.int64).tolist(),
            epochs=wire.spec.local_epochs,
            layer=-1 if task.layer is None else int(task.layer),
            algorithm=wire.spec.algorithm,
            model_json=wire.model_json,
            hyper_json=wire.hyper_json,
            seed=(wire.spec.seed * 1_000_003 + zlib.crc32(task.task_id.encode())) % 2**63,
            target_seconds=wire.spec.task_seconds,
            deadline_seconds=wire.spec.round_deadline,
        )

    async def GetTask(
        self, request: cluster_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.GetTaskReply:
        async def call() -> cluster_pb2.GetTaskReply:
            check_envelope(request.envelope, term=self.term)
            env = request.envelope
            wait_s = min(request.wait_ms, 30_000) / 1000.0
            deadline = time.monotonic() + wait_s
            while True:
                outcome = await self.core.call(
                    self.coordinator.next_task,
                    env.node_id,
                    job_id=env.job_id or None,
                    term=env.term,
                )
                if isinstance(outcome, Task):
                    job_id = await self._task_job()
                    await self._remember(job_id, outcome.base_version)
                    return cluster_pb2.GetTaskReply(
                        task=await self._task_message(outcome, job_id),
                        envelope=self._envelope(job_id, outcome.base_version, env.node_id),
                    )
                assert isinstance(outcome, Wait)
                left = deadline - time.monotonic()
                if outcome.done and env.job_id:
                    return cluster_pb2.GetTaskReply(done=outcome.reason, envelope=self._envelope())
                if left <= 0:
                    return cluster_pb2.GetTaskReply(
                        retry_after_ms=max(1, round(outcome.retry_after * 1000)),
                        envelope=self._envelope(),
                    )
                await self.notifier.wait(min(left, max(outcome.retry_after, 0.01)))

        return await guarded(context, call())

    async def _remember(self, job_id: str, version: int) -> None:
        """Keep the model a task starts from until its worker has pulled it.

        In async mode the global model may move on between handing out a task and the
        worker's PullModel, and the store keeps only a few checkpoints; the aggregator
        replaces (never mutates) its parameter dicts, so holding a reference is enough.
        """
        key = (job_id, version)
        if key in self._models:
            self._models.move_to_end(key)
            return
        snap = await self.core.call(self.coordinator.model, job_id)
        if snap.version != version:
            return
        self._models[key] = snap.params
        self._model_bytes += params_nbytes(snap.params)
        while len(self._models) > 2 and self._model_bytes > _MODEL_CACHE_BYTES:
            _, old = self._models.popitem(last=False)
            self._model_bytes -= params_nbytes(old)

    async def _task_job(self) -> str:
        # A task always belongs to the running job (the coordinator runs one at a time).
        return str((await self.core.call(self.coordinator.job_status))["job_id"])

    async def PushUpdate(
        self,
        request_iterator: AsyncIterator[cluster_pb2.UpdateChunk],
        context: grpc.aio.ServicerContext,
    ) -> cluster_pb2.PushUpdateReply:
        async def call() -> cluster_pb2.PushUpdateReply:
            try:
                return await take()
            except Exception:
                # Read what the client is still sending (bounded) before refusing: a grpc aio
                # client whose write fails after the status arrived reports INTERNAL instead
                # of our status (grpc/grpc#36066), and the worker acts on the status code.
                await drain(request_iterator, self.config.max_update_bytes)
                raise

        async def failed(
            header: cluster_pb2.UpdateHeader, env: common_pb2.Envelope
        ) -> cluster_pb2.PushUpdateReply:
            # A failure report carries no tensors: refuse one that says otherwise.
            if header.num_tensors or header.total_bytes:
                raise InvalidArgumentError("a failure report carries no tensors")
            if await anext(aiter(request_iterator), None) is not None:
                raise ChunkError("a failure report is its header alone")
            ack = await self.core.call(
                self.coordinator.fail_task,
                env.node_id,
                header.task_id,
                " ".join(header.failure.split())[:_MAX_FAILURE_CHARS],
                job_id=env.job_id,
                base_version=env.model_version,
                term=env.term,
            )
            self.notifier.notify()
            return cluster_pb2.PushUpdateReply(
                envelope=self._envelope(env.job_id, ack.version, env.node_id),
                outcome=ack.outcome,
                detail=ack.detail,
            )

        async def take() -> cluster_pb2.PushUpdateReply:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("body") != "header":
                raise ChunkError("an update stream must start with its header")
            header = first.header
            env = header.envelope
            check_envelope(env, term=self.term, job=True)
            if not header.task_id:
                raise InvalidArgumentError("update header: task_id is required")
            seconds = check_finite("stats.seconds", header.stats.seconds)
            overhead = check_finite("stats.overhead_seconds", header.stats.overhead_seconds)
            # Refuse a stranger before reading megabytes from it.
            await self.core.call(self.coordinator.membership.require, env.node_id)
            if header.failure:
                return await failed(header, env)
            if header.total_bytes > self.config.max_update_bytes:
                raise ChunkTooLargeError(
                    f"update declares {header.total_bytes} bytes; at most "
                    f"{self.config.max_update_bytes}"
                )
            reassembler = Reassembler(
                header.num_tensors,
                header.total_bytes,
                max_total_bytes=self.config.max_update_bytes,
                max_chunk_bytes=MAX_CHUNK_BYTES,
            )
            wire_bytes = first.ByteSize()
            async for message in request_iterator:
                if message.WhichOneof("body") != "chunk":
                    raise ChunkError("an update stream holds one header, then chunks only")
                wire_bytes += message.ByteSize()
                reassembler.add(message.chunk)
            try:
                params = reassembler.finish()
            except ChunkError as exc:
                raise UpdateRejectedError(f"update {header.task_id}: {exc}") from exc
            ack = await self.core.call(
                self.coordinator.submit_update,
                env.node_id,
                header.task_id,
                params,
                job_id=env.job_id,
                base_version=env.model_version,
                num_samples=header.num_samples or None,
                seconds=seconds or None,
                overhead=overhead,
                term=env.term,
                wire_bytes=wire_bytes,
            )
            self.notifier.notify()
            return cluster_pb2.PushUpdateReply(
                envelope=self._envelope(env.job_id, ack.version, env.node_id),
                outcome=ack.outcome,
                detail=ack.detail,
            )

        return await guarded(context, call())

    async def PullModel(
        self, request: cluster_pb2.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cluster_pb2.ModelChunk]:
        async def stream() -> AsyncIterator[cluster_pb2.ModelChunk]:
            env = request.envelope
            check_envelope(env, term=self.term, job=True, node=False, check_term=env.term != 0)
            chunk = request.max_chunk_bytes or self.config.chunk_bytes
            if not 1024 <= chunk <= MAX_CHUNK_BYTES:
                raise InvalidArgumentError(f"max_chunk_bytes must be 1024..{MAX_CHUNK_BYTES}")
            kept = None if request.latest else self._models.get((env.job_id, env.model_version))
            if kept is not None:
                version, params = env.model_version, kept
            else:
                want = None if request.latest else env.model_version
                snap = await self.core.call(self.coordinator.model, env.job_id, want)
                version, params = snap.version, snap.params
            yield cluster_pb2.ModelChunk(
                header=cluster_pb2.ModelHeader(
                    envelope=self._envelope(env.job_id, version, env.node_id),
                    num_tensors=len(params),
                    total_bytes=params_nbytes(params),
                )
            )
            for piece in encode_tensors(params, chunk):
                yield cluster_pb2.ModelChunk(chunk=piece)

        async for item in guarded_stream(context, stream):
            yield item

    async def FetchSamples(
        self, request: cluster_pb2.FetchSamplesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cluster_pb2.SampleBatch]:
        async def stream() -> AsyncIterator[cluster_pb2.SampleBatch]:
            env = request.envelope
            check_envelope(env, term=self.term, job=True)
            await self.core.call(self.coordinator.membership.require, env.node_id)
            count = len(request.indexes)
            if count == 0:
                raise InvalidArgumentError("no sample indexes asked for")
            if count > self.config.max_fetch_samples:
                raise InvalidArgumentError(
                    f"{count} samples asked for; at most {self.config.max_fetch_samples} per call"
                )
            wire = await self._job_wire(env.job_id)
            if request.dataset and request.dataset != wire.spec.dataset:
                raise InvalidArgumentError(
                    f"job {env.job_id} trains on {wire.spec.dataset!r}, not {request.dataset!r}"
                )
            idx = np.asarray(request.indexes, dtype=np.int64)
            x, y = await self.core.call(self.coordinator.samples, env.job_id, idx)
            rows = max(1, _SAMPLE_BATCH_BYTES // max(1, x[:1].nbytes))
            for start in range(0, count, rows):
                stop = min(count, start + rows)
                yield cluster_pb2.SampleBatch(
                    envelope=self._envelope(env.job_id, node_id=env.node_id),
                    indexes=request.indexes[start:stop],
                    x=tensor_from_array("x", np.ascontiguousarray(x[start:stop])),
                    y=tensor_from_array("y", np.ascontiguousarray(y[start:stop])),
                )
                await asyncio.sleep(0)

        async for item in guarded_stream(context, stream):
            yield item


async def drain(
    messages: AsyncIterator[cluster_pb2.UpdateChunk], max_bytes: int, max_seconds: float = 5.0
) -> None:
    """Consume the rest of a refused stream, up to ``max_bytes`` or ``max_seconds``."""
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for message in messages:
            seen += message.ByteSize()
            if seen > max_bytes:
                return

    with contextlib.suppress(Exception):
        await asyncio.wait_for(consume(), max_seconds)
