"""``EtcdClient`` against a real etcd member (its v3 JSON gateway on a free loopback port)."""

from __future__ import annotations

import asyncio

import pytest

from eddl.leader.etcd import (
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    WatchEvent,
    parse_coordinator,
    prefix_end,
)
from tests.etcd_procs import EtcdMember, free_port


async def test_put_get_range_and_delete_round_trip_binary_keys(etcd: EtcdMember) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        rev = await client.put(b"/eddl/a\x00", b"\xff\x00value")
        await client.put(b"/eddl/b", b"two")
        await client.put(b"/other", b"x")
        kv = await client.get(b"/eddl/a\x00")
        assert kv is not None and kv.value == b"\xff\x00value" and kv.create_revision == rev
        kvs, revision = await client.range(b"/eddl/", prefix_end(b"/eddl/"))
        assert [k.key for k in kvs] == [b"/eddl/a\x00", b"/eddl/b"] and revision >= rev + 2
        assert await client.delete(b"/eddl/b") == 1
        assert await client.get(b"/eddl/b") is None
        assert await client.get(b"/missing") is None


async def test_create_if_absent_under_a_lease_has_one_winner(etcd: EtcdMember) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        first, second = await client.grant(10), await client.grant(10)
        won, kv = await client.create(b"/root", b"one", lease=first.id)
        assert won and kv.value == b"one" and kv.lease == first.id
        lost, holder = await client.create(b"/root", b"two", lease=second.id)
        assert not lost and holder.value == b"one" and holder.create_revision == kv.create_revision


async def test_a_revoked_lease_takes_its_keys_and_keepalive_reports_expiry(
    etcd: EtcdMember,
) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        lease = await client.grant(5)
        assert 0 < await client.keepalive(lease.id) <= 5
        await client.put(b"/leased", b"v", lease=lease.id)
        await client.revoke(lease.id)
        assert await client.get(b"/leased") is None
        assert await client.keepalive(lease.id) == 0


async def test_guarded_writes_need_the_guard_key_at_its_create_revision(etcd: EtcdMember) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        lease = await client.grant(10)
        _, root = await client.create(b"/root", b"me", lease=lease.id)
        assert await client.put_guarded(b"/root", root.create_revision, b"/latest", b"7")
        assert not await client.put_guarded(b"/root", root.create_revision - 1, b"/latest", b"8")
        latest = await client.get(b"/latest")
        assert latest is not None and latest.value == b"7"
        assert not await client.delete_guarded(b"/root", root.create_revision + 1)
        assert await client.delete_guarded(b"/root", root.create_revision)
        assert await client.get(b"/root") is None


async def test_watch_streams_puts_and_deletes_from_a_revision(etcd: EtcdMember) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        start = await client.put(b"/w/a", b"1")
        seen: list[WatchEvent] = []

        async def collect() -> None:
            async for batch in client.watch(
                b"/w/", range_end=prefix_end(b"/w/"), start_revision=start
            ):
                seen.extend(batch)
                if len(seen) >= 3:
                    return

        task = asyncio.create_task(collect())
        await client.put(b"/w/b", b"2")
        await client.delete(b"/w/a")
        await asyncio.wait_for(task, 10)
        assert [(e.kind, e.kv.key) for e in seen] == [
            ("put", b"/w/a"),
            ("put", b"/w/b"),
            ("delete", b"/w/a"),
        ]


async def test_a_dead_endpoint_is_skipped_for_a_live_one(etcd: EtcdMember) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, etcd.endpoint], timeout_s=1.0) as client:
        await client.put(b"/k", b"v")
        assert client.endpoints[0] == etcd.endpoint


async def test_unreachable_etcd_is_a_clear_error() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead], timeout_s=1.0) as client:
        with pytest.raises(EtcdUnavailable, match=r"unreachable.*127\.0\.0\.1"):
            await client.get(b"/k")
        with pytest.raises(EtcdUnavailable):
            async for _ in client.watch(b"/k"):
                pass


async def test_watch_ends_with_an_error_when_etcd_dies(etcd: EtcdMember) -> None:
    async with EtcdClient([etcd.endpoint]) as client:
        await client.put(b"/k", b"v")

        async def watch() -> None:
            async for _ in client.watch(b"/k"):
                pass

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        etcd.stop()
        with pytest.raises(EtcdError):
            await asyncio.wait_for(task, 10)


def test_coordinator_urls_parse_to_gateway_endpoints() -> None:
    assert parse_coordinator("etcd://10.0.0.1:2379,pi2:2379") == [
        "http://10.0.0.1:2379",
        "http://pi2:2379",
    ]
    for bad in ("http://a:1", "etcd://a", "etcd://a:0", "etcd://:1", "a:1"):
        with pytest.raises(ValueError):
            parse_coordinator(bad)
    assert prefix_end(b"/a/") == b"/a0" and prefix_end(b"\xff") == b"\0"
