"""Tensor transfers of the worker: an update as a client stream, the model from a server stream.

:class:`Transfers` makes them for one node: it pulls a task's model (or keeps the one a
``GetTask`` reply carries inline), holds the last one, pushes updates and failure reports,
fetches samples, and times each transfer for the leader's task sizing and the link estimates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Literal

import numpy as np

from eddl.learn.params import Params
from eddl.log import get_logger
from eddl.net import ChunkError, Reassembler, array_from_tensor, encode_tensors, params_nbytes
from eddl.net.sparse import encode_sparse, wire_bytes
from eddl.profiler import LinkTracker
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.worker.data import SampleSourceError
from eddl.worker.executor import TaskResult, TaskSpec
from eddl.worker.session import LeaderSession

__all__ = ["Transfers", "inline_model", "receive_model", "sparse_records", "update_stream"]

log = get_logger("worker")


async def update_stream(
    header: cluster_pb2.UpdateHeader,
    params: Params,
    chunk_bytes: int,
    records: Sequence[common_pb2.SparseTensor] | None = None,
) -> AsyncIterator[cluster_pb2.UpdateChunk]:
    """The header, then the dense tensors in chunks, or (TinyMetaFed) the sparse records."""
    yield cluster_pb2.UpdateChunk(header=header)
    if records is not None:
        for record in records:
            yield cluster_pb2.UpdateChunk(sparse=record)
        return
    for chunk in encode_tensors(params, chunk_bytes):
        yield cluster_pb2.UpdateChunk(chunk=chunk)


def sparse_records(result: TaskResult) -> list[common_pb2.SparseTensor] | None:
    """A TinyMetaFed result's upload as sparse records (None: a dense update)."""
    if result.records is not None:
        return list(result.records)
    if result.sparse is None:
        return None
    return [
        encode_sparse(name, s.shape, s.indices, s.values, value_dtype=result.value_dtype)
        for name, s in result.sparse.items()
    ]


def _reassembler(header: cluster_pb2.ModelHeader, max_bytes: int) -> Reassembler:
    return Reassembler(header.num_tensors, header.total_bytes, max_total_bytes=max_bytes)


def inline_model(reply: cluster_pb2.GetTaskReply, max_bytes: int) -> tuple[int, Params] | None:
    """The model version a ``GetTask`` reply carries inline, as (version, params); None when
    it carries none; a malformed one is refused like a malformed ``PullModel`` stream."""
    if not reply.HasField("model_header"):
        return None
    reassembler = _reassembler(reply.model_header, max_bytes)
    for chunk in reply.model_chunks:
        reassembler.add(chunk)
    return reply.model_header.envelope.model_version, reassembler.finish()


async def receive_model(
    stream: AsyncIterator[cluster_pb2.ModelChunk], max_bytes: int
) -> tuple[int, Params]:
    """Reassemble a ``PullModel`` stream into (version, params); refuse a malformed stream."""
    reassembler: Reassembler | None = None
    version = 0
    async for message in stream:
        kind = message.WhichOneof("body")
        if kind == "header":
            if reassembler is not None:
                raise ChunkError("model stream holds two headers")
            header = message.header
            version = header.envelope.model_version
            reassembler = _reassembler(header, max_bytes)
        elif kind == "chunk":
            if reassembler is None:
                raise ChunkError("model stream: chunk before the header")
            reassembler.add(message.chunk)
        else:
            raise ChunkError("model stream: empty message")
    if reassembler is None:
        raise ChunkError("model stream ended without a header")
    return version, reassembler.finish()


