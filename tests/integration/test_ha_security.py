"""The cluster CA's ledger across a failover: two mTLS leader candidates on a real etcd, real
gRPC on loopback. What the root revoked or spent, the promoted candidate refuses too."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from eddl.leader.server import LeaderDaemon
from eddl.security.authority import Authority
from eddl.security.enrol import EnrolmentError, enrol
from eddl.security.node import NodeSecurity
from tests.etcd_procs import EtcdMember, free_port
from tests.integration.cluster_support import wait_until
from tests.integration.security_support import OTHER, code_of, leader

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PING = OTHER[0]


def candidate(tmp: Path, etcd: EtcdMember, name: str) -> Any:
    """A leader candidate (state in ``tmp/name/leader``), with its bootstrap port on port 0."""
    address = f"127.0.0.1:{free_port()}"
    return leader(
        tmp / name, bind=address, advertise=address, coordinator=etcd.coordinator,
        leader_id=name, lease_ttl_s=3, bootstrap_bind="127.0.0.1:0",
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
        w2 = await enrol(bootstrap(a), str(other), "w2")
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
