"""Join tokens: ``EDDL1.<sha256 hex of the CA's public key>.<id>.<secret>``.

The token pins the CA (a new node checks the CA it fetches against the hash: no trust on first
use), names a record by ``id`` and proves itself with ``secret``. The leader's store keeps only
the SHA-256 of the secret, the role the token grants, its expiry and how many more nodes it
admits: by default one node, once, before its TTL (``uses`` > 1 only for a fleet that
enrols unattended, such as a Compose cluster's scaled workers). A token may also name the one
node id it admits (the root's token for a ``--can-lead`` worker it promoted, role
``subleader``, admits only ``<worker>.lead``): a CSR for another name is refused and the
token is not spent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eddl.security.files import locked, read_json, write_private

__all__ = ["ROLES_BY_TOKEN", "JoinToken", "TokenError", "TokenStore"]

PREFIX = "EDDL1"
ROLES_BY_TOKEN = ("worker", "gateway", "admin", "subleader")
MAX_TTL_S = 30 * 24 * 3600.0
MAX_TOKENS = 10_000
MAX_USES = 100_000
_TOKEN = re.compile(r"EDDL1\.([0-9a-f]{64})\.([0-9a-f]{12})\.([0-9a-f]{32})")


class TokenError(ValueError):
    """A token is malformed, unknown, expired or already used."""


@dataclass(frozen=True)
class JoinToken:
    ca_hash: str
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}.{self.ca_hash}.{self.token_id}.{self.secret}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        match = _TOKEN.fullmatch(text.strip()[:200]) if isinstance(text, str) else None
        if match is None:
            raise TokenError("not a join token (EDDL1.<ca hash>.<id>.<secret>)")
        return cls(match.group(1), match.group(2), match.group(3))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """The leader's token records in ``path`` (JSON, 0600), shared with ``eddl token create``
    on the leader's host under a file lock."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock

    def create(
        self,
        ca_hash: str,
        role: str = "worker",
        ttl_s: float = 24 * 3600.0,
        uses: int = 1,
        *,
        node_id: str = "",
    ) -> JoinToken:
        if not 1 <= uses <= MAX_USES:
            raise TokenError(f"uses must be within 1 .. {MAX_USES}")
        if role not in ROLES_BY_TOKEN:
            raise TokenError(f"role must be one of {', '.join(ROLES_BY_TOKEN)}")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise TokenError(f"ttl must be within 0 .. {MAX_TTL_S:.0f} seconds")
        token = JoinToken(ca_hash, secrets.token_hex(6), secrets.token_hex(16))
        now = self._clock()
        with locked(self.path):
            records = self._live(now)
            if len(records) >= MAX_TOKENS:
                raise TokenError(f"more than {MAX_TOKENS} live tokens")
            records[token.token_id] = {
                "secret_sha256": _digest(token.secret),
                "role": role,
                "expires_at": now + ttl_s,
                "uses_left": uses,
            }
            if node_id:
                records[token.token_id]["node_id"] = node_id
            self._write(records)
        return token

    def consume(self, token: JoinToken, node_id: str = "") -> str:
        """The role ``token`` grants to ``node_id``; marks it used. TokenError when it cannot
        admit that node (unknown, expired, used, or naming another node: then not spent)."""
        now = self._clock()
        with locked(self.path):
            records = self._live(now)
            record = records.get(token.token_id)
            if record is None or not hmac.compare_digest(
                str(record["secret_sha256"]), _digest(token.secret)
            ):
                raise TokenError("unknown or expired join token")
            if int(str(record.get("uses_left", 0))) < 1:
                raise TokenError("join token already used")
            bound = str(record.get("node_id", ""))
            if bound and node_id != bound:
                raise TokenError(f"this join token admits node {bound!r} only")
            record["uses_left"] = int(str(record["uses_left"])) - 1
            self._write(records)
            return str(record["role"])

    def _live(self, now: float) -> dict[str, dict[str, object]]:
        records = read_json(self.path, {})
        if not isinstance(records, dict):
            raise TokenError(f"{self.path} is not a token store")
        return {
            k: v
            for k, v in records.items()
            if isinstance(v, dict) and float(v.get("expires_at", 0)) > now
        }

    def _write(self, records: dict[str, dict[str, object]]) -> None:
        write_private(self.path, json.dumps(records, sort_keys=True).encode())
