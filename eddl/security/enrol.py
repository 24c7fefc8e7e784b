"""A node's side of the bootstrap: enrol with a join token, then renew over mTLS.

:func:`enrol` makes the node's own key, fetches the CA from the bootstrap port, checks it
against the hash pinned in the token (no trust on first use), sends a CSR with the token's
secret sealed to the CA, and returns the node's :class:`~eddl.security.tls.Identity`.
:func:`renew` asks the leader's main port (mTLS, the current certificate) for a fresh one;
:class:`Renewer` does it at two thirds of each certificate's lifetime while the node runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from eddl.log import get_logger
from eddl.net.channel import open_channel
from eddl.net.redirect import not_leader
from eddl.proto.v1 import security_pb2, security_pb2_grpc
from eddl.security import pki
from eddl.security.seal import seal_secret
from eddl.security.tls import Identity, leader_channel
from eddl.security.tokens import JoinToken

__all__ = ["EnrolmentError", "Renewer", "enrol", "renew"]

log = get_logger("security.enrol")
RPC_TIMEOUT_S = 15.0


class EnrolmentError(RuntimeError):
    """The node could not get a certificate (wrong CA, refused token, leader unreachable)."""


def _check_issued(
    cert_pem: bytes, ca_pem: bytes, key: ec.EllipticCurvePrivateKey, node_id: str
) -> None:
    cert = pki.load_cert(cert_pem)
    ca = pki.load_cert(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise EnrolmentError("the certificate returned is not signed by the cluster CA") from exc
    if cert.public_key() != key.public_key() or pki.cert_info(cert).node_id != node_id:
        raise EnrolmentError("the certificate returned is not for this node's key and id")


def bootstrap_address(leader: str) -> str:
    """The default bootstrap port of a leader: its main port + 1."""
    host, _, port = leader.rpartition(":")
    return f"{host}:{int(port) + 1}"


async def enrol(
    bootstrap: str, token_text: str, node_id: str, hosts: tuple[str, ...] = ()
) -> Identity:
    """Enrol at ``bootstrap``; a leader candidate that is not the root names the root, whose
    bootstrap port (its main port + 1) is then asked once."""
    try:
        return await _enrol_at(bootstrap, token_text, node_id, hosts)
    except _Redirected as moved:
        try:
            return await _enrol_at(bootstrap_address(moved.hint), token_text, node_id, hosts)
        except _Redirected as again:
            raise EnrolmentError(
                f"{moved.hint} is not the root either (it names {again.hint})"
            ) from again


class _Redirected(Exception):
    def __init__(self, hint: str) -> None:
        self.hint = hint


async def _enrol_at(
    bootstrap: str, token_text: str, node_id: str, hosts: tuple[str, ...]
) -> Identity:
    token = JoinToken.parse(token_text)
    key = pki.new_key()
    csr = pki.make_csr(key, node_id, hosts)
    try:
        async with open_channel(bootstrap) as channel:
            stub = security_pb2_grpc.SecurityStub(channel)
            ca_reply = await stub.GetCA(security_pb2.GetCARequest(), timeout=RPC_TIMEOUT_S)
            ca = pki.load_cert(ca_reply.ca_pem)
            if pki.ca_hash(ca) != token.ca_hash:
                raise EnrolmentError(
                    f"the CA at {bootstrap} is not the one the token names: refusing to trust it"
                )
            public = ca.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise EnrolmentError("the cluster CA's key is not an EC key")
            sealed = seal_secret(public, token.token_id, token.secret, csr)
            reply = await stub.Enrol(
                security_pb2.EnrolRequest(
                    token_id=token.token_id,
                    csr_pem=csr,
                    ephemeral_public=sealed.ephemeral_public,
                    nonce=sealed.nonce,
                    sealed_secret=sealed.ciphertext,
                ),
                timeout=RPC_TIMEOUT_S,
            )
    except grpc.aio.AioRpcError as exc:
        moved = not_leader(exc, bootstrap)
        if moved is not None and moved.hint:
            raise _Redirected(moved.hint) from exc
        raise EnrolmentError(f"enrolment at {bootstrap} failed: {exc.details()}") from exc
    ca_pem = pki.cert_pem(ca)
    _check_issued(reply.cert_pem, ca_pem, key, node_id)
    return Identity(pki.key_pem(key), reply.cert_pem, ca_pem)


async def renew(address: str, identity: Identity) -> Identity:
    info = identity.info
    key = pki.new_key()
    csr = pki.make_csr(key, info.node_id, _hosts(identity))
    try:
        async with leader_channel(address, identity) as channel:
            stub = security_pb2_grpc.SecurityStub(channel)
            reply = await stub.Renew(security_pb2.RenewRequest(csr_pem=csr), timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        raise EnrolmentError(f"renewal at {address} failed: {exc.details()}") from exc
    _check_issued(reply.cert_pem, identity.ca_pem, key, info.node_id)
    return Identity(pki.key_pem(key), reply.cert_pem, identity.ca_pem)


def _hosts(identity: Identity) -> tuple[str, ...]:
    from cryptography import x509

    cert = pki.load_cert(identity.cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    names = [*sans.get_values_for_type(x509.DNSName)]
    names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    # A leader's role names are the CA's to add again, not the CSR's to ask for.
    return tuple(
        n for n in names if n != identity.info.node_id and not n.startswith(pki.LEADER_PREFIX)
    )


class Renewer:
    """Renews a node's certificate at two thirds of its lifetime, saves it in ``directory``
    and tells ``on_renewed`` (which reopens the node's channels with it).

    ``addresses`` are the leaders to ask, in order: the one the node is joined to first, then
    the others it knows. A sub-leader enrols and renews nobody, so a member of its group
    renews at the root, which the sub-leader lists after itself."""

    def __init__(
        self,
        directory: Path,
        identity: Identity,
        addresses: Callable[[], Sequence[str]],
        on_renewed: Callable[[Identity], Awaitable[None]],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.directory = directory
        self.identity = identity
        self._addresses = addresses
        self._on_renewed = on_renewed
        self._retry_s = retry_s
        self.renewals = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(0.0, self.identity.renew_at() - time.time()))
            fresh = await self._renew()
            if fresh is None:
                if self.identity.expired():
                    log.error("certificate expired; enrol the node again")
                await asyncio.sleep(self._retry_s)
                continue
            await asyncio.to_thread(fresh.save, self.directory)
            self.identity = fresh
            self.renewals += 1
            info = fresh.info
            log.info(
                "certificate renewed",
                node=info.node_id,
                serial=str(info.serial),
                not_after=round(info.not_after),
            )
            await self._on_renewed(fresh)

    async def _renew(self) -> Identity | None:
        errors = []
        for address in dict.fromkeys(self._addresses()):
            try:
                return await renew(address, self.identity)
            except (EnrolmentError, pki.PkiError) as exc:
                errors.append(f"{address}: {exc}"[:200])
        log.warning("certificate renewal failed", errors=errors)
        return None
