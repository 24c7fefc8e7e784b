"""``EtcdLeadership``: the etcd adapter of the :class:`~eddl.leader.ports.Leadership` port.

Keys under ``prefix`` (default ``/eddl``):

* ``root``: the root's id and address, under the root's lease. Its create revision is the
  **term**, a fencing token: a new root always holds a higher one.
* ``candidates/<id>``: each candidate's address, bandwidth score (the profiler's probe figures)
  and newest model version, under the candidate's own lease (gone when it dies).
* ``committed``: the newest version the root has acknowledged and the nodes holding it, written
  only while the writer's term still holds the root key (a guarded transaction).

Who wins: when the root key is free, a candidate stands back if a live peer holds a newer
version, or the same version and a higher score, or if it lacks the committed version;
otherwise it races with a create-if-absent transaction under its lease. One watch on the
prefix drives every re-evaluation; nothing polls.

A root that has not renewed its lease within ``ttl - margin`` seconds of the monotonic clock
(counted from when the renewal was *sent*, before etcd's own clock starts) stops acting as root
at once - :meth:`state` says so - and so before etcd can expire the lease and let another
candidate in. It then revokes its lease and stands again under a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from eddl.leader.etcd import EtcdClient, EtcdError, KeyValue, prefix_end
from eddl.leader.ports import Clock, Leadership, LeadershipState
from eddl.log import get_logger

__all__ = [
    "Candidate",
    "ElectionConfig",
    "ElectionEvent",
    "ElectionEventKind",
    "EtcdLeadership",
    "should_stand",
]

log = get_logger("leader.election")


class ElectionEventKind(StrEnum):
    ELECTED = "elected"  # this candidate took the free root key
    TAKEOVER = "takeover"  # ... after another root's term ended
    STEP_DOWN = "step_down"  # this root stopped acting as root
    FOLLOWING = "following"  # another candidate is root
    STANDING_BACK = "standing_back"  # the root key is free but a better candidate lives


@dataclass(frozen=True)
class ElectionEvent:
    kind: ElectionEventKind
    term: int
    root: str  # the root's address ("" when none)
    reason: str


@dataclass(frozen=True)
class Candidate:
    """What a candidate publishes under its lease."""

    node_id: str
    address: str
    score: float  # bandwidth score, bytes/s (higher is better)
    version: int  # newest model version it holds

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Candidate | None:
        try:
            raw = json.loads(data)
            return cls(str(raw["node_id"]), str(raw["address"]), float(raw["score"]),
                       int(raw["version"]))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class ElectionConfig:
    node_id: str
    address: str
    ttl_s: int = 3
    margin_s: float = 1.0  # a root stops acting this long before its lease could expire
    prefix: str = "/eddl"

    def __post_init__(self) -> None:
        if self.ttl_s < 2:
            raise ValueError("the lease TTL must be at least 2 s")
        if not 0 < self.margin_s < self.ttl_s / 2:
            raise ValueError("the safety margin must lie in (0, ttl/2)")
        if not self.node_id or "/" in self.node_id:
            raise ValueError(f"candidate id must be non-empty without '/', got {self.node_id!r}")


def should_stand(me: Candidate, peers: list[Candidate], committed: int) -> str:
    """ "" when ``me`` may race for the free root key, else why it stands back."""
    if me.version < committed:
        return f"holds version {me.version}, below the committed version {committed}"
    for peer in peers:
        if peer.node_id == me.node_id:
            continue
        if peer.version > me.version:
            return f"{peer.node_id} holds newer version {peer.version}"
        if peer.version == me.version and peer.score > me.score:
            return f"{peer.node_id} has the same version and a higher score {peer.score:.0f}"
    return ""


class EtcdLeadership(Leadership):
    def __init__(
        self,
        client: EtcdClient,
        config: ElectionConfig,
        *,
        score: float = 0.0,
        version: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self.config = config
        self._clock = clock
        self._me = Candidate(config.node_id, config.address, score, version)
        p = config.prefix.rstrip("/").encode()
        self._root_key = p + b"/root"
        self._committed_key = p + b"/committed"
        self._candidates = p + b"/candidates/"
        self._prefix = p + b"/"
        self._listeners: list[Callable[[LeadershipState], None]] = []
        self._event_listeners: list[Callable[[ElectionEvent], None]] = []
        self._peer_listeners: list[Callable[[list[Candidate]], None]] = []
        self._state = LeadershipState(0, False, "")
        self._lease = 0
        self._renewed_at = -float("inf")  # when the last successful renewal was sent
        self._lease_lost = asyncio.Event()
        self._last_event: tuple[ElectionEventKind, int, str] | None = None
        self.committed = 0

    # -- the port --------------------------------------------------------------------------------
    def state(self) -> LeadershipState:
        state = self._state
        if state.is_root and not self._fresh():
            return LeadershipState(state.term, False, "")
        return state

    def subscribe(self, listener: Callable[[LeadershipState], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def on_election(self, listener: Callable[[ElectionEvent], None]) -> None:
        self._event_listeners.append(listener)

    def on_peers(self, listener: Callable[[list[Candidate]], None]) -> None:
        """``listener`` hears the live candidates (this one included) on every change."""
        self._peer_listeners.append(listener)

    @property
    def candidate(self) -> Candidate:
        return self._me

    # -- what this candidate publishes -----------------------------------------------------------
    async def publish(self, *, version: int | None = None, score: float | None = None) -> None:
        """Update this candidate's version or score in etcd (under its lease)."""
        me = self._me
        self._me = replace(
            me,
            version=me.version if version is None else max(me.version, version),
            score=me.score if score is None else score,
        )
        if self._lease and self._me != me:
            await self._client.put(self._candidate_key, self._me.encode(), lease=self._lease)

    async def commit(self, version: int, holders: list[str]) -> bool:
        """As root: record ``version`` as committed, held by ``holders`` (guarded by the term)."""
        state = self.state()
        if not state.is_root:
            return False
        value = json.dumps({"version": version, "holders": holders, "term": state.term})
        ok = await self._client.put_guarded(
            self._root_key, state.term, self._committed_key, value.encode()
        )
        if ok:
            self.committed = max(self.committed, version)
        return ok

    def abdicate(self, reason: str) -> None:
        """As root: stop acting as root at once (``reason`` goes into the step-down event),
        give up the lease and stand again under a new one."""
        if not self._state.is_root:
            return
        self._lease = 0  # _evaluate no longer counts the root key under it as this one's
        self._step_down(reason)
        self._lease_lost.set()

    async def peers(self) -> list[Candidate]:
        """The live candidates (this one included)."""
        kvs, _ = await self._client.range(self._candidates, prefix_end(self._candidates))
        return [c for kv in kvs if (c := Candidate.decode(kv.value)) is not None]

    # -- running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Campaign until cancelled; on cancel, resign (revoke the lease) if etcd answers."""
        while True:
            try:
                await self._campaign()
            except EtcdError as exc:
                log.warning("election interrupted", error=str(exc))
                self._step_down(f"etcd unavailable: {exc}")
                await asyncio.sleep(min(1.0, self.config.ttl_s / 3))

    @property
    def _candidate_key(self) -> bytes:
        return self._candidates + self.config.node_id.encode()

    async def _campaign(self) -> None:
        sent = self._clock()
        lease = await self._client.grant(self.config.ttl_s)
        self._lease, self._renewed_at = lease.id, sent
        self._lease_lost.clear()
        await self._client.put(self._candidate_key, self._me.encode(), lease=lease.id)
        tasks = [
            asyncio.create_task(self._keep_alive(lease.id)),
            asyncio.create_task(self._follow()),
            asyncio.create_task(self._lease_lost.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:  # a failed task ends the campaign with its error
                error = task.exception()
                if error is not None:
                    raise error
            # The lease lapsed or ran out.
            self._step_down("lease not renewed within TTL minus the safety margin")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Resign the lease: the root key (if ours) and the candidate key go at once.
            self._lease = 0
            with contextlib.suppress(EtcdError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._client.revoke(lease.id)

    async def _keep_alive(self, lease_id: int) -> None:
        # Renew every TTL/6, each attempt given at most TTL/3: one slow or lost renewal under
        # load leaves room for another before the root must stop acting (TTL - margin).
        interval = self.config.ttl_s / 6
        while True:
            deadline = self._renewed_at + self.config.ttl_s - self.config.margin_s
            wait = min(interval, deadline - self._clock())
            if wait <= 0:
                self._lease_lost.set()
                return
            await asyncio.sleep(wait)
            sent = self._clock()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a result that
                # lands with a cancel and drops the cancel, and this loop would never end.
                async with asyncio.timeout(max(0.1, min(deadline - sent, 2 * interval))):
                    ttl = await self._client.keepalive(lease_id)
            except (EtcdError, TimeoutError) as exc:
                log.warning("lease renewal failed", error=str(exc) or type(exc).__name__)
                continue
            if ttl <= 0:
                self._lease_lost.set()
                return
            self._renewed_at = sent

    async def _follow(self) -> None:
        """Re-evaluate on every change under the prefix (one watch, from the range's revision)."""
        kvs, revision = await self._client.range(self._prefix, prefix_end(self._prefix))
        await self._evaluate(kvs)
        async for _batch in self._client.watch(
            self._prefix, range_end=prefix_end(self._prefix), start_revision=revision + 1
        ):
            kvs, _ = await self._client.range(self._prefix, prefix_end(self._prefix))
            await self._evaluate(kvs)

    async def _evaluate(self, kvs: list[KeyValue]) -> None:
        by_key = {kv.key: kv for kv in kvs}
        committed = _committed_version(by_key.get(self._committed_key))
        self.committed = max(self.committed, committed)
        root = by_key.get(self._root_key)
        peers = [
            c
            for kv in kvs
            if kv.key.startswith(self._candidates) and (c := Candidate.decode(kv.value))
        ]
        for listener in list(self._peer_listeners):
            listener(peers)
        if root is None:
            await self._stand(peers, committed)
            return
        holder = _root_address(root.value)
        if root.lease == self._lease and self._fresh():
            self._set(LeadershipState(root.create_revision, True, self.config.address))
        else:
            if self._state.is_root:
                self._step_down(f"root key held by {holder or 'another candidate'}")
            self._set(LeadershipState(root.create_revision, False, holder))
            self._event(ElectionEventKind.FOLLOWING, root.create_revision, holder, "root elected")

    async def _stand(self, peers: list[Candidate], committed: int) -> None:
        previous = self._state
        if previous.is_root:
            self._step_down("root key gone (lease expired or revoked)")
        reason = should_stand(self._me, peers, committed)
        if reason:
            self._set(LeadershipState(previous.term, False, ""))
            self._event(ElectionEventKind.STANDING_BACK, previous.term, "", reason)
            return
        value = json.dumps({"node_id": self.config.node_id, "address": self.config.address})
        won, kv = await self._client.create(self._root_key, value.encode(), lease=self._lease)
        if not won or not self._fresh():
            self._set(LeadershipState(kv.create_revision, False, _root_address(kv.value)))
            return
        self._set(LeadershipState(kv.create_revision, True, self.config.address))
        why = (
            f"version {self._me.version}, score {self._me.score:.0f}, "
            f"{len(peers)} live candidate(s)"
        )
        if previous.term:
            why = f"root of term {previous.term} gone; {why}"
        kind = ElectionEventKind.TAKEOVER if previous.term else ElectionEventKind.ELECTED
        self._event(kind, kv.create_revision, self.config.address, why)

    # -- state -----------------------------------------------------------------------------------
    def _fresh(self) -> bool:
        return self._clock() < self._renewed_at + self.config.ttl_s - self.config.margin_s

    def _step_down(self, reason: str) -> None:
        if not self._state.is_root:
            return
        term = self._state.term
        self._set(LeadershipState(term, False, ""))
        self._event(ElectionEventKind.STEP_DOWN, term, "", reason)

    def _set(self, state: LeadershipState) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in list(self._listeners):
            listener(state)

    def _event(self, kind: ElectionEventKind, term: int, root: str, reason: str) -> None:
        key = (kind, term, root)
        if key == self._last_event:
            return
        self._last_event = key
        event = ElectionEvent(kind, term, root, reason)
        log.info("election", kind=kind.value, term=term, root=root, reason=reason,
                 candidate=self.config.node_id)  # fmt: skip
        for listener in list(self._event_listeners):
            listener(event)


def _root_address(value: bytes) -> str:
    try:
        raw: Any = json.loads(value)
        return str(raw["address"])
    except (ValueError, KeyError, TypeError):
        return ""


def _committed_version(kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    try:
        raw: Any = json.loads(kv.value)
        return int(raw["version"])
    except (ValueError, KeyError, TypeError):
        return 0
