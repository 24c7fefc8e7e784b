"""Enrolment over real gRPC: the token pins the CA, is single use, expires; revocation by CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from eddl.cli import main as eddl_main
from eddl.security.enrol import EnrolmentError, enrol, renew
from eddl.security.node import NodeSecurity
from eddl.security.tokens import JoinToken
from tests.integration.security_support import CLUSTER, authority, code_of, leader

pytestmark = pytest.mark.timeout(60)


def _bootstrap(daemon) -> str:  # type: ignore[no-untyped-def]
    assert daemon.security is not None and daemon.security.bootstrap is not None
    return daemon.security.bootstrap.address


async def test_a_token_enrols_one_node_and_is_refused_the_second_time(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        token = str(authority(daemon).new_token("worker", ttl_s=60))
        identity = await enrol(_bootstrap(daemon), token, "w1")
        assert (identity.info.node_id, identity.info.role) == ("w1", "worker")
        with pytest.raises(EnrolmentError, match="already used"):
            await enrol(_bootstrap(daemon), token, "w2")
        # The enrolled identity works on the main port.
        assert daemon.server is not None
        async with NodeSecurity("mtls", identity).channel(daemon.server.address) as ch:
            assert await code_of(CLUSTER[0], ch, "w1") == grpc.StatusCode.OK


async def test_a_token_after_its_ttl_is_refused(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        token = str(authority(daemon).new_token("worker", ttl_s=0.5))
        await asyncio.sleep(0.6)
        with pytest.raises(EnrolmentError, match="unknown or expired"):
            await enrol(_bootstrap(daemon), token, "w1")


async def test_a_token_naming_another_ca_is_not_trusted_and_not_spent(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        real = authority(daemon).new_token("worker", ttl_s=60)
        pinned_elsewhere = JoinToken("0" * 64, real.token_id, real.secret)
        with pytest.raises(EnrolmentError, match="not the one the token names"):
            await enrol(_bootstrap(daemon), str(pinned_elsewhere), "w1")
        assert (await enrol(_bootstrap(daemon), str(real), "w1")).info.node_id == "w1"


async def test_renew_and_revoke_from_the_command_line(tmp_path: Path) -> None:
    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        address = daemon.server.address
        token = str(authority(daemon).new_token("worker", ttl_s=60))
        identity = await enrol(_bootstrap(daemon), token, "w1")
        fresh = await renew(address, identity)
        assert fresh.info.serial != identity.info.serial and fresh.info.node_id == "w1"
        state = str(tmp_path / "leader")
        assert (
            await asyncio.to_thread(eddl_main, ["node", "revoke", "w1", "--state-dir", state]) == 0
        )
        async with NodeSecurity("mtls", fresh).channel(address) as ch:
            assert await code_of(CLUSTER[1], ch, "w1") == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(EnrolmentError):
            await renew(address, fresh)


async def test_the_probe_measures_an_mtls_leader_with_a_cluster_certificate(
    tmp_path: Path,
) -> None:
    from eddl.profiler.probe_client import ProbeConfig, ProbeError, probe_peer
    from eddl.security.tls import channel_credentials
    from tests.integration.security_support import identity

    async with leader(tmp_path) as daemon:
        assert daemon.server is not None
        admin = identity(authority(daemon), "ops", "admin")
        config = ProbeConfig(payload_bytes=1 << 16, chunk_bytes=1 << 14, repeats=1, ping_count=2)
        result = await probe_peer(daemon.server.address, config, channel_credentials(admin))
        assert result.rtt_seconds > 0
        with pytest.raises(ProbeError):
            await probe_peer(daemon.server.address, config)


async def test_a_node_keeps_its_certificate_and_enrols_again_for_another_ca(
    tmp_path: Path,
) -> None:
    from eddl.security.authority import Authority
    from eddl.security.node import prepare
    from tests.integration.security_support import identity

    node_dir = tmp_path / "node"
    identity(Authority(tmp_path / "old-ca"), "w1", "worker").save(node_dir)
    async with leader(tmp_path) as daemon:
        token = str(authority(daemon).new_token("worker", ttl_s=60))
        fresh = await prepare(
            "mtls", node_dir, node_id="w1", token=token, bootstrap=_bootstrap(daemon)
        )
        assert fresh.identity is not None and fresh.identity.ca_pem == authority(daemon).ca_pem
        kept = await prepare("mtls", node_dir, node_id="w1")
        assert kept.identity == fresh.identity
        with pytest.raises(EnrolmentError, match="holds the identity of node"):
            await prepare("mtls", node_dir, node_id="w2")
