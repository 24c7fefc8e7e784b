"""Workers report passive link estimates from their real transfers; bad reports are refused."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest

from eddl.net import open_channel
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2, profile_pb2
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, running_cluster, wait_until


async def test_trained_worker_reports_passive_link_estimates(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cluster:
        worker = await cluster.add_worker("w0")
        job_id = await cluster.submit(DIGITS_JOB)
        await cluster.wait_job(job_id, 120)
        service = cluster.leader.service
        assert service is not None

        def links_with_both_directions() -> bool:
            # A heartbeat sent before the worker's first push carries a download estimate only.
            links = service.reports.of("w0").get("network", {}).get("links", [])
            return bool(links) and {"downloadBytesPerSecond", "uploadBytesPerSecond"} <= set(
                links[0]
            )

        await wait_until(links_with_both_directions, 15, "a network report of both directions")
        links = service.reports.of("w0")["network"]["links"]
        assert links[0]["peer"] == cluster.address
        assert links[0]["source"] == "LINK_SOURCE_PASSIVE"
        assert float(links[0]["downloadBytesPerSecond"]) > 0
        assert float(links[0]["uploadBytesPerSecond"]) > 0
        bps = cluster.coordinator.membership.require("w0").profile.bandwidth_bps
        assert bps is not None and math.isfinite(bps) and bps > 0
        assert worker.links.estimates(0.0)


@pytest.mark.parametrize(
    "link",
    [
        profile_pb2.LinkEstimate(peer="", upload_bytes_per_second=1e6),
        profile_pb2.LinkEstimate(peer="leader:1", upload_bytes_per_second=-5.0),
        profile_pb2.LinkEstimate(peer="leader:1", download_bytes_per_second=math.nan),
    ],
)
async def test_malformed_network_report_is_invalid_and_changes_nothing(
    tmp_path: Path, link: profile_pb2.LinkEstimate
) -> None:
    async with running_cluster(tmp_path) as cluster:
        env = common_pb2.Envelope(node_id="n1", term=cluster.coordinator.term)
        async with open_channel(cluster.address) as ch:
            stub = cluster_pb2_grpc.ClusterStub(ch)
            await stub.Join(
                cluster_pb2.JoinRequest(envelope=env, role="worker", join_token=TOKEN), timeout=10
            )
            before = cluster.coordinator.membership.require("n1").last_seen
            request = cluster_pb2.HeartbeatRequest(
                envelope=env, network=profile_pb2.NetworkProfile(links=[link])
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Heartbeat(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert cluster.coordinator.membership.require("n1").last_seen == before
        assert cluster.coordinator.membership.require("n1").profile.bandwidth_bps is None
