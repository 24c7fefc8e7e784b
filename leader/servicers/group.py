"""``GroupServicer``: the ``Cluster`` service of a sub-leader, for the workers of its group.

It translates only: the envelope and every number a member declares are checked here, then
one :class:`~eddl.leader.subleader.SubLeader` call decides. ``FetchSamples`` is served from
the group's samples (:mod:`eddl.leader.groupsamples`: fetched upward once, then kept); a
failure upstream is ``ABORTED``, so the member's task fails and its range is re-queued. Every
reply lists the sub-leader first and its
own leader after it, so a member whose sub-leader dies goes back to that leader.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np

from eddl.leader.errors import InvalidArgumentError
from eddl.leader.groupsamples import GroupSamplesError
from eddl.leader.servicers.common import (
    check_envelope,
    check_finite,
    guarded,
    guarded_stream,
    optional_task_id,
    sample_batches,
)
from eddl.leader.servicers.updatewire import read_update_body
from eddl.leader.servicers.upload import drain
from eddl.leader.subleader import GroupTask, SubLeader
from eddl.net import ChunkError, ChunkTooLargeError, encode_tensors, params_nbytes
from eddl.net.chunks import MAX_CHUNK_BYTES
from eddl.net.redirect import not_leader_metadata
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2

__all__ = ["GroupServicer"]


class GroupServicer(cluster_pb2_grpc.ClusterServicer):
    def __init__(
        self,
        sub: SubLeader,
        leaders: list[str],
        *,
        chunk_bytes: int = 1 << 20,
        max_update_bytes: int = 64 << 20,
    ) -> None:
        self.sub = sub
        self.leaders = leaders  # this sub-leader's address first, then its own leader's
        self.chunk_bytes = chunk_bytes
        self.max_update_bytes = max_update_bytes

    def _envelope(
        self, job_id: str = "", version: int = 0, node_id: str = ""
    ) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=job_id, model_version=version, term=self.sub.term, node_id=node_id
        )

    async def _home(self, context: grpc.aio.ServicerContext) -> None:
        """While the group's own leader sends its members home: the ``not-leader`` redirect."""
        if self.sub.home:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this group is merged back; go to {self.sub.home}",
                trailing_metadata=not_leader_metadata(self.sub.home),
            )

    async def Join(
        self, request: cluster_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.JoinReply:
        async def call() -> cluster_pb2.JoinReply:
            check_envelope(request.envelope, term=self.sub.term, check_term=False)
            if request.join_token != self.sub.settings.join_token:
                raise PermissionError("join token refused")
            node_id = request.envelope.node_id
            self.sub.join(node_id)
            return cluster_pb2.JoinReply(
                envelope=self._envelope(node_id=node_id),
                heartbeat_interval_ms=max(1, round(self.sub.settings.heartbeat_s * 1000)),
                heartbeat_jitter=0.1,
                leaders=self.leaders,
                leader_id=self.sub.settings.node_id,
                max_chunk_bytes=self.chunk_bytes,
            )

        return await guarded(context, call())

    async def Heartbeat(
        self, request: cluster_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.HeartbeatReply:
        async def call() -> cluster_pb2.HeartbeatReply:
            check_envelope(request.envelope, term=self.sub.term)
            await self._home(context)
            node_id = request.envelope.node_id
            known = self.sub.beat(node_id)
            return cluster_pb2.HeartbeatReply(
                envelope=self._envelope(node_id=node_id),
                known=known,
                heartbeat_interval_ms=max(1, round(self.sub.settings.heartbeat_s * 1000)),
                leaders=self.leaders,
            )

        return await guarded(context, call())

    async def Leave(
        self, request: cluster_pb2.LeaveRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.LeaveReply:
        async def call() -> cluster_pb2.LeaveReply:
            check_envelope(request.envelope, term=self.sub.term)
            self.sub.leave(request.envelope.node_id)
            return cluster_pb2.LeaveReply(envelope=self._envelope())

        return await guarded(context, call())

    def _task(self, task: GroupTask) -> cluster_pb2.Task:
        job = task.job
        return cluster_pb2.Task(
            envelope=self._envelope(job.job_id, task.base_version, task.node_id),
            task_id=task.task_id,
            dataset=job.dataset,
            indexes=list(task.indexes),
            epochs=job.epochs,
            layer=-1,
            algorithm=job.algorithm,
            model_json=job.model_json,
            hyper_json=job.hyper_json,
            seed=job.seed,
        )

    async def GetTask(
        self, request: cluster_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> cluster_pb2.GetTaskReply:
        async def call() -> cluster_pb2.GetTaskReply:
            check_envelope(request.envelope, term=self.sub.term)
            await self._home(context)
            node_id = request.envelope.node_id
            self.sub.require(node_id)
            task = await self.sub.next_task(
                node_id,
                min(request.wait_ms, 30_000) / 1000.0,
                optional_task_id("after_task_id", request.after_task_id),
            )
            if task is None:
                return cluster_pb2.GetTaskReply(retry_after_ms=200, envelope=self._envelope())
            return cluster_pb2.GetTaskReply(
                task=self._task(task),
                envelope=self._envelope(task.job.job_id, task.base_version, node_id),
            )

        return await guarded(context, call())

    async def PullModel(
        self, request: cluster_pb2.PullModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cluster_pb2.ModelChunk]:
        async def stream() -> AsyncIterator[cluster_pb2.ModelChunk]:
            env = request.envelope
            check_envelope(env, term=self.sub.term, job=True)
            self.sub.require(env.node_id)
            chunk = request.max_chunk_bytes or self.chunk_bytes
            if not 1024 <= chunk <= MAX_CHUNK_BYTES:
                raise InvalidArgumentError(f"max_chunk_bytes must be 1024..{MAX_CHUNK_BYTES}")
            version, params = self.sub.model(env.model_version)
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
            check_envelope(env, term=self.sub.term, job=True)
            idx = self.sub.check_fetch(env.node_id, env.job_id, request.indexes)
            try:
                x, y = await self.sub.samples.get(env.job_id, request.dataset, idx)
            except (GroupSamplesError, grpc.aio.AioRpcError) as exc:
                why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                await context.abort(
                    grpc.StatusCode.ABORTED, f"samples unavailable upstream: {str(why)[:200]}"
                )
            envelope = self._envelope(env.job_id, node_id=env.node_id)
            async for batch in sample_batches(request.indexes, x, y, envelope):
                yield batch

        async for item in guarded_stream(context, stream):
            yield item

    async def PushUpdate(
        self,
        request_iterator: AsyncIterator[cluster_pb2.UpdateChunk],
        context: grpc.aio.ServicerContext,
    ) -> cluster_pb2.PushUpdateReply:
        async def take() -> cluster_pb2.PushUpdateReply:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("body") != "header":
                raise ChunkError("an update stream must start with its header")
            header = first.header
            env = header.envelope
            check_envelope(env, term=self.sub.term, job=True)
            train = check_finite("stats.seconds", header.stats.seconds)
            self.sub.require(env.node_id)
            if header.failure:
                self.sub.fail(env.node_id, header.task_id, " ".join(header.failure.split())[:200])
                return cluster_pb2.PushUpdateReply(
                    envelope=self._envelope(env.job_id, env.model_version, env.node_id),
                    outcome="requeued",
                )
            if header.total_bytes > self.max_update_bytes:
                raise ChunkTooLargeError(
                    f"update declares {header.total_bytes} bytes; at most {self.max_update_bytes}"
                )
            body = await read_update_body(
                header, first.ByteSize(), request_iterator, self.max_update_bytes
            )
            if body.sparse is not None:
                raise InvalidArgumentError("a group folds dense updates only")
            if not all(np.isfinite(v).all() for v in body.params.values()):
                raise InvalidArgumentError("an update holds NaN or Inf")
            version = self.sub.submit(
                env.node_id,
                header.task_id,
                body.params,
                int(header.num_samples),
                env.model_version,
                max(0.0, train),
            )
            return cluster_pb2.PushUpdateReply(
                envelope=self._envelope(env.job_id, version, env.node_id), outcome="round"
            )

        async def call() -> cluster_pb2.PushUpdateReply:
            try:
                return await take()
            except Exception:
                await drain(request_iterator, self.max_update_bytes)
                raise

        return await guarded(context, call())
