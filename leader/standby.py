"""``Standby``: a leader candidate's receiving side of replication (plain logic, no gRPC).

The root sends each payload (:mod:`eddl.leader.replica`) as numbered chunks that all repeat
one header. A :class:`PayloadAssembler` checks every chunk as it arrives (credential, order,
agreeing headers, the size bound); :meth:`Standby.accept` then checks the term against the
highest one this standby has seen, the length and the SHA-256 of the whole payload, decodes
it, and only then merges it into the store and records the term. Any refusal raises before a
write, so a bad payload changes nothing. The cluster CA's ledger in a payload goes to ``pki``
(the candidate's authority merges it). A snapshot (what a new root sends first) replaces the
standby's jobs, versions and events: a candidate that was root before may hold versions the
new root never had, and those must not shadow the new root's versions of the same numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from eddl.leader.checkpoint import CheckpointStore, LeadershipRecord
from eddl.leader.errors import InvalidArgumentError, JoinRefusedError, StaleTermError
from eddl.leader.replica import PkiOp, ReplicaError, apply, decode, newest_version
from eddl.security.ledger import Ledger

__all__ = ["Chunk", "PayloadAssembler", "ReplicaAck", "Standby"]


@dataclass(frozen=True)
class Chunk:
    credential: str
    term: int
    leader_id: str
    seq: int
    version: int
    snapshot: bool
    index: int
    count: int
    total_bytes: int
    sha256: bytes
    data: bytes

    def header(self) -> tuple[object, ...]:
        return (self.credential, self.term, self.leader_id, self.seq, self.version,
                self.snapshot, self.count, self.total_bytes, self.sha256)  # fmt: skip


@dataclass(frozen=True)
class ReplicaAck:
    term: int
    seq: int
    version: int


class PayloadAssembler:
    """Collects one payload's chunks, refusing the first one that does not fit."""

    def __init__(self, credential: str, max_bytes: int) -> None:
        self._credential = credential.encode()
        self._max = max_bytes
        self._first: Chunk | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: Chunk) -> None:
        if not hmac.compare_digest(chunk.credential.encode(), self._credential):
            raise JoinRefusedError("replication refused: wrong cluster credential")
        first = self._first
        if first is None:
            if chunk.count < 1 or chunk.total_bytes > self._max or len(chunk.sha256) != 32:
                raise InvalidArgumentError(
                    f"replica header refused: count {chunk.count}, {chunk.total_bytes} bytes "
                    f"(limit {self._max}), sha256 of {len(chunk.sha256)} bytes"
                )
            self._first = first = chunk
        elif chunk.header() != first.header():
            raise InvalidArgumentError(f"replica chunk {chunk.index} disagrees with chunk 0")
        if chunk.index != len(self._parts) or chunk.index >= chunk.count:
            raise InvalidArgumentError(
                f"replica chunk {chunk.index} out of order (expected {len(self._parts)})"
            )
        self._size += len(chunk.data)
        if self._size > first.total_bytes:
            raise InvalidArgumentError(f"replica chunks exceed the announced {first.total_bytes}")
        self._parts.append(chunk.data)

    def payload(self) -> tuple[Chunk, bytes]:
        """The header chunk and the whole payload, once every chunk arrived intact."""
        first = self._first
        if first is None:
            raise InvalidArgumentError("empty replica stream")
        if len(self._parts) != first.count or self._size != first.total_bytes:
            raise InvalidArgumentError(
                f"truncated replica: {len(self._parts)}/{first.count} chunks, "
                f"{self._size}/{first.total_bytes} bytes"
            )
        data = b"".join(self._parts)
        if not hmac.compare_digest(hashlib.sha256(data).digest(), first.sha256):
            raise InvalidArgumentError("corrupted replica: SHA-256 mismatch")
        return first, data


class Standby:
    """Persists what the root replicates; refuses lower terms and damaged payloads."""

    def __init__(
        self, store: CheckpointStore, credential: str, *, max_bytes: int = 512 << 20
    ) -> None:
        if not credential:
            raise ValueError("a standby needs the cluster credential")
        self.store = store
        self.credential = credential
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # payloads land one at a time
        self.version = 0
        self.applied_at = 0.0
        # True while this candidate is (or is becoming) root: its store is then its own.
        self.is_root: Callable[[], bool] = lambda: False
        # Takes in the root's CA ledger (mtls candidates: their authority's merge).
        self.pki: Callable[[Ledger], None] | None = None
        for job in store.jobs():
            versions = store.versions(job.job_id)
            if versions:
                self.version = max(self.version, versions[-1])

    @property
    def term(self) -> int:
        record = self.store.leadership()
        return record.term if record is not None else 0

    def assembler(self) -> PayloadAssembler:
        return PayloadAssembler(self.credential, self.max_bytes)

    def accept(self, assembler: PayloadAssembler) -> ReplicaAck:
        """Check the assembled payload whole, then persist it and the sender's term."""
        head, data = assembler.payload()
        with self._lock:
            if self.is_root():
                raise StaleTermError(
                    f"replica of term {head.term} refused: this candidate is root now"
                )
            if head.term < self.term:
                raise StaleTermError(f"replica of term {head.term}; this standby saw {self.term}")
            try:
                ops = decode(data)
            except ReplicaError as exc:
                raise InvalidArgumentError(str(exc)) from exc
            record = self.store.leadership()
            if record is None or record.term != head.term:
                self.store.save_leadership(
                    LeadershipRecord(head.term, head.leader_id, "", time.time())
                )
            if head.snapshot:  # the root's state replaces whatever this standby held
                self.store.reset()
                self.version = 0
            apply(self.store, ops)
            for op in ops:
                if isinstance(op, PkiOp) and self.pki is not None:
                    self.pki(op.ledger)
            self.version = max(self.version, newest_version(ops))
            self.applied_at = time.monotonic()
            return ReplicaAck(head.term, head.seq, self.version)
