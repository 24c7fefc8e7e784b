"""A node's identity on disk (key, certificate, CA) and the gRPC credentials built from it.

Servers require a client certificate signed by the cluster CA (``require_client_auth``);
clients check the server's certificate against the same CA, and a channel to a leader
(:func:`leader_channel`) checks that the certificate is a leader's for the host dialled. A
server whose certificate is renewed while it runs serves through :class:`ServerCertificates`:
new connections get the new certificate, open ones keep theirs. A node's directory holds
``node.key`` (0600), ``node.pem`` and ``ca.pem``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from eddl.net.channel import open_channel
from eddl.security import pki
from eddl.security.files import write_private

__all__ = [
    "Identity",
    "ServerCertificates",
    "channel_credentials",
    "leader_channel",
    "leader_server_name",
    "server_credentials",
]


@dataclass(frozen=True)
class Identity:
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    @property
    def info(self) -> pki.CertInfo:
        return pki.cert_info(pki.load_cert(self.cert_pem))

    def renew_at(self) -> float:
        """POSIX time at two thirds of the certificate's lifetime."""
        info = self.info
        return info.not_before + (info.not_after - info.not_before) * 2 / 3

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.info.not_after

    def save(self, directory: Path) -> None:
        write_private(directory / "node.key", self.key_pem)
        write_private(directory / "node.pem", self.cert_pem)
        write_private(directory / "ca.pem", self.ca_pem)

    @classmethod
    def load(cls, directory: Path) -> Identity:
        try:
            ident = cls(
                (directory / "node.key").read_bytes(),
                (directory / "node.pem").read_bytes(),
                (directory / "ca.pem").read_bytes(),
            )
        except FileNotFoundError as exc:
            raise pki.PkiError(f"no identity in {directory}: {exc.filename} missing") from exc
        pki.load_key(ident.key_pem)
        pki.load_cert(ident.ca_pem)
        ident.info  # noqa: B018 - checks the certificate names a node and a role
        return ident

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return all((directory / n).exists() for n in ("node.key", "node.pem", "ca.pem"))


def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=identity.ca_pem,
        require_client_auth=True,
    )


class ServerCertificates:
    """A server's certificate that :meth:`replace` swaps while it serves.

    gRPC asks :meth:`_fetch` before each new connection's handshake (from its own threads):
    it answers the new configuration once, then ``None`` (no change). Client certificates
    are required and checked against the CA in every configuration, as with
    :func:`server_credentials`."""

    def __init__(self, identity: Identity) -> None:
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._initial = _certificate_configuration(identity)
        self.replaced = 0

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self._fetch, require_client_authentication=True
        )

    def replace(self, identity: Identity) -> None:
        config = _certificate_configuration(identity)
        with self._lock:
            self._pending = config
            self.replaced += 1

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            config, self._pending = self._pending, None
        return config


def _certificate_configuration(identity: Identity) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(identity.key_pem, identity.cert_pem)], root_certificates=identity.ca_pem
    )


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )


def leader_server_name(address: str) -> str:
    """The name a leader at ``address`` (host:port) must carry: ``eddl-leader.<host>``."""
    return pki.leader_name(address.rpartition(":")[0].strip("[]"))


def leader_channel(address: str, identity: Identity, **kwargs: Any) -> grpc.aio.Channel:
    """mTLS to a leader: a server with a worker's, gateway's or admin's certificate is
    refused in the handshake."""
    return open_channel(
        address,
        credentials=channel_credentials(identity),
        server_name=leader_server_name(address),
        **kwargs,
    )
