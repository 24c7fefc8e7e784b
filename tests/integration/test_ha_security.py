"""The cluster CA's ledger across a failover: two mTLS leader candidates on a real etcd, real
gRPC on loopback. What the root revoked or spent, the promoted candidate refuses too."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.leader.server import LeaderDaemon
from eddl.net import open_channel
from eddl.net.redirect import not_leader
from eddl.proto.v1.security_pb2 import GetCARequest
from eddl.proto.v1.security_pb2_grpc import SecurityStub
from eddl.security.authority import Authority
from eddl.security.enrol import EnrolmentError, enrol
from eddl.security.node import NodeSecurity
from tests.etcd_procs import EtcdMember, free_port
from tests.integration.cluster_support import wait_until
from tests.integration.security_support import OTHER, code_of, leader

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PING = OTHER[0]


def port_pair() -> int:
    """A free port whose successor is free too: the bootstrap port is the main port + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no two free consecutive ports")


def candidate(tmp: Path, etcd: EtcdMember, name: str) -> Any:
    """A leader candidate (state in ``tmp/name/leader``), its bootstrap port the next one."""
    address = f"127.0.0.1:{port_pair()}"
    return leader(
        tmp / name, bind=address, advertise=address, coordinator=etcd.coordinator,
        leader_id=name, lease_ttl_s=6,  # a loaded machine must not cost the root its lease
    )  # fmt: skip


def given_one_ca(tmp: Path, *names: str) -> Authority:
    """The cluster CA, made before any start and copied into each candidate's state dir."""
    authority = Authority(tmp / names[0] / "leader" / "pki")
    for name in names[1:]:
        for part in ("ca.key", "ca.pem"):
            target = tmp / name / "leader" / "pki" / part
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((authority.dir / part).read_bytes())
            target.chmod(0o600)
    return authority


def bootstrap(daemon: LeaderDaemon) -> str:
    assert daemon.security is not None and daemon.security.bootstrap is not None
    return daemon.security.bootstrap.address


def authority_of(daemon: LeaderDaemon) -> Authority:
    assert daemon.security is not None and daemon.security.authority is not None
    return daemon.security.authority


async def test_a_promoted_candidate_refuses_what_the_old_root_revoked_or_spent(
    tmp_path: Path, etcd: EtcdMember
) -> None:
    host_a = given_one_ca(tmp_path, "a", "b")  # what `eddl token create` / `node revoke` open
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(candidate(tmp_path, etcd, "a"))
        assert a.leadership is not None and a.ha is not None and a.server is not None
        await wait_until(a.leadership.is_root, 20, "a acting as root")
        b = await stack.enter_async_context(candidate(tmp_path, etcd, "b"))
        assert b.leadership is not None and b.server is not None
        await wait_until(lambda: len(a.ha.status()["standbys"]) == 1, 20, "a sees b")  # type: ignore[union-attr,arg-type]

        spent, fresh, other = (host_a.new_token("worker") for _ in range(3))
        w1 = await enrol(bootstrap(a), str(spent), "w1")
        # A standby neither enrols nor renews: it names the root, and the node enrols there.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await SecurityStub(open_channel(bootstrap(b))).GetCA(GetCARequest(), timeout=10)
        moved = not_leader(refused.value)
        assert moved is not None and moved.hint == a.server.address
        w2 = await enrol(bootstrap(b), str(other), "w2")
        assert authority_of(a).ledger().tokens[other.token_id].uses_left == 0
        # The enrolment answered only once b held the spent token and the new serials.
        b_ledger = authority_of(b).ledger()
        assert b_ledger.tokens[spent.token_id].uses_left == 0
        assert b_ledger.tokens[fresh.token_id].uses_left == 1
        assert {w1.info.serial, w2.info.serial} <= set(b_ledger.issued)
        # `eddl node revoke w2` on a's host; a's next call sees the list changed.
        assert host_a.revoke_node("w2") == [w2.info.serial]
        async with NodeSecurity("mtls", w2).channel(a.server.address) as ch:
            assert await code_of(PING, ch) == grpc.StatusCode.UNAUTHENTICATED
        await wait_until(
            lambda: authority_of(b).is_revoked(w2.info.serial), 20, "b holds the revocation"
        )

        await a.stop(0.2)  # the root goes (stopping again on exit is harmless); b is promoted
        await wait_until(b.leadership.is_root, 30, "b acting as root")

        with pytest.raises(EnrolmentError, match="already used"):
            await enrol(bootstrap(b), str(spent), "w3")
        async with NodeSecurity("mtls", w2).channel(b.server.address) as ch:
            assert await code_of(PING, ch) == grpc.StatusCode.UNAUTHENTICATED
        # What is not revoked or spent still holds: w1's certificate, the unused token.
        async with NodeSecurity("mtls", w1).channel(b.server.address) as ch:
            assert await code_of(PING, ch) == grpc.StatusCode.OK
        w4 = await enrol(bootstrap(b), str(fresh), "w4")
        assert w4.info.role == "worker"
