"""Replication from a root to standbys over real gRPC (127.0.0.1:0): payloads, snapshots for a
standby that is behind, and refusals (stale term, corrupted or truncated payload, wrong
credential) that change nothing on the standby."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from eddl.leader.checkpoint import LeadershipRecord, MemberRecord, VersionRecord, WriteBatch
from eddl.leader.events import Event, EventKind
from eddl.leader.replica import decode, encode, snapshot
from eddl.leader.replication import ReplicatingStore, Replicator
from eddl.leader.servicers.peer import PeerServicer
from eddl.leader.standby import Standby
from eddl.leader.store import MemoryStore, SqliteStore
from eddl.net import open_channel, start_server
from eddl.proto.v1 import peer_pb2, peer_pb2_grpc

CREDENTIAL = "cluster-secret"


@contextlib.asynccontextmanager
async def standby_server(path: Path) -> AsyncIterator[tuple[str, SqliteStore, Standby]]:
    store = SqliteStore(path)
    standby = Standby(store, CREDENTIAL)
    server = await start_server(
        "127.0.0.1:0",
        [(peer_pb2_grpc.add_PeerServicer_to_server, PeerServicer(standby))],
        ("eddl.v1.Peer",),
    )
    try:
        yield server.address, store, standby
    finally:
        await server.stop(0.2)
        store.close()


def version(job_id: str, v: int) -> VersionRecord:
    params = {"w0": np.full((3, 2), v, np.float32), "b0": np.arange(2, dtype=np.float32)}
    return VersionRecord(job_id, v, params, {"ledger": {"done": [[0, 8 * v]]}}, 100.0 + v)


def root_store_with_job() -> MemoryStore:
    store = MemoryStore()
    store.add_job("j1", {"dataset": "digits"}, "running", 1.0)
    store.commit(WriteBatch(versions=[version("j1", 0)]))
    return store


def replicator(root: MemoryStore, term: int = 7) -> Replicator:
    return Replicator(
        credential=CREDENTIAL, leader_id="root", term=lambda: term, snapshot=lambda: snapshot(root)
    )


def state(store: SqliteStore) -> tuple[object, ...]:
    return (store.jobs(), store.versions("j1"), store.events("j1"), store.members(),
            store.leadership())  # fmt: skip


def test_a_payload_round_trips_through_the_wire_form() -> None:
    batch = WriteBatch(
        versions=[version("j1", 3)],
        events=[Event("j1", 1, 2.0, EventKind.MODEL_UPDATED, "v3", {"version": 3})],
        members=[MemberRecord("n1", "worker", 1, "a:1", "alive", 3.0)],
    )
    (back,) = decode(encode([batch]))
    assert isinstance(back, WriteBatch)
    assert back.events == batch.events and back.members == batch.members
    assert np.array_equal(back.versions[0].params["w0"], batch.versions[0].params["w0"])
    assert back.versions[0].meta == batch.versions[0].meta


async def test_a_new_standby_gets_a_snapshot_then_each_committed_batch(tmp_path: Path) -> None:
    root = root_store_with_job()
    rep = replicator(root)
    async with standby_server(tmp_path / "s1") as (address, store, _):
        await rep.set_standbys([address])
        batch = WriteBatch(
            versions=[version("j1", 1)],
            events=[Event("j1", 1, 2.0, EventKind.MODEL_UPDATED, "v1", {})],
        )
        root.commit(batch)
        result = await rep.replicate([batch])
        assert result.holders == (address,) and not result.degraded
        # A snapshot carries the newest version (here 1, committed before it went out).
        assert store.versions("j1") == [1] and store.job("j1") is not None
        assert np.array_equal(store.load_version("j1", 1).params["w0"], np.full((3, 2), 1))  # type: ignore[union-attr]
        assert [e.seq for e in store.events("j1")] == [1]
        assert store.leadership().term == 7  # type: ignore[union-attr]
        # The same payload again (a retried stream) changes nothing.
        before = state(store)
        await rep.replicate([batch])
        assert state(store) == before
        (view,) = rep.views()
        assert view.version == 1 and view.lag == 0 and view.synced
    await rep.close()


async def test_with_no_live_standby_the_root_goes_on_degraded(tmp_path: Path) -> None:
    root = root_store_with_job()
    rep = replicator(root)
    rep.timeout_s = 1.0
    result = await rep.replicate([WriteBatch(versions=[version("j1", 1)])])
    assert result.degraded and result.holders == ()
    async with standby_server(tmp_path / "s1") as (address, _, _):
        await rep.set_standbys([address])
    # The standby's server is gone: the wait is bounded, the standby marked behind.
    result = await rep.replicate([WriteBatch(versions=[version("j1", 2)])])
    assert result.degraded and not rep.views()[0].synced
    await rep.close()


async def test_a_replicating_store_returns_once_the_standby_holds_the_write(
    tmp_path: Path,
) -> None:
    root = MemoryStore()
    rep = replicator(root)
    committed: list[tuple[int, tuple[str, ...]]] = []

    async def on_committed(v: int, holders: tuple[str, ...]) -> bool:
        committed.append((v, holders))
        return True

    async with standby_server(tmp_path / "s1") as (address, store, _):
        await rep.set_standbys([address])
        wrapped = ReplicatingStore(root, rep, asyncio.get_running_loop(), on_committed=on_committed)
        await asyncio.to_thread(wrapped.add_job, "j1", {"dataset": "digits"}, "running", 1.0)
        await asyncio.to_thread(wrapped.commit, WriteBatch(versions=[version("j1", 0)]))
        await asyncio.to_thread(wrapped.commit, WriteBatch(versions=[version("j1", 1)]))
        assert store.versions("j1") == [0, 1]
        assert committed[-1] == (1, (address,))
    await rep.close()


async def test_a_version_no_standby_holds_and_etcd_did_not_record_is_unprotected(
    tmp_path: Path,
) -> None:
    """Such a version would be lost with the root (a standby without it could stand): the
    store says so before the write returns, so the root steps down before acknowledging it."""
    root = root_store_with_job()
    rep = replicator(root)
    rep.timeout_s = 1.0
    recorded: list[bool] = [False]  # what etcd says to each record of a version
    unprotected: list[int] = []

    async def on_committed(v: int, holders: tuple[str, ...]) -> bool:
        return recorded[0]

    loop = asyncio.get_running_loop()
    wrapped = ReplicatingStore(
        root, rep, loop, on_committed=on_committed, on_unprotected=unprotected.append
    )
    async with standby_server(tmp_path / "s1") as (address, store, _):
        await rep.set_standbys([address])
        # Held by the standby: protected, whatever etcd said.
        await asyncio.to_thread(wrapped.commit, WriteBatch(versions=[version("j1", 1)]))
        assert store.versions("j1") == [1] and unprotected == []
    # The standby is gone. Recorded in etcd: protected (no standby without it may stand).
    recorded[0] = True
    await asyncio.to_thread(wrapped.commit, WriteBatch(versions=[version("j1", 2)]))
    assert rep.degraded and unprotected == []
    # Neither: unprotected. A write without a version never is.
    recorded[0] = False
    await asyncio.to_thread(wrapped.commit, WriteBatch(versions=[version("j1", 3)]))
    await asyncio.to_thread(wrapped.set_value, "x", 1)
    await asyncio.to_thread(
        wrapped.commit, WriteBatch(events=[Event("j1", 1, 2.0, EventKind.NODE_JOINED, "n", {})])
    )
    assert unprotected == [3]
    await rep.close()


async def _send(address: str, chunks: list[peer_pb2.ReplicaChunk]) -> grpc.aio.AioRpcError:
    async def stream() -> AsyncIterator[peer_pb2.ReplicaChunk]:
        for chunk in chunks:
            yield chunk

    async with open_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await peer_pb2_grpc.PeerStub(channel).Replicate(stream(), timeout=10)
    return info.value


def chunks_of(payload: bytes, *, term: int = 7, credential: str = CREDENTIAL, size: int = 64,
              digest: bytes | None = None) -> list[peer_pb2.ReplicaChunk]:  # fmt: skip
    count = -(-len(payload) // size)
    return [
        peer_pb2.ReplicaChunk(
            credential=credential,
            term=term,
            leader_id="root",
            seq=1,
            version=5,
            index=i,
            count=count,
            total_bytes=len(payload),
            sha256=digest or hashlib.sha256(payload).digest(),
            data=payload[i * size : (i + 1) * size],
        )
        for i in range(count)
    ]


async def test_bad_payloads_are_refused_and_change_nothing(tmp_path: Path) -> None:
    root = root_store_with_job()
    good = encode(snapshot(root))
    async with standby_server(tmp_path / "s1") as (address, store, _):
        store.save_leadership(LeadershipRecord(9, "root", "", time.time()))
        before = state(store)

        stale = await _send(address, chunks_of(good, term=8))
        assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "term 8" in (stale.details() or "")

        wrong = await _send(address, chunks_of(good, term=9, credential="guess"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED

        corrupted = chunks_of(good, term=9)
        corrupted[1].data = bytes([corrupted[1].data[0] ^ 0xFF]) + corrupted[1].data[1:]
        bad = await _send(address, corrupted)
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "SHA-256" in (bad.details() or "")

        truncated = await _send(address, chunks_of(good, term=9)[:-1])
        assert truncated.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "truncated" in (truncated.details() or "")

        reordered = chunks_of(good, term=9)
        reordered[0], reordered[1] = reordered[1], reordered[0]
        out_of_order = await _send(address, reordered)
        assert out_of_order.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Intact chunks, but a payload that is not a replica (its hash matches it).
        garbage = await _send(address, chunks_of(b"\x00\x00\x00\x05{{{{{", term=9))
        assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT

        assert state(store) == before


async def test_a_snapshot_replaces_a_history_the_new_root_never_had(tmp_path: Path) -> None:
    root = root_store_with_job()
    root.commit(WriteBatch(versions=[version("j1", 1)]))
    rep = replicator(root, term=20)
    async with standby_server(tmp_path / "s1") as (address, store, standby):
        # The standby was root in term 10 and committed versions 1..2 the new root never got.
        store.add_job("j1", {"dataset": "digits"}, "running", 1.0)
        diverged = dataclasses.replace(version("j1", 1), meta={"diverged": True})
        store.commit(WriteBatch(versions=[diverged, version("j1", 2)]))
        store.save_leadership(LeadershipRecord(10, "old", "", 1.0))
        await rep.set_standbys([address])
        result = await rep.replicate([WriteBatch()])
        assert result.holders == (address,)
        assert store.versions("j1") == [1] and standby.version == 1
        record = store.load_version("j1", 1)
        assert record is not None and record.meta == version("j1", 1).meta
        assert store.leadership().term == 20  # type: ignore[union-attr]
    await rep.close()


async def test_a_candidate_acting_as_root_refuses_replicas(tmp_path: Path) -> None:
    root = root_store_with_job()
    async with standby_server(tmp_path / "s1") as (address, store, standby):
        standby.is_root = lambda: True
        before = state(store)
        refused = await _send(address, chunks_of(encode(snapshot(root)), term=99))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "root now" in (refused.details() or "")
        assert state(store) == before
