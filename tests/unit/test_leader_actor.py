"""``LeaderCore``: commands run in order on one owner thread; writes and events leave beside it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from eddl.leader.actor import LeaderCore, StoreWriter
from eddl.leader.checkpoint import MemberRecord, VersionRecord
from eddl.leader.coordinator import Coordinator
from eddl.leader.errors import StoreError, UnknownJobError
from eddl.leader.events import DomainEvent, Event, NodeChanged
from eddl.leader.membership import Membership, Role
from eddl.leader.store import SqliteStore, WriteBatch
from tests.unit.test_leader_support import Clock, float_runtime, spec


class GatedWriter(StoreWriter):
    """A writer that holds every commit until the test opens the gate."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.gate = threading.Event()

    def commit(self, batch: WriteBatch) -> None:
        self.gate.wait(10)
        self.store.commit(batch)


def make(
    tmp_path: Path,
    writer_cls: type[StoreWriter] = StoreWriter,
    on_command: Callable[[str, float], None] | None = None,
) -> tuple[LeaderCore, StoreWriter]:
    store = SqliteStore(tmp_path)
    writer = writer_cls(store)
    clock = Clock()
    membership = Membership(heartbeat_interval=1.0, now=clock, join_tokens={"tok": Role.WORKER})
    coordinator = Coordinator(
        store, membership=membership, runtime_factory=float_runtime, now=clock, commit=writer.submit
    )
    return LeaderCore(coordinator, on_command), writer


def gated(tmp_path: Path) -> tuple[LeaderCore, GatedWriter, list[DomainEvent]]:
    """A core whose writes wait at a gate, and the domain events it delivered so far."""
    core, writer = make(tmp_path, GatedWriter)
    assert isinstance(writer, GatedWriter)
    heard: list[DomainEvent] = []
    core.on_event(heard.append)
    return core, writer, heard


async def test_commands_run_in_order_on_one_owner_thread(tmp_path: Path) -> None:
    core, writer = make(tmp_path)
    threads: list[str] = []
    order: list[int] = []

    def command(i: int) -> int:
        threads.append(threading.current_thread().name)
        order.append(i)
        return i * i

    try:
        results = await asyncio.gather(*(core.call(command, i) for i in range(20)))
        assert results == [i * i for i in range(20)] and order == list(range(20))
        assert set(threads) == {"leader-core"}
        with pytest.raises(UnknownJobError):  # typed errors reach the caller unchanged
            await core.call(core.coordinator.events, "nope")
        reply = await core.call(core.coordinator.join, "w0", "tok")
        assert reply.node_id == "w0"
    finally:
        core.close()
        writer.close()


async def test_each_command_reports_its_name_and_owner_cpu_time_refused_ones_too(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, float]] = []
    core, writer = make(tmp_path, on_command=lambda name, s: seen.append((name, s)))

    def spin(n: int) -> int:
        return sum(i * i for i in range(n))

    try:
        await core.call(spin, 200_000)
        await core.call(core.coordinator.join, "w0", "tok")
        with pytest.raises(UnknownJobError):
            await core.call(core.coordinator.events, "nope")
        assert [name for name, _ in seen] == ["spin", "join", "events"]
        assert seen[0][1] > 0.0 and all(s >= 0.0 for _, s in seen)
    finally:
        core.close()
        writer.close()


async def test_a_reply_and_its_events_wait_for_the_commit_and_the_owner_does_not(
    tmp_path: Path,
) -> None:
    core, writer, heard = gated(tmp_path)
    try:
        join = asyncio.ensure_future(core.call(core.coordinator.join, "w0", "tok"))
        # The join's member record waits at the gate; the owner answers other commands.
        assert await core.call(lambda: 7) == 7
        await asyncio.sleep(0.05)
        assert not join.done() and heard == []
        writer.gate.set()
        await join
        for _ in range(100):  # bounded: the delivery hops to this loop
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard == [NodeChanged("w0", "joined")]
        members = await core.call(core.coordinator.store.members)
        assert [m.node_id for m in members] == ["w0"]
    finally:
        writer.gate.set()
        core.close()
        writer.close()


