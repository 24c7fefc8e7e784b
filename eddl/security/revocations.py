"""The root's revocation list on its way to sub-leaders, and a sub-leader's copy of it.

A sub-leader serves its group with its own certificate, but the revocation list is the root's
(``eddl node revoke`` on the root's host). The root answers ``Security/WatchRevocations``, for
role ``subleader`` only, with its whole list at once and again each time the list changes
(:class:`RevocationFeed`: a change wakes every open stream; the root notices a change of
``revoked.json`` on its next authenticated call, and a sub-leader's heartbeat is one). The
sub-leader keeps the stream open over its upward mTLS channel (:class:`RevocationWatch`,
reopened when it breaks) and refuses the serials of its copy (:class:`RevocationList`) on
every call to its group's endpoint, through the same
:class:`~eddl.security.authz.CertificateAuth` check the root uses. A sub-leader serves its
group only once it holds a first list, so a revocation made before it started holds too.

A list is checked whole before anything changes (at most :data:`MAX_REVOKED` entries, serials
of 1..20 bytes, finite expiries): a bad one is refused and the copy stays as it was. Lists are
merged, never replace: a revocation only goes away with its certificate's expiry, so a late or
repeated list cannot undo one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import grpc

from eddl.log import get_logger
from eddl.proto.v1 import security_pb2, security_pb2_grpc
from eddl.security.ledger import MAX_ENTRIES

__all__ = [
    "MAX_REVOKED",
    "RevocationFeed",
    "RevocationList",
    "RevocationListError",
    "RevocationWatch",
    "Revocations",
]

log = get_logger("security.revocations")

MAX_REVOKED = MAX_ENTRIES  # as many as the root's ledger may hold
MAX_SERIAL_BYTES = 20  # RFC 5280


class RevocationListError(ValueError):
    """A revocation list that is malformed or over its bounds: refused whole."""


@dataclass(frozen=True)
class Revocations:
    """The live revoked certificates: serial -> expiry (POSIX seconds)."""

    revision: int
    entries: Mapping[int, float]

    def to_proto(self) -> security_pb2.RevocationList:
        # The latest expiries first: were there more than the bound, the longest-lived stay.
        kept = sorted(self.entries.items(), key=lambda e: -e[1])[:MAX_REVOKED]
        return security_pb2.RevocationList(
            revision=self.revision,
            revoked=[
                security_pb2.RevokedCertificate(
                    serial=serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"),
                    not_after=not_after,
                )
                for serial, not_after in kept
            ],
        )

    @classmethod
    def from_proto(cls, message: security_pb2.RevocationList) -> Revocations:
        """Checked whole: the count first, then every entry."""
        count = len(message.revoked)
        if count > MAX_REVOKED:
            raise RevocationListError(f"{count} revoked certificates; at most {MAX_REVOKED}")
        entries: dict[int, float] = {}
        for entry in message.revoked:
            if not 1 <= len(entry.serial) <= MAX_SERIAL_BYTES:
                raise RevocationListError(f"a serial holds 1..{MAX_SERIAL_BYTES} bytes")
            serial = int.from_bytes(entry.serial, "big")
            if serial == 0:
                raise RevocationListError("a serial is positive")
            if not math.isfinite(entry.not_after) or not 0 <= entry.not_after < 1e11:
                raise RevocationListError("an expiry is a finite time")
            entries[serial] = max(entry.not_after, entries.get(serial, entry.not_after))
        return cls(message.revision, entries)


class RevocationList:
    """A sub-leader's copy of the root's list: the serials its group's endpoint refuses."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: dict[int, float] = {}
        self.revision = 0  # the root's revision of the last list taken
        self.lists = 0  # lists taken

    def apply(self, message: security_pb2.RevocationList) -> None:
        """Merge a list from the root; a bad one raises :class:`RevocationListError` and
        changes nothing."""
        theirs = Revocations.from_proto(message)
        now = self._clock()
        merged = {s: t for s, t in self._entries.items() if t > now}
        for serial, not_after in theirs.entries.items():
            if not_after > now:
                merged[serial] = max(not_after, merged.get(serial, not_after))
        if len(merged) > MAX_REVOKED:
            raise RevocationListError(f"more than {MAX_REVOKED} live revoked certificates")
        self._entries = merged
        self.revision = theirs.revision
        self.lists += 1

    def is_revoked(self, serial: int) -> bool:
        return serial in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class RevocationFeed:
    """The root's side: each watcher gets the list now and again after every change."""

    def __init__(
        self,
        current: Callable[[], Revocations],
        listeners: list[Callable[[], None]],
    ) -> None:
        self._current = current
        self._listeners = listeners  # the authority calls each one when its list changed

    async def watch(self) -> AsyncIterator[Revocations]:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:  # from whichever thread saw the change
            loop.call_soon_threadsafe(woken.set)

        self._listeners.append(wake)
        try:
            while True:
                woken.clear()  # before the snapshot: a change after it wakes this loop
                yield self._current()
                await woken.wait()
        finally:
            self._listeners.remove(wake)


class RevocationWatch:
    """A sub-leader's side: keeps a ``WatchRevocations`` stream open to its leader over
    ``channel()`` (the current upward channel) and merges every list into ``revocations``.
    ``ready`` is set once a first list is held."""

    def __init__(
        self,
        revocations: RevocationList,
        channel: Callable[[], grpc.aio.Channel],
        *,
        retry_s: float = 1.0,
    ) -> None:
        self.revocations = revocations
        self._channel = channel
        self._retry_s = retry_s
        self.ready = asyncio.Event()
        self.breaks = 0  # streams that ended in an error (refused, unreachable)
        self.refused = 0  # lists refused

    async def run(self) -> None:
        while True:
            stub = security_pb2_grpc.SecurityStub(self._channel())
            try:
                async for message in stub.WatchRevocations(security_pb2.WatchRevocationsRequest()):
                    self.take(message)
            except grpc.aio.AioRpcError as exc:
                self.breaks += 1
                log.warning("revocation stream ended", code=exc.code().name)
            # Broken (the leader restarted or is away): open it again after a pause.
            await asyncio.sleep(self._retry_s)

    def take(self, message: security_pb2.RevocationList) -> bool:
        """Merge one list; whether it was taken (a bad one is logged and changes nothing)."""
        try:
            self.revocations.apply(message)
        except RevocationListError as exc:
            self.refused += 1
            log.warning("revocation list refused", error=str(exc)[:200])
            return False
        self.ready.set()
        log.info(
            "revocation list received",
            revision=self.revocations.revision,
            revoked=len(self.revocations),
        )
        return True
