"""``HaNode``: a leader candidate of a highly available cluster (``--coordinator etcd://...``).

It ties the pieces together for :class:`~eddl.leader.server.LeaderDaemon`:

* the election (:class:`~eddl.leader.election.EtcdLeadership`) behind a
  :class:`PromotionGate`: the daemon acts as root only once the elected candidate has resumed
  the job from its replicated state (before that, callers are told ``not-leader``);
* the standby side (:class:`~eddl.leader.standby.Standby` behind the Peer service), which
  publishes each replicated version as this candidate's version in etcd;
* the root side: a :class:`~eddl.leader.replication.ReplicatingStore` for the coordinator,
  whose standbys are the other live candidates, and which records each committed version and
  its holders in etcd (only holders of the newest committed version may stand);
* the candidate's bandwidth score: the profiler's probe of the other candidates;
* with mTLS, the cluster CA's ledger (issued and revoked serials, join tokens): the root sends
  it in every snapshot and whenever it changes (an enrolment or renewal waits, bounded, until
  the standbys hold it), and a standby merges it, so a promoted candidate refuses what the old
  root revoked or spent.

A root that steps down stops (``stepped_down``); its supervisor starts it again as a standby,
which then catches up from the new root with a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from eddl.leader.checkpoint import CheckpointStore
from eddl.leader.election import Candidate, ElectionConfig, ElectionEvent, EtcdLeadership
from eddl.leader.etcd import EtcdClient, EtcdError, parse_coordinator
from eddl.leader.ports import Leadership, LeadershipState
from eddl.leader.replica import Op, PkiOp, snapshot
from eddl.leader.replication import ReplicatingStore, Replicator
from eddl.leader.servicers.peer import PeerServicer
from eddl.leader.standby import ReplicaAck, Standby
from eddl.log import get_logger
from eddl.security.authority import Authority
from eddl.security.ledger import LedgerError

__all__ = ["HaConfig", "HaNode", "PromotionGate"]

log = get_logger("leader.ha")
CATCH_UP_FIRST_S, CATCH_UP_MAX_S = 0.5, 5.0  # retries of a snapshot to an unreachable standby


@dataclass(frozen=True)
class HaConfig:
    coordinator: str  # etcd://HOST:PORT[,HOST:PORT...]
    node_id: str
    advertise: str  # this candidate's address for workers and peers
    credential: str  # the cluster's shared credential (the join token)
    lease_ttl_s: int = 3
    margin_s: float = 1.0
    min_replicas: int = 1
    replication_timeout_s: float = 2.0
    probe_score: bool = True
    # mTLS: this candidate's certificate (role leader) for replication to the others; they
    # must share the cluster CA (docs/high-availability.md). None: plaintext (--insecure).
    channel_credentials: grpc.ChannelCredentials | None = None


class PromotionGate(Leadership):
    """Root only once the elected term has been taken up (state resumed)."""

    def __init__(self, inner: Leadership) -> None:
        self.inner = inner
        self.promoted_term = 0

    def state(self) -> LeadershipState:
        state = self.inner.state()
        if state.is_root and state.term != self.promoted_term:
            return LeadershipState(state.term, False, "")
        return state

    def subscribe(self, listener: Callable[[LeadershipState], None]) -> Callable[[], None]:
        return self.inner.subscribe(listener)


class HaNode:
    def __init__(
        self, config: HaConfig, store: CheckpointStore, authority: Authority | None = None
    ) -> None:
        self.config = config
        self.authority = authority
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client = EtcdClient(parse_coordinator(config.coordinator))
        self.standby = Standby(store, config.credential)
        self.election = EtcdLeadership(
            self.client,
            ElectionConfig(
                config.node_id,
                config.advertise,
                ttl_s=config.lease_ttl_s,
                margin_s=config.margin_s,
            ),
            version=self.standby.version,
        )
        self.leadership = PromotionGate(self.election)
        self.replicator = Replicator(
            credential=config.credential,
            credentials=config.channel_credentials,
            leader_id=config.node_id,
            term=lambda: self.election.term,
            snapshot=lambda: [*snapshot(store), *self._ledger_ops()],
            min_replicas=config.min_replicas,
            timeout_s=config.replication_timeout_s,
        )
        # Once elected, nothing may write into this candidate's store but itself.
        self.standby.is_root = lambda: self.election.state().is_root
        self.peer = PeerServicer(self.standby, on_applied=self._applied)
        if authority is not None:
            self.standby.pki = authority.merge
            authority.on_change = self._ledger_changed
        self._store = store
        self._tasks: list[asyncio.Task[Any]] = []
        self._catching: asyncio.Task[None] | None = None  # the standbys being brought up to date
        self._peers: list[Candidate] = []
        self.events: list[ElectionEvent] = []
        self.stepped_down = asyncio.Event()
        # Hears every candidate's address (this one first) - the leader list workers get.
        self.on_addresses: Callable[[list[str]], None] | None = None

    def replicating_store(self) -> ReplicatingStore:
        return ReplicatingStore(
            self._store,
            self.replicator,
            asyncio.get_running_loop(),
            on_committed=self._committed,
            on_unprotected=self._unprotected,
            wait_s=self.config.replication_timeout_s * 2 + 1,
        )

    async def start(self, promote: Callable[[int], Awaitable[None]]) -> None:
        """Campaign; ``promote(term)`` runs once this candidate wins, before it acts as root."""
        self._loop = asyncio.get_running_loop()
        self.election.on_election(self.events.append)
        self.election.on_peers(self._on_peers)
        promoting: list[int] = []

        def changed(state: LeadershipState) -> None:
            if state.is_root and not promoting:
                promoting.append(state.term)
                self._tasks.append(asyncio.create_task(self._promote(state.term, promote)))
            elif not state.is_root and self.leadership.promoted_term:
                self.stepped_down.set()

        self.election.subscribe(changed)
        self._tasks.append(asyncio.create_task(self.election.run()))

    async def _promote(self, term: int, promote: Callable[[int], Awaitable[None]]) -> None:
        try:
            await promote(term)
        except Exception:  # a root that cannot resume must not serve: stop, let another stand
            log.exception("promotion failed", term=term)
            self.stepped_down.set()
            return
        if self.election.state().is_root and self.election.term == term:
            self.leadership.promoted_term = term
            log.info("acting as root", term=term, address=self.config.advertise)
        else:
            self.stepped_down.set()

    def _on_peers(self, peers: list[Candidate]) -> None:
        others = [p for p in peers if p.node_id != self.config.node_id]
        if self.on_addresses is not None:
            self.on_addresses([self.config.advertise, *sorted(p.address for p in others)])
        fresh = {p.address for p in others} != {p.address for p in self._peers}
        self._peers = others
        if not fresh:
            return
        if self._catching is not None:  # a newer set of standbys replaces the one it syncs
            self._catching.cancel()
        self._catching = asyncio.create_task(self._standbys([p.address for p in others]))
        self._tasks.append(self._catching)
        if self.config.probe_score and others:
            self._tasks.append(asyncio.create_task(self._measure_score(others)))

    async def _standbys(self, addresses: list[str]) -> None:
        """Link to the standbys now live; as root, bring new ones up to date at once, trying
        again (0.5 s doubling to 5 s) while one cannot be reached and this node is root."""
        await self.replicator.set_standbys(addresses)
        delay = CATCH_UP_FIRST_S
        while self.election.state().is_root and not await self.replicator.catch_up():
            await asyncio.sleep(delay)
            delay = min(CATCH_UP_MAX_S, 2 * delay)

    async def _measure_score(self, peers: list[Candidate]) -> None:
        """Score = median over peers of min(upload, download) bytes/s (the probe's figures)."""
        from eddl.profiler.probe_client import ProbeClient, ProbeConfig, ProbeError

        figures = []
        for peer in peers:
            with contextlib.suppress(ProbeError, ValueError):
                config = ProbeConfig(payload_bytes=256 * 1024, repeats=2, timeout_s=5.0)
                async with ProbeClient(peer.address, config) as client:
                    result = await client.measure()
                figures.append(min(result.upload_bytes_per_second,
                                   result.download_bytes_per_second))  # fmt: skip
        if figures:
            with contextlib.suppress(EtcdError):
                await self.election.publish(score=statistics.median(figures))

    def _ledger_ops(self) -> list[Op]:
        return [] if self.authority is None else [PkiOp(self.authority.ledger())]

    def _ledger_changed(self) -> None:
        """The CA's ledger changed here, on any thread: a root replicates it. A thread that
        changed it (an enrolment, a renewal) reads it and waits, bounded, until the standbys
        hold it; the event loop (a revocation list seen changed by a call's check) never waits."""
        loop = self._loop
        if loop is None or not self.leadership.state().is_root:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            task = loop.create_task(self._replicate_ledger())
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
            return
        try:
            ops = self._ledger_ops()
        except (LedgerError, OSError) as exc:
            log.error("the CA ledger cannot be read for the standbys", error=str(exc)[:200])
            return
        future = asyncio.run_coroutine_threadsafe(self.replicator.replicate(ops), loop)
        try:
            future.result(timeout=self.config.replication_timeout_s * 2 + 1)
        except TimeoutError:
            future.cancel()
            log.warning("the CA ledger did not reach the standbys in time")

    async def _replicate_ledger(self) -> None:
        try:
            ops = await asyncio.to_thread(self._ledger_ops)
        except (LedgerError, OSError) as exc:
            log.error("the CA ledger cannot be read for the standbys", error=str(exc)[:200])
            return
        await self.replicator.replicate(ops)

    async def _applied(self, ack: ReplicaAck) -> None:
        with contextlib.suppress(EtcdError):
            await self.election.publish(version=ack.version)

    async def _committed(self, version: int, holders: tuple[str, ...]) -> bool:
        """Record ``version`` and its holders in etcd; whether that was done."""
        with contextlib.suppress(EtcdError):
            await self.election.publish(version=version)
            return await self.election.commit(version, [self.config.advertise, *holders])
        return False

    def _unprotected(self, version: int) -> None:
        """``version`` is on this root alone and not recorded in etcd: a standby without it
        could stand. Step down before anyone hears of it."""
        self.election.abdicate(
            f"version {version} reached no standby and could not be recorded in etcd"
        )

    def status(self) -> dict[str, Any]:
        state = self.election.state()
        peers = {p.address: p for p in self._peers}
        root_id = self.config.node_id if state.is_root else ""
        if not root_id:
            root_id = next((p.node_id for p in peers.values() if p.address == state.root_hint), "")
        return {
            "coordinator": self.config.coordinator,
            "term": state.term,
            "root": {"node_id": root_id, "address": state.root_hint},
            "degraded": self.replicator.degraded,
            "committed_version": self.election.committed,
            "standbys": [
                {
                    "node_id": peers[v.address].node_id if v.address in peers else "",
                    "address": v.address,
                    "version": v.version,
                    "lag": v.lag,
                    "synced": v.synced,
                    "error": v.error,
                }
                for v in self.replicator.views()
            ],
        }

    async def close(self) -> None:
        rep = self.replicator
        if rep.versions_sent:
            log.info(
                "replication totals",
                bytes=rep.sent_bytes,
                snapshot_bytes=rep.snapshot_bytes,
                versions=rep.versions_sent,
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.replicator.close()
        await self.client.aclose()