class Transfers:
    """One node's transfers through its ``session``. ``pull_s`` (the last task's model pull,
    0 when held) and ``push_s`` (the last update push) are the fixed cost per task the leader
    sizes tasks around; ``links`` holds the passive link estimates they give."""

    def __init__(self, session: LeaderSession) -> None:
        self.session = session
        self.config = session.config
        self.links = LinkTracker()
        self.model: tuple[str, int, Params] | None = None  # (job, version, params) held
        self.pull_s = 0.0
        self.push_s = 0.0
        self.pushed_to = ""  # the leader that answered the last push (for its log line)

    def keep_inline(
        self, task: TaskSpec, reply: cluster_pb2.GetTaskReply, call_s: float = 0.0
    ) -> None:
        """Keep the model the reply carries for ``task``; a bad one is left to PullModel.

        ``call_s``: the GetTask call's seconds. Less the time the leader says it held the call
        (``held_ms``), it times the model's download for the passive link estimate; a held
        time the call cannot contain is not believed, and nothing is estimated."""
        try:
            got = inline_model(reply, self.config.max_model_bytes)
        except ChunkError as exc:
            log.warning("inline model refused", task=task.task_id, error=str(exc))
            return
        if got is not None and got[0] == task.version:
            self.model = (task.job_id, got[0], got[1])
            self._observe("download", reply.ByteSize(), call_s - reply.held_ms / 1000.0)

    async def pull_model(self, job_id: str, version: int) -> Params:
        """The model ``version`` of ``job_id``: the one held, else pulled from the leader."""
        self.pull_s = 0.0
        cached = self.model
        if cached is not None and cached[0] == job_id and cached[1] == version:
            return cached[2]

        async def pull(stub: cluster_pb2_grpc.ClusterStub) -> tuple[int, Params]:
            request = cluster_pb2.PullModelRequest(
                envelope=self.session.envelope(job_id, version),
                max_chunk_bytes=self.config.chunk_bytes,
            )
            return await receive_model(
                stub.PullModel(request, timeout=self.config.rpc_timeout_s),
                self.config.max_model_bytes,
            )

        started = time.monotonic()
        got_version, params = await self.session.call(pull)
        self.pull_s = time.monotonic() - started
        self._observe("download", params_nbytes(params), self.pull_s)
        self.model = (job_id, got_version, params)
        return params

    def _observe(
        self, direction: Literal["upload", "download"], nbytes: int, seconds: float
    ) -> None:
        if seconds > 0 and nbytes > 0:
            address = self.session.link.address
            self.links.observe_transfer(address, direction, nbytes, seconds, time.time())

    async def push(self, task: TaskSpec, result: TaskResult) -> cluster_pb2.PushUpdateReply:
        """Push ``task``'s update; the leader's reply says whether it was taken."""
        params = result.params
        records = sparse_records(result)
        # The reported seconds include the throttle's idle time: the leader schedules on the
        # wall time it observes, which is what makes a throttled worker look slow. Transfers
        # (this task's pull, the previous push, a device's model in and update out) are the
        # task's fixed cost, reported apart.
        overhead = result.overhead_seconds + self.pull_s + self.push_s
        header = cluster_pb2.UpdateHeader(
            task_id=task.task_id,
            num_samples=task.num_samples,
            num_tensors=len(records) if records is not None else len(params),
            total_bytes=(wire_bytes(records) if records is not None else params_nbytes(params)),
            stats=cluster_pb2.TaskStats(
                samples=result.samples,
                steps=result.steps,
                seconds=max(0.0, result.busy_seconds - result.overhead_seconds),
                state_bytes=result.state_bytes,
                overhead_seconds=overhead,
            ),
            layer=task.layer,
        )
        job_id, version = task.job_id, task.version
        chunk_bytes = self.config.chunk_bytes

        async def push(stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.PushUpdateReply:
            header.envelope.CopyFrom(self.session.envelope(job_id, version))
            self.pushed_to = self.session.link.address  # the leader behind ``stub``
            reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(
                update_stream(header, params, chunk_bytes, records),
                timeout=self.config.rpc_timeout_s,
            )
            return reply

        started = time.monotonic()
        reply = await self.session.call(push)
        self.push_s = time.monotonic() - started
        self._observe("upload", int(header.total_bytes), self.push_s)
        return reply

    async def report_failure(self, task: TaskSpec, reason: str) -> cluster_pb2.PushUpdateReply:
        """Tell the leader that ``task`` failed (an update with no tensors and a ``failure``)."""
        header = cluster_pb2.UpdateHeader(
            task_id=task.task_id,
            num_samples=task.num_samples,
            layer=task.layer,
            failure=reason,
        )
        job_id, version = task.job_id, task.version

        async def report(stub: cluster_pb2_grpc.ClusterStub) -> cluster_pb2.PushUpdateReply:
            header.envelope.CopyFrom(self.session.envelope(job_id, version))
            reply: cluster_pb2.PushUpdateReply = await stub.PushUpdate(
                update_stream(header, {}, self.config.chunk_bytes),
                timeout=self.config.rpc_timeout_s,
            )
            return reply

        return await self.session.call(report)

    async def fetch_samples(
        self, job_id: str, dataset: str, indexes: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The samples ``indexes`` of ``dataset`` from the leader (a worker that lacks it)."""

        async def fetch(stub: cluster_pb2_grpc.ClusterStub) -> tuple[np.ndarray, np.ndarray]:
            request = cluster_pb2.FetchSamplesRequest(
                envelope=self.session.envelope(job_id), dataset=dataset, indexes=list(indexes)
            )
            xs: list[np.ndarray] = []
            ys: list[np.ndarray] = []
            async for batch in stub.FetchSamples(request, timeout=self.config.rpc_timeout_s):
                xs.append(array_from_tensor(batch.x))
                ys.append(array_from_tensor(batch.y))
            if not xs:
                raise SampleSourceError(f"{dataset}: the leader sent no samples")
            return np.concatenate(xs), np.concatenate(ys)

        return await self.session.call(fetch)
