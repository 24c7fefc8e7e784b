"""A node's security mode and what it gives its channels and its endpoint.

``mtls`` (the default): the node's identity comes from its directory, or from enrolment with a
join token; channels use it, the endpoint requires cluster certificates, and a
:class:`~eddl.security.enrol.Renewer` keeps it fresh (``generation`` counts renewals, so links
reopen their channels). ``insecure``: plaintext on loopback with a session credential from
``Join``. ``off``: plaintext without credentials, for in-process tests only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from eddl.log import get_logger
from eddl.net.channel import open_channel
from eddl.security import pki
from eddl.security.authz import Authorizer, CertificateAuth
from eddl.security.enrol import EnrolmentError, bootstrap_address, enrol
from eddl.security.sessions import SessionClient
from eddl.security.tls import Identity, ServerCertificates, leader_channel
from eddl.security.tokens import JoinToken

__all__ = ["MODES", "NodeSecurity", "bootstrap_address", "prepare"]

log = get_logger("security")

MODES = ("mtls", "insecure", "off")


class NodeSecurity:
    def __init__(
        self, mode: str, identity: Identity | None = None, *, own_connection: bool = False
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"security mode must be one of {', '.join(MODES)}")
        if (mode == "mtls") != (identity is not None):
            raise ValueError("mtls needs an identity, and only mtls has one")
        self.mode = mode
        self.identity = identity
        self.generation = 0
        # Plaintext channels on a TCP connection of their own (many nodes in one process).
        self.own_connection = own_connection
        self._sessions = SessionClient() if mode == "insecure" else None
        self._served: ServerCertificates | None = None

    def renewed(self, identity: Identity) -> None:
        """A renewed certificate: new channels use it, and the endpoint serves it on new
        connections (open ones keep the old one)."""
        self.identity = identity
        self.generation += 1
        if self._served is not None:
            self._served.replace(identity)

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.identity is not None:  # a node's channels lead to its leader
            return leader_channel(address, self.identity)
        if self._sessions is not None:
            return open_channel(
                address,
                interceptors=self._sessions.interceptors(),
                own_connection=self.own_connection,
            )
        return open_channel(address, own_connection=self.own_connection)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.identity is None:
            return None
        if self._served is None:
            self._served = ServerCertificates(self.identity)
        return self._served.credentials()

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """A node's endpoint: any cluster certificate may probe it (no revocation list here)."""
        if self.identity is None:
            return []
        return [Authorizer(CertificateAuth(lambda _serial: False))]


async def prepare(
    mode: str,
    directory: Path,
    *,
    node_id: str,
    token: str = "",
    bootstrap: str = "",
    hosts: tuple[str, ...] = (),
) -> NodeSecurity:
    """A node's security: in mtls, its saved identity, or a new one enrolled with ``token``."""
    if mode != "mtls":
        return NodeSecurity(mode)
    if Identity.exists(directory):
        identity = Identity.load(directory)
        if identity.info.node_id != node_id:
            raise EnrolmentError(
                f"{directory} holds the identity of node {identity.info.node_id!r}, not {node_id!r}"
            )
        other_ca = bool(token) and JoinToken.parse(token).ca_hash != pki.ca_hash(
            pki.load_cert(identity.ca_pem)
        )
        if not identity.expired() and not other_ca:
            return NodeSecurity(mode, identity)
        why = "of another cluster CA" if other_ca else "expired"
        log.warning(f"saved certificate {why}; enrolling again", node=node_id)
    if not token:
        raise EnrolmentError(
            f"no certificate in {directory} and no enrol token: create one with "
            "`eddl token create` on the leader and pass it with --enrol-token"
        )
    identity = await enrol(bootstrap, token, node_id, hosts)
    await asyncio.to_thread(identity.save, directory)
    log.info("enrolled", node=node_id, role=identity.info.role, directory=str(directory))
    return NodeSecurity(mode, identity)
