"""The authority's ledger: issued serials, revoked serials and join-token records.

Leader candidates exchange it (the ``pki`` op of :mod:`eddl.leader.replica`), so that a
promoted candidate refuses what the old root revoked or spent. Its wire form is the three
files of ``<state_dir>/pki`` side by side (``issued.json``, ``revoked.json``,
``tokens.json``). Merging is monotone, so a ledger sent twice, late or out of order changes
nothing twice: issued and revoked serials are unions (expired ones dropped), a token's
remaining uses only go down, and a token one side does not know is added (with the node id
it may name, which no merge drops). Every entry of a
ledger read from a peer is checked and bounded before it is used (:class:`LedgerError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eddl.security import pki
from eddl.security.tokens import MAX_USES, ROLES_BY_TOKEN

__all__ = ["NODE_ROLES", "IssuedCert", "Ledger", "LedgerError", "TokenRecord", "merge"]

NODE_ROLES = ("worker", "gateway", "admin", "leader", "subleader")

MAX_ENTRIES = 50_000  # per table: ~5.5 MB of JSON at most, within a state file's bound
_SERIAL_MAX = 1 << 160  # RFC 5280: at most 20 octets
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")


class LedgerError(ValueError):
    """A ledger entry that is malformed or out of range."""


@dataclass(frozen=True)
class IssuedCert:
    node: str
    role: str
    not_after: float


@dataclass(frozen=True)
class TokenRecord:
    secret_sha256: str
    role: str
    expires_at: float
    uses_left: int
    node_id: str = ""  # the one node the token admits ("": any)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "secret_sha256": self.secret_sha256,
            "role": self.role,
            "expires_at": self.expires_at,
            "uses_left": self.uses_left,
        }
        if self.node_id:
            record["node_id"] = self.node_id
        return record


@dataclass(frozen=True)
class Ledger:
    issued: Mapping[int, IssuedCert]
    revoked: Mapping[int, float]  # serial -> the certificate's expiry
    tokens: Mapping[str, TokenRecord]

    @classmethod
    def from_files(cls, issued: Any, revoked: Any, tokens: Any) -> Ledger:
        """From the JSON of the three files (or of a peer's ``pki`` op)."""
        return cls(
            {_serial(s): _issued(r) for s, r in _table(issued, "issued").items()},
            {_serial(s): _time(t) for s, t in _table(revoked, "revoked").items()},
            {_token_id(k): _token(r) for k, r in _table(tokens, "tokens").items()},
        )

    def files(self) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        """The JSON of ``issued.json``, ``revoked.json`` and ``tokens.json``."""
        return (
            {str(s): {"node": c.node, "role": c.role, "not_after": c.not_after}
             for s, c in self.issued.items()},
            {str(s): t for s, t in self.revoked.items()},
            {k: r.to_json() for k, r in self.tokens.items()},
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        issued, revoked, tokens = self.files()
        return {"issued": issued, "revoked": revoked, "tokens": tokens}

    @classmethod
    def from_dict(cls, raw: Any) -> Ledger:
        if not isinstance(raw, dict):
            raise LedgerError("a ledger is an object")
        return cls.from_files(raw.get("issued", {}), raw.get("revoked", {}), raw.get("tokens", {}))


def merge(ours: Ledger, theirs: Ledger, now: float) -> Ledger:
    """Both ledgers in one; what expired by ``now`` is dropped."""
    issued = {s: c for s, c in {**theirs.issued, **ours.issued}.items() if c.not_after > now}
    revoked: dict[int, float] = {}
    for serial, not_after in [*ours.revoked.items(), *theirs.revoked.items()]:
        revoked[serial] = max(not_after, revoked.get(serial, not_after))
    revoked = {s: t for s, t in revoked.items() if t > now}
    tokens = dict(ours.tokens)
    for key, record in theirs.tokens.items():
        mine = tokens.get(key)
        if mine is None:
            tokens[key] = record
        elif mine.secret_sha256 == record.secret_sha256 and record.uses_left < mine.uses_left:
            tokens[key] = TokenRecord(mine.secret_sha256, mine.role, mine.expires_at,
                                      record.uses_left, mine.node_id or record.node_id)  # fmt: skip
    tokens = {k: r for k, r in tokens.items() if r.expires_at > now}
    return Ledger(issued, revoked, tokens)


# -- checks of one entry -----------------------------------------------------------------------
def _table(raw: Any, name: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise LedgerError(f"the {name} table is not an object")
    if len(raw) > MAX_ENTRIES:
        raise LedgerError(f"the {name} table has more than {MAX_ENTRIES} entries")
    return raw


def _serial(text: Any) -> int:
    if not isinstance(text, str) or not text.isdigit() or len(text) > 50:
        raise LedgerError(f"not a certificate serial: {str(text)[:32]!r}")
    serial = int(text)
    if serial >= _SERIAL_MAX:
        raise LedgerError("certificate serial out of range")
    return serial


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LedgerError("a time is a number of seconds")
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise LedgerError("time out of range")
    return float(value)


def _issued(raw: Any) -> IssuedCert:
    if not isinstance(raw, dict) or raw.get("role") not in NODE_ROLES:
        raise LedgerError("an issued certificate needs a node, a known role and an expiry")
    try:
        node = pki.check_node_id(raw.get("node"))  # type: ignore[arg-type]
    except pki.PkiError as exc:
        raise LedgerError(str(exc)) from exc
    return IssuedCert(node, str(raw["role"]), _time(raw.get("not_after")))


def _token_id(text: Any) -> str:
    if not isinstance(text, str) or not _TOKEN_ID.fullmatch(text):
        raise LedgerError(f"not a token id: {str(text)[:32]!r}")
    return text


def _token(raw: Any) -> TokenRecord:
    if not isinstance(raw, dict) or raw.get("role") not in ROLES_BY_TOKEN:
        raise LedgerError("a token record needs a known role")
    digest, uses = raw.get("secret_sha256"), raw.get("uses_left")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise LedgerError("a token record needs the SHA-256 of its secret")
    if isinstance(uses, bool) or not isinstance(uses, int) or not 0 <= uses <= MAX_USES:
        raise LedgerError(f"a token's uses left must be within 0 .. {MAX_USES}")
    node = raw.get("node_id", "")
    if node != "":
        try:
            node = pki.check_node_id(node)
        except pki.PkiError as exc:
            raise LedgerError(str(exc)) from exc
    return TokenRecord(digest, str(raw["role"]), _time(raw.get("expires_at")), uses, node)
