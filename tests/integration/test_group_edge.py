"""The root's group edge over real gRPC and mTLS: only a certificate of role ``subleader`` may
offer to lead, an offer's address is bounded, and an assigned worker is redirected on its
next GetTask with the not-leader hint."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from eddl.leader.config import LeaderConfig
from eddl.leader.groupdirector import GroupDirector, Regroup
from eddl.leader.groupedge import GroupEdge
from eddl.leader.server import LeaderDaemon
from eddl.leader.splitting import Group, NodeLink, SplitDecision, SplitFigures, SplitPolicy
from eddl.leader.syncmeter import SyncMeter
from eddl.net.redirect import not_leader
from eddl.proto.v1 import cluster_pb2, cluster_pb2_grpc, common_pb2
from eddl.security import pki
from eddl.security.authority import EnrolError
from eddl.security.node import NodeSecurity
from eddl.security.tls import Identity
from tests.integration.security_support import TOKEN, authority, env, identity

pytestmark = pytest.mark.timeout(120)


async def _join(channel: grpc.aio.Channel, node: str, lead: str) -> None:
    request = cluster_pb2.JoinRequest(
        envelope=env(node), role="worker", info=cluster_pb2.NodeInfo(lead_address=lead)
    )
    await cluster_pb2_grpc.ClusterStub(channel).Join(request, timeout=10)


async def test_offers_need_role_subleader_and_an_assigned_worker_is_redirected(
    tmp_path: Path,
) -> None:
    director = GroupDirector(patience=60.0)
    changes: list[Regroup] = []
    meter = SyncMeter(SplitPolicy(), lambda d: None)
    edge = GroupEdge(director, meter, changes.append, home=lambda: "127.0.0.1:1")
    daemon = _root(tmp_path, edge)
    await daemon.start()
    try:
        assert daemon.server is not None
        address = daemon.server.address
        auth = authority(daemon)
        worker = NodeSecurity("mtls", identity(auth, "w1", "worker"))
        sub = NodeSecurity("mtls", identity(auth, "sub-1", "subleader"))
        async with worker.channel(address) as wch, sub.channel(address) as sch:
            # A worker's offer is ignored; its Join itself is admitted.
            await _join(wch, "w1", "127.0.0.1:7001")
            assert director.offers == {}
            # An address beyond the bound is refused; the Join still stands.
            await _join(sch, "sub-1", "x" * 300)
            assert director.offers == {}
            await _join(sch, "sub-1", "127.0.0.1:7002")
            assert director.offers["sub-1"].address == "127.0.0.1:7002"

            # w1 assigned to sub-1's group: its next GetTask is the not-leader redirect.
            figures = SplitFigures(3, None, None, None, 1.0, 0)
            promote = SplitDecision("promote", 2, "test", figures, 0.0)
            nodes = [NodeLink("w1", 1e6, 10.0), NodeLink("w2", 1e6, 10.0)]
            formed = edge.director.apply(promote, nodes, edge.clock())
            assert formed.groups == (Group("sub-1", ("w1", "w2")),)
            stub = cluster_pb2_grpc.ClusterStub(wch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetTask(cluster_pb2.GetTaskRequest(envelope=env("w1")), timeout=10)
            redirect = not_leader(info.value)
            now = common_pb2.Envelope(node_id="w1", term=1)
            assert redirect is not None and redirect.hint == "127.0.0.1:7002"
            # Its heartbeats still reach the root (its task there is finished first).
            beat = await stub.Heartbeat(cluster_pb2.HeartbeatRequest(envelope=now), timeout=10)
            assert beat.known
            # Joining the root again by itself: it stays with the root.
            await _join(wch, "w1", "")
            await stub.GetTask(cluster_pb2.GetTaskRequest(envelope=now), timeout=10)
    finally:
        await daemon.stop(0.2)


def _root(tmp_path: Path, edge: GroupEdge) -> LeaderDaemon:
    """An mTLS root with ``edge`` behind its authorization point."""
    config = LeaderConfig(
        bind="127.0.0.1:0",
        state_dir=tmp_path / "leader",
        join_token=TOKEN,
        security="mtls",
        leader_id="leader-1",
        heartbeat_interval_s=5.0,
        grace_s=0.2,
    )
    return LeaderDaemon(config, authorized_interceptors=[edge])


def _at_term(node: str) -> common_pb2.Envelope:
    return common_pb2.Envelope(node_id=node, term=1)


async def test_a_can_lead_worker_gets_a_sub_leader_token_only_once_promoted(
    tmp_path: Path,
) -> None:
    """mTLS: a worker's offer for its own group is pending under ``<worker>.lead``; the root
    hands the token for that name on the worker's heartbeat only once it promoted the group,
    to no other worker; nobody is redirected to the group before its sub-leader joined with
    the certificate that token enrols."""
    director = GroupDirector(patience=60.0)
    meter = SyncMeter(SplitPolicy(), lambda d: None)
    holder: list[LeaderDaemon] = []

    def tokens(node: str) -> str:
        return str(authority(holder[0]).new_token("subleader", 600.0, node_id=node))

    edge = GroupEdge(director, meter, print, home=lambda: "127.0.0.1:1", lead_tokens=tokens)
    daemon = _root(tmp_path, edge)
    holder.append(daemon)
    await daemon.start()
    try:
        assert daemon.server is not None
        address = daemon.server.address
        auth = authority(daemon)
        w1 = NodeSecurity("mtls", identity(auth, "w1", "worker"))
        w2 = NodeSecurity("mtls", identity(auth, "w2", "worker"))
        async with w1.channel(address) as ch1, w2.channel(address) as ch2:
            stub1, stub2 = cluster_pb2_grpc.ClusterStub(ch1), cluster_pb2_grpc.ClusterStub(ch2)
            info = cluster_pb2.NodeInfo(lead_address="127.0.0.1:7100", lead_worker=True)
            join = cluster_pb2.JoinRequest(envelope=env("w1"), role="worker", info=info)
            await stub1.Join(join, timeout=10)
            await _join(ch2, "w2", "127.0.0.1:7200")  # no lead_worker: a worker's offer, ignored
            assert list(director.offers) == ["w1.lead"]
            assert director.offers["w1.lead"].pending

            async def beat(stub: cluster_pb2_grpc.ClusterStub, node: str) -> str:
                request = cluster_pb2.HeartbeatRequest(envelope=_at_term(node))
                return str((await stub.Heartbeat(request, timeout=10)).lead_token)

            assert await beat(stub1, "w1") == ""  # offered, not promoted: no token
            figures = SplitFigures(3, None, None, None, 1.0, 0)
            promote = SplitDecision("promote", 2, "test", figures, 0.0)
            nodes = [NodeLink("w2", 1e6, 10.0), NodeLink("w3", 1e6, 10.0)]
            formed = director.apply(promote, nodes, edge.clock())
            assert formed.groups == (Group("w1.lead", ("w2", "w3")),)
            # The group's sub-leader has not joined: w2 is not redirected to it.
            await stub2.GetTask(cluster_pb2.GetTaskRequest(envelope=_at_term("w2")), timeout=10)
            assert await beat(stub2, "w2") == ""
            token = await beat(stub1, "w1")
            assert token and await beat(stub1, "w1") == token  # made once
            # The token admits w1's sub-leader only, as role subleader.
            with pytest.raises(EnrolError, match=r"admits node 'w1\.lead' only"):
                auth.enrol(token, pki.make_csr(pki.new_key(), "w2.lead"))
            key = pki.new_key()
            issued = auth.enrol(token, pki.make_csr(key, "w1.lead"))
            assert issued.info.role == "subleader"

            sub = NodeSecurity("mtls", Identity(pki.key_pem(key), issued.cert_pem, auth.ca_pem))
            async with sub.channel(address) as sch:
                await cluster_pb2_grpc.ClusterStub(sch).Join(
                    cluster_pb2.JoinRequest(envelope=env("w1.lead"), role="worker", info=info),
                    timeout=10,
                )
            assert not director.offers["w1.lead"].pending
            assert await beat(stub1, "w1") == ""  # its sub-leader has joined
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub2.GetTask(cluster_pb2.GetTaskRequest(envelope=_at_term("w2")), timeout=10)
            redirect = not_leader(refused.value)
            assert redirect is not None and redirect.hint == "127.0.0.1:7100"
    finally:
        await daemon.stop(0.2)