async def test_commands_queued_while_the_owner_is_busy_run_in_one_turn_in_order(
    tmp_path: Path,
) -> None:
    core, writer, heard = gated(tmp_path)
    busy = threading.Event()
    turns: list[str] = []
    loop = asyncio.get_running_loop()
    hops = 0
    plain = loop.call_soon_threadsafe

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal hops
        hops += 1
        return plain(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    try:
        blocker = asyncio.ensure_future(core.call(lambda: busy.wait(10)))
        await asyncio.sleep(0.05)  # the owner is inside the blocker
        # Queued meanwhile: two joins (they write) between commands that write nothing.
        calls = [
            asyncio.ensure_future(core.call(lambda: turns.append("a") or "a")),
            asyncio.ensure_future(core.call(core.coordinator.join, "w0", "tok")),
            asyncio.ensure_future(core.call(lambda: turns.append("b") or "b")),
            asyncio.ensure_future(core.call(core.coordinator.join, "w1", "tok")),
        ]
        await asyncio.sleep(0.05)
        hops = 0
        busy.set()
        await blocker
        # The commands that wrote nothing are answered; the joins wait for their writes.
        assert [await calls[0], await calls[2]] == ["a", "b"] and turns == ["a", "b"]
        await asyncio.sleep(0.05)
        assert not calls[1].done() and not calls[3].done() and heard == []
        writer.gate.set()
        replies = [await calls[1], await calls[3]]
        assert [r.node_id for r in replies] == ["w0", "w1"]
        assert heard == [NodeChanged("w0", "joined"), NodeChanged("w1", "joined")]
        # The blocker's answer; then one hop for the two plain answers and one for the joins'
        # answers and events once durable (a hop per command would make five).
        assert hops == 3
    finally:
        loop.call_soon_threadsafe = plain  # type: ignore[method-assign]
        busy.set()
        writer.gate.set()
        core.close()
        writer.close()


class RefusingWriter(StoreWriter):
    """A writer whose store refuses every batch."""

    def commit(self, batch: WriteBatch) -> None:
        raise StoreError("disk full")


async def test_a_command_whose_writes_the_store_refuses_fails_for_its_caller(
    tmp_path: Path,
) -> None:
    core, writer = make(tmp_path, RefusingWriter)
    heard: list[DomainEvent] = []
    core.on_event(heard.append)
    try:
        with pytest.raises(StoreError, match="disk full"):
            await core.call(core.coordinator.join, "w0", "tok")
        assert await core.call(lambda: 7) == 7  # the owner goes on
        # Events and the reply take one hop to the loop, events first: already heard.
        assert heard == [NodeChanged("w0", "joined")]
    finally:
        core.close()
        writer.close()


async def test_a_job_is_built_beside_the_owner_and_watchers_hear_its_events(
    tmp_path: Path,
) -> None:
    core, writer = make(tmp_path)
    building = threading.Event()
    release = threading.Event()
    real = core.coordinator.job_queue._runtime_factory

    def slow(job_spec: object) -> object:
        building.set()
        release.wait(10)
        return real(job_spec)  # type: ignore[arg-type]

    core.coordinator.job_queue._runtime_factory = slow  # type: ignore[assignment]
    try:
        submit = asyncio.ensure_future(core.submit_job(spec(rounds=2)))
        for _ in range(100):
            if building.is_set():
                break
            await asyncio.sleep(0.01)
        assert building.is_set()
        # While the job builds, the owner still answers.
        assert (await core.call(core.coordinator.join, "w0", "tok")).node_id == "w0"
        release.set()
        status = await submit
        events: list[Event] = []
        unsubscribe = await core.subscribe(status["job_id"], events.append)
        await core.call(core.coordinator.cancel_job, status["job_id"])
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.01)
        assert [e.kind.value for e in events] == ["job_cancelled"]
        unsubscribe()
    finally:
        release.set()
        core.close()
        writer.close()


class CountingWriter(GatedWriter):
    """A gated writer that records the members of each transaction it writes."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.transactions: list[list[str]] = []
        self.entered = threading.Event()  # a commit is waiting at the gate

    def commit(self, batch: WriteBatch) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.transactions.append([m.node_id for m in batch.members])
        self.store.commit(batch)


def member(node_id: str) -> MemberRecord:
    return MemberRecord(node_id, "worker", 1, "ipv4:127.0.0.1:1", "alive", 1.0)


def test_batches_that_queue_during_a_commit_go_in_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    writer = CountingWriter(store)
    try:
        first = writer.submit(WriteBatch(members=[member("w0")]))
        assert writer.entered.wait(10)
        queued = [writer.submit(WriteBatch(members=[member(f"w{i}")])) for i in (1, 2, 3)]
        writer.gate.set()
        for done in [first, *queued]:
            assert done.result(10) is None
    finally:
        writer.gate.set()
        writer.close()
    # The first commit was held at the gate while the others queued: they went in one.
    assert writer.transactions[0] == ["w0"]
    assert writer.transactions[1:] == [["w1", "w2", "w3"]]
    assert [m.node_id for m in store.members()] == ["w0", "w1", "w2", "w3"]


def test_a_refused_batch_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    writer = CountingWriter(store)
    refused = WriteBatch(
        members=[member("w2")],
        versions=[VersionRecord("no-such-job", 1, {}, {}, 1.0)],
    )
    try:
        first = writer.submit(WriteBatch(members=[member("w0")]))
        assert writer.entered.wait(10)
        ok1 = writer.submit(WriteBatch(members=[member("w1")]))
        bad = writer.submit(refused)
        ok3 = writer.submit(WriteBatch(members=[member("w3")]))
        writer.gate.set()
        for done in (first, ok1, ok3):
            assert done.result(10) is None
        with pytest.raises(StoreError, match="not stored"):
            bad.result(10)
    finally:
        writer.gate.set()
        writer.close()
    # The group's transaction was refused whole, then each batch went alone.
    assert writer.transactions[1:] == [["w1", "w2", "w3"], ["w1"], ["w2"], ["w3"]]
    assert [m.node_id for m in store.members()] == ["w0", "w1", "w3"]


def test_a_batch_that_forgets_members_is_written_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path)
    writer = CountingWriter(store)
    try:
        first = writer.submit(WriteBatch(members=[member("w0")]))
        assert writer.entered.wait(10)
        forget = writer.submit(WriteBatch(forget_members=["w0"]))
        again = writer.submit(WriteBatch(members=[member("w0")]))
        writer.gate.set()
        for done in (first, forget, again):
            assert done.result(10) is None
    finally:
        writer.gate.set()
        writer.close()
    # Grouped, the upsert would run before the delete and w0 would be gone.
    assert writer.transactions == [["w0"], [], ["w0"]]
    assert [m.node_id for m in store.members()] == ["w0"]
