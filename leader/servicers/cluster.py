"""``ClusterServicer``: the Cluster service (workers -> leader), a translator only.

Each handler checks the envelope (node id, job id, term), decodes the request (tensors through
``eddl.net``), makes one :class:`~eddl.leader.service.LeaderService` call and encodes its typed
answer; typed errors become status codes in ``guarded``. A refused call changes nothing: the
checks run before the service is called, and the core validates before it changes state.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from eddl.leader.capability import McuCapabilities
from eddl.leader.config import LeaderConfig
from eddl.leader.errors import InvalidArgumentError, LeaderError
from eddl.leader.membership import NodeProfile
from eddl.leader.service import LeaderService
from eddl.leader.servicers.common import (
    check_envelope,
    check_finite,
    guarded,
    guarded_stream,
    optional_task_id,
    sample_batches,
)
from eddl.leader.servicers.upload import draining, read_body, read_failure, read_head
from eddl.leader.views import TaskOut
from eddl.net import params_nbytes
from eddl.net.chunks import MAX_CHUNK_BYTES, MAX_INLINE_MODEL_BYTES, EncodedModels
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


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, service: LeaderService, config: LeaderConfig) -> None:
        self.service = service
        self.config = config
        self.leaders: list[str] = list(config.leaders)
        self.max_update = config.max_update_bytes
        self._encoded = EncodedModels()  # the wire form of the versions pulled last

    @property
    def term(self) -> int:
        return self.service.term

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
            info, wire_profile = request.info, request.profile
            sps = check_finite(
                "info.benchmark_samples_per_second", info.benchmark_samples_per_second
            )
            node_id = request.envelope.node_id
            reply = await self.service.join(
                node_id,
                request.join_token,
                role=request.role or "worker",
                profile=NodeProfile(
                    benchmark_sps=sps or None,
                    static=MessageToDict(wire_profile.static) if wire_profile.static else None,
                ),
                reports={"info": MessageToDict(info), "profile": MessageToDict(wire_profile)},
                address=context.peer(),
                term=request.envelope.term or None,
                # A microcontroller's gateway says what the device can run; membership
                # refuses role "mcu" without it and any other role with it.
                mcu=McuCapabilities.from_proto(wire_profile.mcu)
                if wire_profile.HasField("mcu")
                else None,
            )
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
            for name in ("cpu_percent", "samples_per_second"):
                check_finite(f"load.{name}", getattr(request.load, name))
            links = [link_from_proto(link) for link in request.network.links]  # validates
            reply = await self.service.heartbeat(
                node_id,
                term=request.envelope.term,
                load=MessageToDict(request.load),
                dynamic=MessageToDict(request.dynamic) if request.HasField("dynamic") else None,
                network=MessageToDict(request.network) if links else None,
                bandwidth_bps=_bandwidth_bps(links),
            )
            if reply is None:
                # The explicit answer to a forgotten node: join again, no timeout needed.
                return cluster_pb2.HeartbeatReply(
                    envelope=self._envelope(node_id=node_id), known=False
                )
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
            env = request.envelope
            requeued = await self.service.leave(env.node_id, term=env.term, reason=request.reason)
            return cluster_pb2.LeaveReply(
                envelope=self._envelope(node_id=env.node_id), requeued_tasks=requeued
            )

        return await guarded(context, call())

    # -- tasks -------------------------------------------------------------------------------

    def _task_message(self, task: TaskOut) -> cluster_pb2.Task:
        return cluster_pb2.Task(
            envelope=self._envelope(task.job_id, task.base_version, task.node_id),
            task_id=task.task_id,
            dataset=task.dataset,
            indexes=task.indexes.tolist(),
            epochs=task.local_epochs,
            layer=-1 if task.layer is None else int(task.layer),
            algorithm=task.algorithm,
            model_json=task.model_json,
            hyper_json=task.hyper_json,
            seed=task.seed,
            target_seconds=task.target_seconds,
            deadline_seconds=task.deadline_seconds,
        )

    async def GetTask(
        self, request: cluster_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.GetTaskReply:
        async def call() -> cluster_pb2.GetTaskReply:
            check_envelope(request.envelope, term=self.term)
            env = request.envelope
            started = time.monotonic()
            outcome = await self.service.next_task(
                env.node_id,
                job_id=env.job_id or None,
                term=env.term,
                wait_s=min(request.wait_ms, 30_000) / 1000.0,
                after_task=optional_task_id("after_task_id", request.after_task_id),
            )
            if isinstance(outcome, TaskOut):
                reply = cluster_pb2.GetTaskReply(
                    task=self._task_message(outcome),
                    envelope=self._envelope(outcome.job_id, outcome.base_version, env.node_id),
                    held_ms=min(2**32 - 1, int((time.monotonic() - started) * 1000)),
                )
                await self._inline_model(reply, request, outcome)
                return reply
            if outcome.done and env.job_id:
                return cluster_pb2.GetTaskReply(done=outcome.reason, envelope=self._envelope())
            return cluster_pb2.GetTaskReply(
                retry_after_ms=max(1, round(outcome.retry_after * 1000)),
                envelope=self._envelope(),
            )

        return await guarded(context, call())

    async def _inline_model(
        self, reply: cluster_pb2.GetTaskReply, request: cluster_pb2.GetTaskRequest, task: TaskOut
    ) -> None:
        """Put the task's base version into ``reply`` when the node takes a model that large
        inline and does not hold that version: its PullModel is then skipped."""
        limit = min(request.inline_model_bytes, MAX_INLINE_MODEL_BYTES)
        held = (request.held_job_id, request.held_version) == (task.job_id, task.base_version)
        if limit <= 0 or held:
            return
        try:
            snap = await self.service.model(task.job_id, task.base_version)
        except LeaderError:
            return  # the task stands; the node's PullModel hears why
        total = params_nbytes(snap.params)
        if total > limit:
            return
        reply.model_header.CopyFrom(
            cluster_pb2.ModelHeader(
                envelope=self._envelope(task.job_id, snap.version, task.node_id),
                num_tensors=len(snap.params),
                total_bytes=total,
            )
        )
        chunks = self._encoded.chunks(task.job_id, snap.version, snap.params, MAX_CHUNK_BYTES)
        reply.model_chunks.extend(chunks)

    async def PushUpdate(
        self,
        request_iterator: AsyncIterator[cluster_pb2.UpdateChunk],
        context: grpc.aio.ServicerContext,
    ) -> cluster_pb2.PushUpdateReply:
        async def call() -> cluster_pb2.PushUpdateReply:
            head = await read_head(request_iterator, term=self.term)
            env = head.env
            # Refuse a stranger before reading megabytes from it.
            await self.service.require_member(env.node_id)
            if head.header.failure:
                reason = await read_failure(request_iterator, head)
                ack = await self.service.fail_task(
                    env.node_id,
                    head.header.task_id,
                    reason,
                    job_id=env.job_id,
                    base_version=env.model_version,
                    term=env.term,
                )
            else:
                body = await read_body(request_iterator, head, self.max_update)
                ack = await self.service.submit_update(
                    env.node_id,
                    head.header.task_id,
                    body.params,
                    job_id=env.job_id,
                    base_version=env.model_version,
                    num_samples=head.header.num_samples or None,
                    seconds=head.seconds or None,
                    overhead=head.overhead,
                    term=env.term,
                    wire_bytes=body.wire_bytes,
                    sparse=body.sparse,
                    folds=head.folds,
                )
            return cluster_pb2.PushUpdateReply(
                envelope=self._envelope(env.job_id, ack.version, env.node_id),
                outcome=ack.outcome,
                detail=ack.detail,
            )

        return await guarded(context, draining(request_iterator, self.max_update, call()))

    async def PullModel(
        self, request: cluster_pb2.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cluster_pb2.ModelChunk]:
        async def stream() -> AsyncIterator[cluster_pb2.ModelChunk]:
            env = request.envelope
            check_envelope(env, term=self.term, job=True, node=False, check_term=env.term != 0)
            chunk = request.max_chunk_bytes or self.config.chunk_bytes
            if not 1024 <= chunk <= MAX_CHUNK_BYTES:
                raise InvalidArgumentError(f"max_chunk_bytes must be 1024..{MAX_CHUNK_BYTES}")
            snap = await self.service.model(
                env.job_id, None if request.latest else env.model_version
            )
            yield cluster_pb2.ModelChunk(
                header=cluster_pb2.ModelHeader(
                    envelope=self._envelope(env.job_id, snap.version, env.node_id),
                    num_tensors=len(snap.params),
                    total_bytes=params_nbytes(snap.params),
                )
            )
            for piece in self._encoded.chunks(env.job_id, snap.version, snap.params, chunk):
                yield cluster_pb2.ModelChunk(chunk=piece)

        async for item in guarded_stream(context, stream):
            yield item

    async def FetchSamples(
        self, request: cluster_pb2.FetchSamplesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cluster_pb2.SampleBatch]:
        async def stream() -> AsyncIterator[cluster_pb2.SampleBatch]:
            env = request.envelope
            check_envelope(env, term=self.term, job=True)
            await self.service.require_member(env.node_id)
            count = len(request.indexes)
            if count == 0:
                raise InvalidArgumentError("no sample indexes asked for")
            if count > self.config.max_fetch_samples:
                raise InvalidArgumentError(
                    f"{count} samples asked for; at most {self.config.max_fetch_samples} per call"
                )
            idx = np.asarray(request.indexes, dtype=np.int64)
            x, y = await self.service.samples(env.node_id, env.job_id, request.dataset, idx)
            envelope = self._envelope(env.job_id, node_id=env.node_id)
            async for batch in sample_batches(request.indexes, x, y, envelope):
                yield batch

        async for item in guarded_stream(context, stream):
            yield item
