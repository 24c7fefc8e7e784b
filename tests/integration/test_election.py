"""``EtcdLeadership`` with a real etcd member: who wins, terms, takeover, step-down, fencing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eddl.leader.election import (
    Candidate,
    ElectionConfig,
    ElectionEvent,
    ElectionEventKind,
    EtcdLeadership,
    should_stand,
)
from eddl.leader.etcd import EtcdClient
from tests.etcd_procs import EtcdMember
from tests.integration.cluster_support import wait_until

ROOT = Path(__file__).resolve().parents[2]


class Running:
    def __init__(self, leadership: EtcdLeadership, task: asyncio.Task[None]) -> None:
        self.leadership = leadership
        self.task = task
        self.events: list[ElectionEvent] = []
        leadership.on_election(self.events.append)

    def kinds(self) -> list[ElectionEventKind]:
        return [e.kind for e in self.events]


@contextlib.asynccontextmanager
async def candidates(
    etcd: EtcdMember, specs: list[tuple[str, float, int]], ttl_s: int = 3
) -> AsyncIterator[dict[str, Running]]:
    clients: list[EtcdClient] = []
    running: dict[str, Running] = {}
    try:
        for node_id, score, version in specs:
            client = EtcdClient([etcd.endpoint])
            clients.append(client)
            config = ElectionConfig(node_id, f"{node_id}:1", ttl_s=ttl_s, margin_s=1.0)
            leadership = EtcdLeadership(client, config, score=score, version=version)
            run = Running(leadership, asyncio.create_task(leadership.run()))
            running[node_id] = run
        yield running
    finally:
        for run in running.values():
            run.task.cancel()
        await asyncio.gather(*(r.task for r in running.values()), return_exceptions=True)
        for client in clients:
            await client.aclose()


def roots(running: dict[str, Running]) -> list[str]:
    return [n for n, r in running.items() if r.leadership.is_root()]


@contextlib.asynccontextmanager
async def blocked_root(etcd: EtcdMember) -> AsyncIterator[EtcdClient]:
    """Hold the root key under a test lease, so candidates all publish before any stands."""
    async with EtcdClient([etcd.endpoint]) as client:
        lease = await client.grant(30)
        await client.create(b"/eddl/root", b'{"address": "blocker:1"}', lease=lease.id)
        try:
            yield client
        finally:
            await client.revoke(lease.id)


async def test_a_lone_candidate_becomes_root_with_the_root_keys_create_revision(
    etcd: EtcdMember,
) -> None:
    async with candidates(etcd, [("a", 1.0, 0)]) as running:
        a = running["a"]
        await wait_until(a.leadership.is_root, 10, "a elected")
        async with EtcdClient([etcd.endpoint]) as client:
            root = await client.get(b"/eddl/root")
        assert root is not None and a.leadership.term == root.create_revision
        assert a.leadership.root_hint() == "a:1"
        assert a.kinds() == [ElectionEventKind.ELECTED]


async def test_the_newest_version_wins_then_the_higher_score(etcd: EtcdMember) -> None:
    specs = [("old-fast", 9e9, 3), ("new-slow", 1.0, 5), ("new-fast", 2.0, 5)]
    async with blocked_root(etcd) as blocker, candidates(etcd, specs) as running:
        await wait_until(
            lambda: all(r.leadership.root_hint() == "blocker:1" for r in running.values()),
            10,
            "candidates following the blocker",
        )
        peers = await running["old-fast"].leadership.peers()
        assert {p.node_id for p in peers} == set(running)
        await blocker.delete(b"/eddl/root")
        await wait_until(lambda: roots(running) == ["new-fast"], 10, "new-fast elected")
        # The others stood back (or saw new-fast's key first): none ever raced and won.
        won = {ElectionEventKind.ELECTED, ElectionEventKind.TAKEOVER}
        assert not won & {*running["old-fast"].kinds(), *running["new-slow"].kinds()}
        term = running["new-fast"].leadership.term
        await wait_until(
            lambda: all(r.leadership.root_hint() == "new-fast:1" for r in running.values()),
            10,
            "everyone pointing at the root",
        )
        assert all(r.leadership.term == term for r in running.values())


async def test_a_resigning_root_hands_over_in_a_higher_term(etcd: EtcdMember) -> None:
    async with candidates(etcd, [("a", 2.0, 1)]) as running:
        await wait_until(running["a"].leadership.is_root, 10, "a elected")
        first = running["a"].leadership.term
        async with candidates(etcd, [("b", 1.0, 1)]) as others:
            b = others["b"]
            await wait_until(lambda: b.leadership.root_hint() == "a:1", 10, "b follows a")
            running["a"].task.cancel()  # resigns: revokes its lease
            await wait_until(b.leadership.is_root, 10, "b takes over")
            assert b.leadership.term > first
            takeover = [e for e in b.events if e.kind is ElectionEventKind.TAKEOVER]
            assert takeover and f"term {first}" in takeover[0].reason


async def test_an_abdicating_root_stops_at_once_and_gives_up_its_lease(etcd: EtcdMember) -> None:
    async with candidates(etcd, [("a", 1.0, 1), ("b", 2.0, 1)]) as running:
        await wait_until(lambda: len(roots(running)) == 1, 10, "a root elected")
        (name,) = roots(running)
        root, other = running[name], running[({"a", "b"} - {name}).pop()]
        first = root.leadership.term
        root.leadership.abdicate("version 3 is nowhere else")
        assert not root.leadership.is_root()  # at once, before etcd hears of it
        down = [e for e in root.events if e.kind is ElectionEventKind.STEP_DOWN]
        assert [(e.term, e.reason) for e in down] == [(first, "version 3 is nowhere else")]
        # Its lease revoked, the root key is free: a root of a higher term follows.
        await wait_until(
            lambda: any(r.leadership.is_root() and r.leadership.term > first
                        for r in (root, other)),
            10,
            "a root in a higher term",
        )  # fmt: skip
        # A candidate that is not root has nothing to give up.
        (follower,) = [r for r in (root, other) if not r.leadership.is_root()]
        before = (follower.leadership.state(), list(follower.events))
        follower.leadership.abdicate("not root")
        assert (follower.leadership.state(), follower.events) == before


async def test_a_candidate_below_the_committed_version_stands_back(etcd: EtcdMember) -> None:
    async with candidates(etcd, [("a", 1.0, 4)]) as running:
        a = running["a"].leadership
        await wait_until(a.is_root, 10, "a elected")
        assert await a.commit(4, ["a", "b"])
        async with candidates(etcd, [("c", 9e9, 2)]) as others:
            c = others["c"]
            await wait_until(lambda: c.leadership.root_hint() == "a:1", 10, "c follows a")
            running["a"].task.cancel()
            await wait_until(
                lambda: ElectionEventKind.STANDING_BACK in c.kinds(), 10, "c stands back"
            )
            assert not c.leadership.is_root()
            assert "committed version 4" in c.events[-1].reason
            await c.leadership.publish(version=4)  # it caught up: now it may stand
            await wait_until(c.leadership.is_root, 10, "c elected once it holds version 4")


async def test_a_stale_term_cannot_write_the_committed_pointer(etcd: EtcdMember) -> None:
    async with candidates(etcd, [("a", 1.0, 1)]) as running:
        a = running["a"].leadership
        await wait_until(a.is_root, 10, "a elected")
        async with EtcdClient([etcd.endpoint]) as client:
            assert not await client.put_guarded(
                b"/eddl/root", a.term - 1, b"/eddl/committed", b"{}"
            )
            assert await client.get(b"/eddl/committed") is None


async def test_a_root_cut_off_from_etcd_stops_acting_as_root(etcd: EtcdMember) -> None:
    async with candidates(etcd, [("a", 1.0, 1)]) as running:
        a = running["a"]
        await wait_until(a.leadership.is_root, 10, "a elected")
        etcd.stop()
        await wait_until(lambda: not a.leadership.is_root(), 5, "a stops acting as root")
        await wait_until(lambda: ElectionEventKind.STEP_DOWN in a.kinds(), 5, "step-down event")


@pytest.mark.slow
async def test_a_killed_root_is_replaced_once_its_lease_expires(
    etcd: EtcdMember, tmp_path: Path
) -> None:
    log = (tmp_path / "a.out").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.election_candidate", "--endpoint",
        etcd.endpoint, "--id", "a", "--address", "a:1", "--score", "5", "--version", "1",
        cwd=ROOT, stdout=log, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    try:
        out = tmp_path / "a.out"

        def a_elected() -> bool:
            lines = out.read_text().splitlines()
            return any(
                json.loads(line)["kind"] == "elected" for line in lines if line.startswith("{")
            )

        await wait_until(a_elected, 20, "process a elected")
        async with candidates(etcd, [("b", 1.0, 1)]) as running:
            b = running["b"]
            await wait_until(lambda: b.leadership.root_hint() == "a:1", 10, "b follows a")
            first = b.leadership.term
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)
            await wait_until(b.leadership.is_root, 15, "b takes over after the lease TTL")
            assert b.leadership.term > first
            assert ElectionEventKind.TAKEOVER in b.kinds()
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)


def test_the_standing_rule() -> None:
    me = Candidate("me", "me:1", 10.0, 5)
    assert should_stand(me, [me], 5) == ""
    assert should_stand(me, [Candidate("p", "p:1", 1e9, 4)], 0) == ""
    assert "newer version 6" in should_stand(me, [Candidate("p", "p:1", 0.0, 6)], 0)
    assert "higher score" in should_stand(me, [Candidate("p", "p:1", 11.0, 5)], 0)
    assert should_stand(me, [Candidate("p", "p:1", 10.0, 5)], 0) == ""  # a tie: both race
    assert "committed version 7" in should_stand(me, [], 7)
    assert Candidate.decode(me.encode()) == me
    assert Candidate.decode(b"{not json") is None
    with pytest.raises(ValueError):
        ElectionConfig("a", "a:1", ttl_s=2, margin_s=1.0)
