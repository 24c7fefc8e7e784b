"""The cluster's certificate authority, kept in the root leader's state directory.

``<state_dir>/pki/``: ``ca.key`` (0600) and ``ca.pem``, ``tokens.json`` (hashes of join
tokens), ``issued.json`` (serial -> node, role, expiry) and ``revoked.json`` (revoked
serials). The ``eddl token create`` and ``eddl node revoke`` commands change the same files on
the leader's host under the same locks; the leader reads the revocation list again whenever the
file changed (one ``stat`` per call, no timer).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eddl.security import pki
from eddl.security.files import locked, read_json, write_private
from eddl.security.ledger import NODE_ROLES, Ledger, merge
from eddl.security.revocations import Revocations
from eddl.security.seal import Sealed, SealError, open_secret
from eddl.security.tokens import JoinToken, TokenError, TokenStore

__all__ = ["NODE_ROLES", "Authority", "EnrolError", "Issued"]

DEFAULT_LIFETIME_S = 24 * 3600.0
MIN_LIFETIME_S = 2.0
MAX_LIFETIME_S = 365 * 24 * 3600.0


class EnrolError(ValueError):
    """A request for a certificate was refused (bad token, CSR or identity)."""


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    info: pki.CertInfo


class Authority:
    def __init__(
        self,
        directory: Path,
        *,
        lifetime_s: float = DEFAULT_LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not MIN_LIFETIME_S <= lifetime_s <= MAX_LIFETIME_S:
            raise ValueError(f"certificate lifetime must be within {MIN_LIFETIME_S} s .. 1 year")
        self.dir = directory
        self.lifetime_s = lifetime_s
        self._clock = clock
        with locked(self.dir / "ca.key"):
            if not (self.dir / "ca.key").exists():
                key, cert = pki.create_ca()
                write_private(self.dir / "ca.key", pki.key_pem(key))
                write_private(self.dir / "ca.pem", pki.cert_pem(cert))
        (self.dir / "ca.key").chmod(0o600)
        self._key = pki.load_key((self.dir / "ca.key").read_bytes())
        self.ca_cert = pki.load_cert((self.dir / "ca.pem").read_bytes())
        self.ca_pem = pki.cert_pem(self.ca_cert)
        self.ca_hash = pki.ca_hash(self.ca_cert)
        self.tokens = TokenStore(self.dir / "tokens.json", clock=clock)
        self._revoked: dict[int, float] = {}
        self._revoked_stamp: tuple[int, int] | None = None
        self.revision = 0  # counts the changes of the revocation list this process saw
        # Hears each change of the ledger, from whichever thread made it.
        self.on_change: Callable[[], None] = lambda: None
        # Hear each change of the revocation list (the streams to sub-leaders).
        self.revocation_listeners: list[Callable[[], None]] = []

    # -- issuing ---------------------------------------------------------------------------

    def issue(
        self,
        csr_pem: bytes,
        role: str,
        *,
        node_id: str | None = None,
        lifetime_s: float | None = None,
    ) -> Issued:
        if role not in NODE_ROLES:
            raise EnrolError(f"unknown role {role[:32]!r}")
        life = self.lifetime_s if lifetime_s is None else lifetime_s
        try:
            cert = pki.sign_csr(
                self._key, self.ca_cert, csr_pem, role=role, lifetime_s=life, node_id=node_id
            )
        except pki.PkiError as exc:
            raise EnrolError(str(exc)) from exc
        info = pki.cert_info(cert)
        self._record(info)
        return Issued(pki.cert_pem(cert), info)

    def enrol_sealed(self, token_id: str, sealed: Sealed, csr_pem: bytes) -> Issued:
        """:meth:`enrol` for a secret sealed to the CA's key (see :mod:`eddl.security.seal`)."""
        try:
            secret = open_secret(self._key, token_id[:32], sealed, csr_pem[: pki.MAX_PEM_BYTES])
        except SealError as exc:
            raise EnrolError(str(exc)) from exc
        return self.enrol(f"EDDL1.{self.ca_hash}.{token_id[:32]}.{secret[:64]}", csr_pem)

    def enrol(self, token_text: str, csr_pem: bytes) -> Issued:
        """A certificate for a new node: the token (single use, before its TTL) sets the role."""
        try:
            token = JoinToken.parse(token_text)
            if token.ca_hash != self.ca_hash:
                raise TokenError("the token was made for another cluster CA")
            # Check the CSR before spending the token on it.
            node_id = pki.check_csr(csr_pem)
            role = self.tokens.consume(token, node_id)
        except (TokenError, pki.PkiError) as exc:
            raise EnrolError(str(exc)) from exc
        return self.issue(csr_pem, role)  # issue() reports the spent token with the new serial

    def renew(self, csr_pem: bytes, current: pki.CertInfo) -> Issued:
        """A fresh certificate for the caller's own node id and role (the caller's certificate
        was checked by mTLS and the revocation list)."""
        return self.issue(csr_pem, current.role, node_id=current.node_id)

    def new_token(
        self, role: str = "worker", ttl_s: float = 24 * 3600.0, uses: int = 1, *, node_id: str = ""
    ) -> JoinToken:
        """A join token; with ``node_id``, one that admits that node id only."""
        return self.tokens.create(self.ca_hash, role, ttl_s, uses, node_id=node_id)

    # -- revocation --------------------------------------------------------------------------

    def revoke_node(self, node_id: str) -> list[int]:
        """Revoke every unexpired certificate issued to ``node_id``; the serials revoked."""
        now = self._clock()
        with locked(self.dir / "revoked.json"):
            issued = read_json(self.dir / "issued.json", {})
            serials = [
                int(s)
                for s, rec in issued.items()
                if rec.get("node") == node_id and float(rec.get("not_after", 0)) > now
            ]
            revoked = {int(s): t for s, t in read_json(self.dir / "revoked.json", {}).items()}
            for s in serials:
                revoked[s] = issued[str(s)]["not_after"]
            live = {str(s): t for s, t in revoked.items() if float(t) > now}
            write_private(self.dir / "revoked.json", json.dumps(live).encode())
        if serials:
            self.on_change()
        return serials

    def is_revoked(self, serial: int) -> bool:
        return serial in self._revocations()

    def revocations(self) -> Revocations:
        """The revoked serials with their certificates' expiries, as this process sees them."""
        return Revocations(self.revision, dict(self._revocations()))

    def _revocations(self) -> dict[int, float]:
        path = self.dir / "revoked.json"
        try:
            st = path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._revoked_stamp:
            self._revoked = {int(s): float(t) for s, t in read_json(path, {}).items()}
            self._revoked_stamp = stamp
            self.revision += 1
            self.on_change()  # e.g. `eddl node revoke` on this host
            for listener in list(self.revocation_listeners):
                listener()
        return self._revoked

    # -- the ledger leader candidates share --------------------------------------------------

    def ledger(self) -> Ledger:
        with self._ledger_locked():
            return self._read_ledger()

    def merge(self, theirs: Ledger) -> None:
        """Take in another candidate's ledger: its revocations and spent tokens hold here."""
        with self._ledger_locked():
            issued, revoked, tokens = merge(self._read_ledger(), theirs, self._clock()).files()
            write_private(self.dir / "issued.json", json.dumps(issued).encode())
            write_private(self.dir / "revoked.json", json.dumps(revoked).encode())
            write_private(self.tokens.path, json.dumps(tokens, sort_keys=True).encode())

    @contextlib.contextmanager
    def _ledger_locked(self) -> Iterator[None]:
        issued, revoked = self.dir / "issued.json", self.dir / "revoked.json"
        with locked(issued), locked(revoked), locked(self.tokens.path):
            yield

    def _read_ledger(self) -> Ledger:
        return Ledger.from_files(
            read_json(self.dir / "issued.json", {}),
            read_json(self.dir / "revoked.json", {}),
            read_json(self.tokens.path, {}),
        )

    def _record(self, info: pki.CertInfo) -> None:
        now = self._clock()
        with locked(self.dir / "issued.json"):
            issued = read_json(self.dir / "issued.json", {})
            issued = {s: r for s, r in issued.items() if float(r.get("not_after", 0)) > now}
            issued[str(info.serial)] = {
                "node": info.node_id,
                "role": info.role,
                "not_after": info.not_after,
            }
            write_private(self.dir / "issued.json", json.dumps(issued).encode())
        self.on_change()
