"""Leader candidates as in-process daemons on a real etcd: the root serves, a standby answers
``not-leader`` with the root's address, a standby stopped and started again catches up, and
with no live standby the root keeps going and its status says replication is degraded."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from eddl.leader.server import LeaderDaemon
from eddl.net import open_channel
from eddl.net.redirect import not_leader
from eddl.proto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    peer_pb2_grpc,
)
from eddl.security.authority import Authority
from eddl.security.tls import channel_credentials
from tests.etcd_procs import EtcdMember, free_port
from tests.integration.cluster_support import DIGITS_JOB, TOKEN, ha_candidate, wait_until
from tests.integration.security_support import identity

pytestmark = pytest.mark.slow


def ha(daemon: LeaderDaemon) -> dict[str, object]:
    assert daemon.ha is not None
    return daemon.ha.status()


async def join(address: str, node_id: str) -> None:
    """A write on the root (a member record), which it replicates before answering."""
    async with open_channel(address) as channel:
        env = common_pb2.Envelope(node_id=node_id)
        request = cluster_pb2.JoinRequest(envelope=env, join_token=TOKEN)
        await cluster_pb2_grpc.ClusterStub(channel).Join(request, timeout=20)


async def test_a_standby_that_joins_after_the_last_write_is_brought_up_to_date(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    pa, pb = free_port(), free_port()
    root_address = f"127.0.0.1:{pa}"
    async with ha_candidate(tmp_path, etcd, "a", pa) as a:
        assert a.leadership is not None
        # Replicated: nothing a failover could lose is handed out (tasks wait for commits).
        assert a.core is not None and not a.core.replies_before_commit
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        await join(root_address, "n1")  # the root's last write: nothing follows it
        async with ha_candidate(tmp_path, etcd, "b", pb) as b:
            assert b.ha is not None
            standbys = lambda: ha(a)["standbys"]  # noqa: E731
            await wait_until(lambda: len(standbys()) == 1, 20, "a sees b")  # type: ignore[arg-type]
            # No write since b joined: the root sent it a snapshot by itself.
            synced = lambda: standbys()[0]["synced"] and ha(a)["degraded"] is False  # noqa: E731
            await wait_until(synced, 20, "b in sync, a no longer degraded")  # type: ignore[index]
            assert "n1" in {m.node_id for m in b.ha.standby.store.members()}


async def test_a_restarted_standby_catches_up_and_a_lone_root_is_degraded(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    pa, pb = free_port(), free_port()
    root_address = f"127.0.0.1:{pa}"
    async with ha_candidate(tmp_path, etcd, "a", pa) as a:
        assert a.leadership is not None
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        async with open_channel(root_address) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            spec = json.dumps(DIGITS_JOB)
            await admin.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=spec), timeout=60)
            reply = await admin.JobStatus(admin_pb2.JobStatusRequest(), timeout=20)
        detail = json.loads(reply.detail_json)["ha"]
        assert detail["degraded"] is True and detail["standbys"] == []
        assert detail["root"] == {"node_id": "a", "address": root_address}
        assert detail["coordinator"] == etcd.coordinator and detail["term"] == reply.envelope.term

        async with ha_candidate(tmp_path, etcd, "b", pb) as b:
            assert b.leadership is not None and b.ha is not None
            await wait_until(lambda: b.leadership.root_hint() == root_address, 20, "b follows a")
            await wait_until(lambda: len(ha(a)["standbys"]) == 1, 20, "a sees b")  # type: ignore[arg-type]
            await join(root_address, "n1")
            assert ha(a)["degraded"] is False
            store = b.ha.standby.store
            assert [j.status for j in store.jobs()] == ["running"]
            assert "n1" in {m.node_id for m in store.members()}
            # The standby refuses cluster calls and names the root.
            async with open_channel(f"127.0.0.1:{pb}") as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.JobStatus(admin_pb2.JobStatusRequest(), timeout=10)
            redirect = not_leader(info.value)
            assert redirect is not None and redirect.hint == root_address

        # b is gone: the next write waits at most the replication timeout, then goes on.
        await join(root_address, "n2")
        assert ha(a)["degraded"] is True

        async with ha_candidate(tmp_path, etcd, "b", pb) as b:
            assert b.ha is not None
            await wait_until(lambda: b.leadership.root_hint() == root_address, 20, "b back")  # type: ignore[union-attr]
            await join(root_address, "n3")
            await wait_until(lambda: ha(a)["degraded"] is False, 20, "b caught up")
            members = {m.node_id for m in b.ha.standby.store.members()}
            assert {"n1", "n2", "n3"} <= members  # the snapshot brought what it missed
            assert [j.status for j in b.ha.standby.store.jobs()] == ["running"]


async def test_candidates_sharing_the_cluster_ca_replicate_over_mutual_tls(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    """The daemons' default: mTLS. Candidates given one cluster CA (copied into each state
    directory before the first start) replicate to each other with their leader certificates;
    a worker certificate is refused on the Peer service."""
    pa, pb = free_port(), free_port()
    root_address = f"127.0.0.1:{pa}"
    authority = Authority(tmp_path / "a" / "pki")  # the cluster CA, made before any start
    (tmp_path / "b" / "pki").mkdir(parents=True)
    for name in ("ca.key", "ca.pem"):
        target = tmp_path / "b" / "pki" / name
        target.write_bytes((authority.dir / name).read_bytes())
        target.chmod(0o600)
    admin = channel_credentials(identity(authority, "op", "admin"))
    async with ha_candidate(tmp_path, etcd, "a", pa, "mtls") as a:
        assert a.leadership is not None
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        async with ha_candidate(tmp_path, etcd, "b", pb, "mtls") as b:
            assert b.ha is not None
            await wait_until(lambda: len(ha(a)["standbys"]) == 1, 20, "a sees b")  # type: ignore[arg-type]
            async with open_channel(root_address, credentials=admin) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                spec = json.dumps(DIGITS_JOB)
                await stub.SubmitJob(admin_pb2.SubmitJobRequest(spec_json=spec), timeout=60)
            await wait_until(lambda: ha(a)["degraded"] is False, 20, "b holds the job")
            assert [j.status for j in b.ha.standby.store.jobs()] == ["running"]
            # A worker's certificate may not replicate into a standby.
            worker = channel_credentials(identity(authority, "w1", "worker"))
            async with open_channel(f"127.0.0.1:{pb}", credentials=worker) as channel:
                call = peer_pb2_grpc.PeerStub(channel).Replicate()
                await call.done_writing()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert [j.status for j in b.ha.standby.store.jobs()] == ["running"]
