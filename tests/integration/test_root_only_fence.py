"""``RootOnly`` fences replies, not only requests: an elected root (real etcd) whose lease runs
out while it serves a call withholds the reply and answers ``not-leader`` (real gRPC). An old
root that was still serving an update when it was cut off must not acknowledge it after its
lease could have expired."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from eddl.leader.election import ElectionConfig, EtcdLeadership
from eddl.leader.etcd import EtcdClient
from eddl.leader.servicers.root_only import RootOnly
from eddl.net import open_channel
from eddl.net.redirect import not_leader
from eddl.net.server import start_server
from eddl.proto.v1 import admin_pb2, admin_pb2_grpc
from tests.etcd_procs import EtcdMember
from tests.integration.cluster_support import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
TTL_S, MARGIN_S = 3, 1.0


class SteppedClock:
    """The monotonic clock the election reads, moved on by hand (the lease deadline)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Status(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    """JobStatus only: job ``slow`` takes as long as the lease has left (the clock moves)."""

    def __init__(self, during: Callable[[], None]) -> None:
        self.during = during

    async def JobStatus(
        self, request: admin_pb2.JobStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.JobStatusReply:
        if request.job_id == "slow":
            self.during()
        return admin_pb2.JobStatusReply()


async def test_a_root_whose_lease_ran_out_while_serving_withholds_the_reply(
    etcd: EtcdMember,
) -> None:
    clock = SteppedClock()
    async with EtcdClient([etcd.endpoint]) as client:
        config = ElectionConfig("a", "a:1", ttl_s=TTL_S, margin_s=MARGIN_S)
        leadership = EtcdLeadership(client, config, clock=clock)
        campaign = asyncio.create_task(leadership.run())
        server = None
        try:
            await wait_until(leadership.is_root, 20, "a elected")
            term = leadership.term

            def lease_runs_out() -> None:
                clock.now += TTL_S - MARGIN_S  # no renewal counts any more

            server = await start_server(
                "127.0.0.1:0",
                [(admin_pb2_grpc.add_AdminServicer_to_server, Status(lease_runs_out))],
                (ADMIN,),
                interceptors=[RootOnly(leadership, (ADMIN,))],
            )
            async with open_channel(server.address) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                # Root throughout the call: answered.
                await stub.JobStatus(admin_pb2.JobStatusRequest(job_id="fast"), timeout=10)
                # Root when the call came, not when it was done: refused, naming no root of
                # its own term.
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.JobStatus(admin_pb2.JobStatusRequest(job_id="slow"), timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            moved = not_leader(refused.value)
            assert moved is not None and moved.hint != "a:1"
            assert not leadership.is_root() and leadership.term == term
        finally:
            if server is not None:
                await server.server.stop(0)
            campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
