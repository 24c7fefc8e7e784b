"""The leader's side of cluster security, as its configuration says.

``mtls``: open the cluster's :class:`~eddl.security.authority.Authority` in
``<state_dir>/pki`` (made on first start), issue this leader's own certificate (role
``leader``), require cluster certificates on the main port behind the one
:class:`~eddl.security.authz.Authorizer`, and serve enrolment on the bootstrap port.
``insecure``: plaintext, the Authorizer with session credentials. ``off``: nothing (in-process
tests).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from eddl.leader.config import LeaderConfig, default_bootstrap_bind
from eddl.net import RunningServer, write_port_file
from eddl.proto.v1 import security_pb2_grpc
from eddl.security import pki
from eddl.security.authority import Authority
from eddl.security.authz import Authorizer, CertificateAuth, SessionAuth
from eddl.security.bootstrap import SecurityServicer, start_bootstrap_server
from eddl.security.files import write_private
from eddl.security.tls import Identity, channel_credentials, server_credentials

__all__ = ["LEADER_CERT_LIFETIME_S", "LeaderSecurity"]

LEADER_CERT_LIFETIME_S = 30 * 24 * 3600.0
FLEET_TOKEN_TTL_S = 30 * 24 * 3600.0
FLEET_TOKEN_USES = {"worker": 4096, "gateway": 256}


@dataclass
class LeaderSecurity:
    config: LeaderConfig
    authority: Authority | None = None
    identity: Identity | None = None
    # The Join token the membership accepts: the configured one, or in mtls a random one that
    # the Authorizer writes into every Join whose certificate it verified.
    join_token: str = ""
    interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)
    registrations: list[tuple[Any, Any]] = field(default_factory=list)
    bootstrap: RunningServer | None = None

    @classmethod
    def build(cls, config: LeaderConfig) -> LeaderSecurity:
        sec = cls(config, join_token=config.join_token)
        if config.security == "insecure":
            sec.interceptors = [Authorizer(SessionAuth())]
        if config.security != "mtls":
            return sec
        authority = Authority(config.state_dir / "pki", lifetime_s=config.cert_lifetime_s)
        key = pki.new_key()
        hosts = {"localhost", "127.0.0.1", socket.gethostname(), *config.tls_hosts}
        bind_host = config.bind.rpartition(":")[0].strip("[]")
        if bind_host and bind_host not in ("0.0.0.0", "::"):
            hosts.add(bind_host)
        if config.advertise:  # the address other candidates and workers dial
            hosts.add(config.advertise.rpartition(":")[0].strip("[]"))
        hosts.discard(config.leader_id)
        issued = authority.issue(
            pki.make_csr(key, config.leader_id, tuple(sorted(hosts))),
            "leader",
            lifetime_s=LEADER_CERT_LIFETIME_S,
        )
        sec.authority = authority
        sec.identity = Identity(pki.key_pem(key), issued.cert_pem, authority.ca_pem)
        sec.identity.save(authority.dir / "leader")
        if config.token_dir is not None:
            for role, uses in FLEET_TOKEN_USES.items():
                token = authority.new_token(role, FLEET_TOKEN_TTL_S, uses)
                write_private(config.token_dir / f"{role}.token", f"{token}\n".encode())
        sec.join_token = secrets.token_hex(16)
        certs = CertificateAuth(authority.is_revoked, join_token=sec.join_token)
        sec.interceptors = [Authorizer(certs)]
        sec.registrations = [
            (security_pb2_grpc.add_SecurityServicer_to_server, SecurityServicer(authority))
        ]
        return sec

    @property
    def peer_credentials(self) -> grpc.ChannelCredentials | None:
        """This leader's certificate (role ``leader``) for its calls to other candidates."""
        return None if self.identity is None else channel_credentials(self.identity)

    @property
    def credentials(self) -> grpc.ServerCredentials | None:
        return None if self.identity is None else server_credentials(self.identity)

    async def start_bootstrap(
        self, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    ) -> None:
        """Serve GetCA and Enrol (mtls only) on the bootstrap port, behind ``interceptors``."""
        if self.authority is None:
            return
        cfg = self.config
        bind = cfg.bootstrap_bind or default_bootstrap_bind(cfg.bind)
        self.bootstrap = await start_bootstrap_server(
            bind, SecurityServicer(self.authority), interceptors
        )
        if cfg.bootstrap_port_file is not None:
            write_port_file(cfg.bootstrap_port_file, self.bootstrap.port)

    async def stop(self, grace: float) -> None:
        if self.bootstrap is not None:
            await self.bootstrap.stop(grace)
            self.bootstrap = None
