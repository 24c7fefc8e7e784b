"""The root's sending side of replication: every committed write reaches the standbys first.

:class:`ReplicatingStore` wraps the root's checkpoint store. The store writer thread commits
each :class:`~eddl.leader.checkpoint.WriteBatch` locally, then hands it to the
:class:`Replicator` on the event loop and waits (bounded) until ``min_replicas`` live standbys
have persisted it; only then does the command's reply - a worker's update acknowledgement -
go out. A standby that is new or missed a payload gets a full snapshot first. With no live
standby the root keeps going and says so (``degraded``); a standby that does not answer within
``timeout_s`` is marked behind and skipped until it catches up with a snapshot.

``on_committed`` hears each replicated model version with the standbys holding it (the
elected root records it in etcd, so only holders of the newest version may stand) and says
whether it was recorded. A version that reached too few standbys and was not recorded either
is *unprotected*: were the root to fail, a standby without it could stand. ``on_unprotected``
hears it before the command's reply goes out (the elected root steps down, so the reply is
withheld; see :class:`~eddl.leader.servicers.root_only.RootOnly`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc

from eddl.leader.checkpoint import (
    CheckpointStore,
    JobRecord,
    LeadershipRecord,
    MemberRecord,
    VersionRecord,
    WriteBatch,
)
from eddl.leader.events import Event
from eddl.leader.replica import JobOp, Op, encode, newest_version, snapshot
from eddl.log import get_logger
from eddl.net import open_channel
from eddl.proto.v1 import peer_pb2, peer_pb2_grpc
from eddl.security.tls import leader_server_name

__all__ = ["ReplicatingStore", "ReplicationResult", "Replicator", "StandbyView"]

log = get_logger("leader.replication")


@dataclass(frozen=True)
class StandbyView:
    address: str
    version: int  # the newest version it acknowledged
    lag: int  # versions behind the root
    synced: bool
    error: str


@dataclass(frozen=True)
class ReplicationResult:
    holders: tuple[str, ...]  # standbys that persisted the payload
    degraded: bool  # fewer than min_replicas standbys hold it (or none is live)


@dataclass
class _Link:
    address: str
    channel: grpc.aio.Channel
    stub: peer_pb2_grpc.PeerStub
    synced: bool = False
    version: int = 0
    error: str = ""
    # One send at a time to a standby, in order (a catch-up's snapshot, then the writes).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Replicator:
    credential: str
    leader_id: str
    term: Callable[[], int]
    snapshot: Callable[[], list[Op]]
    credentials: grpc.ChannelCredentials | None = None
    min_replicas: int = 1
    timeout_s: float = 2.0
    chunk_bytes: int = 1 << 20
    _links: dict[str, _Link] = field(default_factory=dict)
    _seq: int = 0
    version: int = 0
    degraded: bool = True
    # Totals for the benchmark and the logs: payload bytes sent (snapshots apart), versions.
    sent_bytes: int = 0
    snapshot_bytes: int = 0
    versions_sent: int = 0

    async def set_standbys(self, addresses: Sequence[str]) -> None:
        """The live standbys (from the election's candidates); links open and close here."""
        wanted = set(addresses)
        for address in list(self._links):
            if address not in wanted:
                await self._links.pop(address).channel.close()
        for address in sorted(wanted - set(self._links)):
            # mTLS: a standby must show a leader's certificate for its address.
            name = leader_server_name(address) if self.credentials is not None else ""
            channel = open_channel(address, credentials=self.credentials, server_name=name)
            self._links[address] = _Link(address, channel, peer_pb2_grpc.PeerStub(channel))
        self.degraded = not self._links or self.degraded

    def views(self) -> list[StandbyView]:
        return [
            StandbyView(l.address, l.version, max(0, self.version - l.version), l.synced, l.error)
            for l in self._links.values()  # noqa: E741
        ]

    async def replicate(self, ops: list[Op]) -> ReplicationResult:
        self.version = max(self.version, newest_version(ops))
        links = list(self._links.values())
        if not links:
            self.degraded = True
            return ReplicationResult((), True)
        self._seq += 1
        payload = encode(ops)
        version = newest_version(ops)
        results = await asyncio.gather(*(self._ship(link, payload, version) for link in links))
        if version:
            self.versions_sent += 1
        holders = tuple(link.address for link, ok in zip(links, results, strict=True) if ok)
        self.degraded = len(holders) < min(self.min_replicas, len(links)) or not holders
        return ReplicationResult(holders, self.degraded)

    async def catch_up(self) -> bool:
        """Send a snapshot now to every standby not in sync (one that just joined, or fell
        behind) rather than with the next write: a root with nothing more to write (its job
        done) still brings a new standby up to date. Whether every standby is in sync."""
        links = [link for link in self._links.values() if not link.synced]
        if links:
            await asyncio.gather(*(self._ship(link, None, 0) for link in links))
            held = sum(link.synced for link in self._links.values())
            self.degraded = not held or held < min(self.min_replicas, len(self._links))
        return all(link.synced for link in self._links.values())

    async def close(self) -> None:
        for link in self._links.values():
            await link.channel.close()
        self._links.clear()

    async def _ship(self, link: _Link, payload: bytes | None, version: int) -> bool:
        """Bring ``link`` in sync with a snapshot when it is not, then send ``payload`` (None:
        the snapshot alone); whether the standby holds it."""
        async with link.lock:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if not link.synced:
                        ops = await asyncio.to_thread(self.snapshot)
                        await self._send(link, encode(ops), newest_version(ops), snapshot=True)
                        link.synced = True
                    if payload is not None:
                        await self._send(link, payload, version, snapshot=False)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else "timed out"
                if link.synced or link.error != detail:
                    log.warning("standby behind", standby=link.address, error=detail)
                link.synced, link.error = False, str(detail)
                return False
            link.error = ""
            return True

    async def _send(self, link: _Link, payload: bytes, version: int, *, snapshot: bool) -> None:
        digest = hashlib.sha256(payload).digest()
        size = self.chunk_bytes
        count = max(1, -(-len(payload) // size))
        term = self.term()

        async def chunks() -> AsyncIterator[peer_pb2.ReplicaChunk]:
            for index in range(count):
                yield peer_pb2.ReplicaChunk(
                    credential=self.credential, term=term, leader_id=self.leader_id,
                    seq=self._seq, version=version, snapshot=snapshot, index=index,
                    count=count, total_bytes=len(payload), sha256=digest,
                    data=payload[index * size : (index + 1) * size],
                )  # fmt: skip

        ack = await link.stub.Replicate(chunks())
        link.version = max(link.version, int(ack.version))
        if snapshot:
            self.snapshot_bytes += len(payload)
        else:
            self.sent_bytes += len(payload)


class ReplicatingStore(CheckpointStore):
    """``store``, whose every write is replicated before the call returns (bounded wait)."""

    def __init__(
        self,
        store: CheckpointStore,
        replicator: Replicator,
        loop: asyncio.AbstractEventLoop,
        *,
        on_committed: Callable[[int, tuple[str, ...]], Awaitable[bool]] | None = None,
        on_unprotected: Callable[[int], None] | None = None,
        wait_s: float = 5.0,
    ) -> None:
        self.store = store
        self.replicator = replicator
        self._loop = loop
        self._on_committed = on_committed
        self._on_unprotected = on_unprotected
        self._wait_s = wait_s

    def _replicate(self, ops: list[Op]) -> None:
        version = newest_version(ops)

        async def go() -> None:
            result = await self.replicator.replicate(ops)
            recorded = False
            if version and self._on_committed is not None:
                recorded = await self._on_committed(version, result.holders)
            if version and result.degraded and not recorded:
                self._unprotected(version)

        future = asyncio.run_coroutine_threadsafe(go(), self._loop)
        try:
            future.result(timeout=self._wait_s)
        except TimeoutError:
            future.cancel()
            self.replicator.degraded = True
            log.warning("replication wait exceeded", wait_s=self._wait_s)
            if version:  # scheduled before the reply, which goes to the loop after this
                self._loop.call_soon_threadsafe(self._unprotected, version)

    def _unprotected(self, version: int) -> None:
        log.warning("version unprotected", version=version)
        if self._on_unprotected is not None:
            self._on_unprotected(version)

    def commit(self, batch: WriteBatch) -> None:
        self.store.commit(batch)
        if replace(batch, leadership=None):  # the term is each candidate's own record
            self._replicate([batch])

    def add_job(self, job_id: str, spec: Mapping[str, Any], status: str, at: float) -> None:
        self.store.add_job(job_id, spec, status, at)
        job = self.store.job(job_id)
        assert job is not None
        self._replicate(
            [JobOp(job.job_id, job.spec, job.status, job.created_at, job.updated_at, job.result)]
        )

    # -- reads go straight to the store ---------------------------------------------------------
    def job(self, job_id: str) -> JobRecord | None:
        return self.store.job(job_id)

    def jobs(self) -> list[JobRecord]:
        return self.store.jobs()

    def load_version(self, job_id: str, version: int) -> VersionRecord | None:
        return self.store.load_version(job_id, version)

    def versions(self, job_id: str) -> list[int]:
        return self.store.versions(job_id)

    def members(self) -> list[MemberRecord]:
        return self.store.members()

    def leadership(self) -> LeadershipRecord | None:
        return self.store.leadership()

    def events(self, job_id: str, since: int = 0) -> list[Event]:
        return self.store.events(job_id, since)

    def get_value(self, key: str) -> Any:
        return self.store.get_value(key)

    def set_value(self, key: str, value: Any) -> None:
        self.store.set_value(key, value)

    def close(self) -> None:
        self.store.close()


def snapshot_of(store: CheckpointStore) -> Callable[[], list[Op]]:
    """The snapshot source of a :class:`Replicator` for ``store`` (read beside the loop)."""
    return lambda: snapshot(store)
