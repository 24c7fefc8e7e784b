"""A sub-leader's link to its own leader: it is a node there, whose tasks its group does.

Upward, a sub-leader speaks the ``Cluster`` protocol as any node does: it joins, long-polls a
task, pulls the task's base version, and answers the task with one update (the
:class:`~eddl.leader.relay.UpwardUpdate` its group's round folded into). So its leader checks
the upward update as any other: the term, the node and session, the base version, the sample
count handed out, a task answered once — and refuses a wrong one before anything changes.

What the leader declares is bounded here before use: a task's indexes go through
:meth:`UpstreamSource.accept <eddl.leader.upstream.UpstreamSource.accept>`, a model stream
through the reassembler's byte limit, samples must answer the indexes asked, and the
sub-leader refuses a task for one layer only (TIFeD
single-layer: a group's round folds whole models) with a failure report (:meth:`Uplink.fail`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eddl.leader.groupsamples import GroupSamplesError
from eddl.leader.relay import UpwardUpdate
from eddl.leader.upstream import UpstreamTask
from eddl.learn.params import Params
from eddl.net import params_nbytes
from eddl.net.tensors import array_from_tensor
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.worker.transfer import receive_model, update_stream

__all__ = ["Uplink", "UpstreamJob"]


@dataclass(frozen=True)
class UpstreamJob:
    """What a group needs besides the indexes to train an upstream task."""

    job_id: str
    dataset: str
    algorithm: str
    model_json: str
    hyper_json: str
    epochs: int
    seed: int
    layer: int = -1  # TIFeD single-layer: the only layer to train (a group cannot: refused)


class Uplink:
    """The calls a sub-leader makes to its own leader over ``stub``."""

    def __init__(
        self,
        stub: cluster_pb2_grpc.ClusterStub,
        node_id: str,
        *,
        chunk_bytes: int = 1 << 20,
        max_model_bytes: int = 256 << 20,
        max_fetch_samples: int = 4096,
        rpc_timeout_s: float = 30.0,
    ) -> None:
        self.stub = stub
        self.node_id = node_id
        self.term = 0
        self.chunk_bytes = chunk_bytes
        self.max_model_bytes = max_model_bytes
        self.max_fetch_samples = max_fetch_samples
        self.lead_address = ""  # the group's address, offered to the leader when joining
        self.lead_worker = False  # the offer is a --can-lead worker's (not a sub-leader daemon's)
        self.rpc_timeout_s = rpc_timeout_s

    def envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(
            job_id=job_id, model_version=version, term=self.term, node_id=self.node_id
        )

    async def join(self, token: str) -> None:
        reply = await self.stub.Join(
            cluster_pb2.JoinRequest(
                envelope=self.envelope(),
                role="worker",
                join_token=token,
                info=cluster_pb2.NodeInfo(
                    lead_address=self.lead_address, lead_worker=self.lead_worker
                ),
            ),
            timeout=self.rpc_timeout_s,
        )
        self.term = reply.envelope.term
        if reply.max_chunk_bytes:
            self.chunk_bytes = min(self.chunk_bytes, reply.max_chunk_bytes)

    async def heartbeat(self) -> bool:
        """One beat; whether the leader still knows this node (else: join again)."""
        reply = await self.stub.Heartbeat(
            cluster_pb2.HeartbeatRequest(envelope=self.envelope()), timeout=self.rpc_timeout_s
        )
        return bool(reply.known)

    async def next_task(self, wait_s: float) -> tuple[UpstreamJob, UpstreamTask] | None:
        """A task from the leader, or ``None`` when it has none now."""
        wait_ms = max(0, min(int(wait_s * 1000), 60_000))
        reply = await self.stub.GetTask(
            cluster_pb2.GetTaskRequest(envelope=self.envelope(), wait_ms=wait_ms),
            timeout=self.rpc_timeout_s + wait_s,
        )
        if reply.WhichOneof("outcome") != "task":
            return None
        task = reply.task
        job = UpstreamJob(
            job_id=task.envelope.job_id,
            dataset=task.dataset,
            algorithm=task.algorithm,
            model_json=task.model_json,
            hyper_json=task.hyper_json,
            epochs=task.epochs,
            seed=task.seed,
            layer=task.layer,
        )
        indexes = np.fromiter(task.indexes, dtype=np.int64, count=len(task.indexes))
        return job, UpstreamTask(task.task_id, task.envelope.model_version, indexes)

    async def fetch_samples(
        self, job_id: str, dataset: str, indexes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indexes`` of the job's dataset from the leader, at most
        ``max_fetch_samples`` per call; each batch must answer the indexes asked, in order."""
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for start in range(0, len(indexes), self.max_fetch_samples):
            part = [int(i) for i in indexes[start : start + self.max_fetch_samples]]
            request = cluster_pb2.FetchSamplesRequest(
                envelope=self.envelope(job_id), dataset=dataset, indexes=part
            )
            got = 0
            async for batch in self.stub.FetchSamples(request, timeout=self.rpc_timeout_s):
                x, y = array_from_tensor(batch.x), array_from_tensor(batch.y)
                n = len(batch.indexes)
                if list(batch.indexes) != part[got : got + n] or len(x) != n or len(y) != n:
                    raise GroupSamplesError("the leader's samples do not answer the indexes asked")
                xs.append(x)
                ys.append(y)
                got += n
            if got != len(part):
                raise GroupSamplesError(f"the leader sent {got} of {len(part)} samples")
        if not xs:
            raise GroupSamplesError("no samples asked for")
        return np.concatenate(xs), np.concatenate(ys)

    async def pull(self, job_id: str, version: int) -> tuple[int, Params]:
        """Model ``version`` of ``job_id`` (the base of a task, or a newer global one)."""
        request = cluster_pb2.PullModelRequest(
            envelope=self.envelope(job_id, version), max_chunk_bytes=self.chunk_bytes
        )
        return await receive_model(
            self.stub.PullModel(request, timeout=self.rpc_timeout_s), self.max_model_bytes
        )

    async def fail(self, job: UpstreamJob, task: UpstreamTask, reason: str) -> str:
        """Tell the leader this sub-leader cannot run ``task`` (it re-queues the samples)."""
        header = cluster_pb2.UpdateHeader(
            envelope=self.envelope(job.job_id, task.base_version),
            task_id=task.task_id,
            num_samples=task.num_samples,
            layer=job.layer,
            failure=" ".join(reason.split())[:500],
        )
        reply: cluster_pb2.PushUpdateReply = await self.stub.PushUpdate(
            update_stream(header, {}, self.chunk_bytes), timeout=self.rpc_timeout_s
        )
        return str(reply.outcome)

    async def push(
        self,
        job_id: str,
        update: UpwardUpdate,
        *,
        seconds: float,
        wall: float = 0.0,
        workers: int = 0,
    ) -> cluster_pb2.PushUpdateReply:
        """Answer upstream task ``update.task_id`` with the group's folded update, trained by
        ``workers`` members (the root counts this push as that many workers) in ``seconds``
        of compute, the round taking ``wall``: reported as a device reports a task, the compute
        apart from the fixed cost (``wall - seconds``: model and updates moved, the wait for the
        slowest member), or the root would size the group's tasks as if the fixed cost were
        slow training and shrink them to the minimum. ``seconds`` 0: all of ``wall``."""
        header = cluster_pb2.UpdateHeader(
            envelope=self.envelope(job_id, update.base_version),
            task_id=update.task_id,
            num_samples=update.num_samples,
            num_tensors=len(update.params),
            total_bytes=params_nbytes(update.params),
            stats=cluster_pb2.TaskStats(
                samples=update.num_samples,
                seconds=max(0.0, seconds or wall),
                overhead_seconds=max(0.0, wall - seconds) if seconds else 0.0,
                workers=max(0, workers),
            ),
            layer=-1,
        )
        reply: cluster_pb2.PushUpdateReply = await self.stub.PushUpdate(
            update_stream(header, update.params, self.chunk_bytes), timeout=self.rpc_timeout_s
        )
        return reply
