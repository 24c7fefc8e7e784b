"""``AdminServicer``: the Admin service (the ``eddl`` CLI -> root leader)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from eddl.leader.actor import LeaderCore
from eddl.leader.config import LeaderConfig
from eddl.leader.errors import InvalidArgumentError, JobSpecError
from eddl.leader.events import Event, EventKind
from eddl.leader.servicers.cluster import ClusterServicer
from eddl.leader.servicers.common import guarded, guarded_stream, jsonable
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc, common_pb2

__all__ = ["AdminServicer"]

_FINAL = {EventKind.JOB_COMPLETED.value, EventKind.JOB_CANCELLED.value, EventKind.JOB_FAILED.value}


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, core: LeaderCore, config: LeaderConfig, cluster: ClusterServicer) -> None:
        self.core = core
        self.coordinator = core.coordinator
        self.config = config
        self.cluster = cluster
        # Leader time (monotonic) -> wall time, for event stamps people can read.
        self._wall_offset = time.time() - time.monotonic()

    def _check_admin(self, token: str) -> None:
        want = self.config.admin_token
        if want and not hmac.compare_digest(token.encode(), want.encode()):
            raise PermissionError("admin token missing or wrong")

    def _envelope(self, job_id: str = "", version: int = 0) -> common_pb2.Envelope:
        return common_pb2.Envelope(job_id=job_id, model_version=version, term=self.coordinator.term)

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
            status = await self.core.submit_job(spec)
            self.cluster.notifier.notify()
            return admin_pb2.SubmitJobReply(
                envelope=self._envelope(str(status["job_id"]), int(status.get("version", 0)))
            )

        return await guarded(context, call())

    async def JobStatus(
        self, request: admin_pb2.JobStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.JobStatusReply:
        async def call() -> admin_pb2.JobStatusReply:
            status = await self.core.call(self.coordinator.job_status, request.job_id or None)
            return status_reply(
                status,
                self._envelope(str(status["job_id"]), int(status.get("version", 0))),
                self._wall_offset,
            )

        return await guarded(context, call())

    async def WatchJob(
        self, request: admin_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[admin_pb2.JobEvent]:
        async def stream() -> AsyncIterator[admin_pb2.JobEvent]:
            job_id = request.job_id or str(
                (await self.core.call(self.coordinator.job_status))["job_id"]
            )
            queue: asyncio.Queue[Event] = asyncio.Queue()
            # Subscribe before reading the history so nothing falls in between; the core
            # hands each event to this loop.
            unsubscribe = await self.core.subscribe(job_id, queue.put_nowait)
            try:
                last = request.after_seq
                for event in await self.core.call(self.coordinator.events, job_id, last):
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
            nodes = []
            for row in await self.core.call(self.coordinator.list_nodes):
                node_id = str(row["node_id"])
                sps = row.get("samples_per_second")
                nodes.append(
                    admin_pb2.NodeStatus(
                        node_id=node_id,
                        role=str(row.get("role", "")),
                        state="alive" if row.get("alive") else f"gone ({_why_gone(row)})",
                        last_seen_s=max(0.0, now - float(row.get("last_seen", now))),
                        samples_per_second=float(sps) if sps else 0.0,
                        current_task=str(row.get("task") or ""),
                        tasks_done=int(row.get("tasks_done") or 0),
                        samples_trained=int(row.get("samples_trained") or 0),
                        profile_json=json.dumps(
                            jsonable({**self.cluster.profiles.get(node_id, {}), "node": row}),
                            sort_keys=True,
                        ),
                    )
                )
            return admin_pb2.ListNodesReply(envelope=self._envelope(), nodes=nodes)

        return await guarded(context, call())

    async def CancelJob(
        self, request: admin_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CancelJobReply:
        async def call() -> admin_pb2.CancelJobReply:
            self._check_admin(request.admin_token)
            if not request.job_id:
                raise InvalidArgumentError("job_id is required")
            status = await self.core.call(self.coordinator.cancel_job, request.job_id)
            self.cluster.notifier.notify()
            return admin_pb2.CancelJobReply(
                envelope=self._envelope(request.job_id, int(status.get("version", 0))),
                state=str(status.get("status", "")),
            )

        return await guarded(context, call())


def _why_gone(row: dict[str, Any]) -> str:
    # A node's own word when it left (a gateway: "device lost: ..."), else how it went.
    return str(row.get("leave_reason") or row.get("gone_reason") or "")


def status_reply(
    status: dict[str, Any], envelope: common_pb2.Envelope, wall_offset: float = 0.0
) -> admin_pb2.JobStatusReply:
    """The wire form of :meth:`Coordinator.job_status`; ``wall_offset`` turns leader time
    into unix time."""
    accuracy = status.get("accuracy")
    aggregation = status.get("aggregation") or {}
    # The rule in force with its parameters; the rest of the aggregator's state is in detail.
    rule: Any = aggregation.get("rule", "") if isinstance(aggregation, dict) else aggregation
    if not isinstance(rule, str):
        rule = json.dumps(jsonable(rule), sort_keys=True)
    return admin_pb2.JobStatusReply(
        envelope=envelope,
        state=str(status.get("status", "")),
        round=int(status.get("version", 0)),
        accuracy=-1.0 if accuracy is None else float(accuracy),
        policy=str(status.get("mode") or ""),
        policy_reason=str(status.get("mode_reason") or ""),
        rule=str(rule),
        workers=int(status.get("workers") or 0),
        samples_trained=int(status.get("samples_trained") or 0),
        detail_json=json.dumps(jsonable(status), sort_keys=True),
        switches=[
            admin_pb2.PolicySwitch(
                at=float(s["at"]) + wall_offset,
                model_version=int(s["version"]),
                previous=str(s["previous"]),
                policy=str(s["mode"]),
                reason=str(s["reason"]),
            )
            for s in status.get("switches") or []
        ],
    )
