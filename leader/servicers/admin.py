"""``AdminServicer``: the Admin service (the ``eddl`` CLI -> root leader), a translator only:
decode, one :class:`~eddl.leader.service.LeaderService` call, encode its typed answer."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator

import grpc

from eddl.leader.config import LeaderConfig
from eddl.leader.errors import InvalidArgumentError, JobSpecError
from eddl.leader.events import Event, EventKind
from eddl.leader.service import LeaderService
from eddl.leader.servicers.common import guarded, guarded_stream, jsonable
from eddl.leader.views import JobView
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, common_pb2

__all__ = ["AdminServicer"]

_FINAL = {EventKind.JOB_COMPLETED.value, EventKind.JOB_CANCELLED.value, EventKind.JOB_FAILED.value}


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, service: LeaderService, config: LeaderConfig) -> None:
        self.service = service
        self.config = config
        # Leader time (monotonic) -> wall time, for event stamps people can read.
        self._wall_offset = time.time() - time.monotonic()

    def _check_admin(self, token: str) -> None:
        want = self.config.admin_token
        if want and not hmac.compare_digest(token.encode(), want.encode()):
            raise PermissionError("admin token missing or wrong")

    def _envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(job_id=job_id, model_version=version, term=self.service.term)

    def _event(self, event: Event) -> admin_pb2.JobEvent:
        data = dict(event.data)
        version = data.get("version", 0)
        return admin_pb2.JobEvent(
            job_id=event.job_id,
            seq=event.seq,
            at=event.at + self._wall_offset,
            kind=event.kind.value,
            model_version=int(version) if isinstance(version, int) else 0,
            message=event.message,
            data_json=json.dumps(jsonable(data), sort_keys=True),
        )

    async def SubmitJob(
        self, request: admin_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SubmitJobReply:
        async def call() -> admin_pb2.SubmitJobReply:
            self._check_admin(request.admin_token)
            try:
                spec = json.loads(request.spec_json)
            except json.JSONDecodeError as exc:
                raise JobSpecError(f"spec_json is not JSON: {exc}") from exc
            except RecursionError as exc:  # json decodes nested arrays recursively
                raise JobSpecError("spec_json nests values too deeply") from exc
            if not isinstance(spec, dict):
                raise JobSpecError("spec_json must be a JSON object (the [job] table)")
            # Building the job loads its data and model: off the event loop.
            status = await self.service.submit_job(spec)
            return admin_pb2.SubmitJobReply(envelope=self._envelope(status.job_id, status.version))

        return await guarded(context, call())

    async def JobStatus(
        self, request: admin_pb2.JobStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.JobStatusReply:
        async def call() -> admin_pb2.JobStatusReply:
            status = await self.service.job_status(request.job_id or None)
            return status_reply(
                status, self._envelope(status.job_id, status.version), self._wall_offset
            )

        return await guarded(context, call())

    async def WatchJob(
        self, request: admin_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.JobEvent]:
        async def stream() -> AsyncIterator[admin_pb2.JobEvent]:
            job_id = request.job_id or (await self.service.job_status()).job_id
            queue: asyncio.Queue[Event] = asyncio.Queue()
            # Subscribe before reading the history so nothing falls in between; the core
            # hands each event to this loop.
            unsubscribe = await self.service.subscribe(job_id, queue.put_nowait)
            try:
                last = request.after_seq
                for event in await self.service.events(job_id, last):
                    if event.seq > last:
                        last = event.seq
                        yield self._event(event)
                        if event.kind.value in _FINAL:
                            return
                while True:
                    event = await queue.get()
                    if event.seq <= last:
                        continue
                    last = event.seq
                    yield self._event(event)
                    if event.kind.value in _FINAL:
                        return
            finally:
                unsubscribe()

        async for item in guarded_stream(context, stream):
            yield item

    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListNodesReply:
        async def call() -> admin_pb2.ListNodesReply:
            now = time.monotonic()
            nodes = [
                admin_pb2.NodeStatus(
                    node_id=n.node_id,
                    role=n.role,
                    state="alive" if n.alive else f"gone ({n.why_gone})",
                    last_seen_s=max(0.0, now - (n.last_seen or now)),
                    samples_per_second=n.samples_per_second,
                    current_task=n.task,
                    tasks_done=n.tasks_done,
                    samples_trained=n.samples_trained,
                    profile_json=json.dumps(jsonable(n.detail), sort_keys=True),
                )
                for n in await self.service.nodes()
            ]
            return admin_pb2.ListNodesReply(envelope=self._envelope(), nodes=nodes)

        return await guarded(context, call())

    async def CancelJob(
        self, request: admin_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CancelJobReply:
        async def call() -> admin_pb2.CancelJobReply:
            self._check_admin(request.admin_token)
            if not request.job_id:
                raise InvalidArgumentError("job_id is required")
            status = await self.service.cancel_job(request.job_id)
            return admin_pb2.CancelJobReply(
                envelope=self._envelope(request.job_id, status.version), state=status.state
            )

        return await guarded(context, call())


def status_reply(
    status: JobView, envelope: common_pb2.Envelope, wall_offset: float = 0.0
) -> admin_pb2.JobStatusReply:
    """The wire form of a :class:`JobView`; ``wall_offset`` turns leader time into unix time."""
    # The rule in force with its parameters; the rest of the aggregator's state is in detail.
    rule = (
        status.rule
        if isinstance(status.rule, str)
        else json.dumps(jsonable(status.rule), sort_keys=True)
    )
    return admin_pb2.JobStatusReply(
        envelope=envelope,
        state=status.state,
        round=status.version,
        accuracy=-1.0 if status.accuracy is None else status.accuracy,
        policy=status.mode,
        policy_reason=status.mode_reason,
        rule=rule,
        workers=status.workers,
        samples_trained=status.samples_trained,
        detail_json=json.dumps(jsonable(status.detail), sort_keys=True),
        switches=[
            admin_pb2.PolicySwitch(
                at=s.at + wall_offset,
                model_version=s.version,
                previous=s.previous,
                policy=s.mode,
                reason=s.reason,
            )
            for s in status.switches
        ],
    )
