"""Membership: tokens, heartbeats with a patience of two missed beats, expiry, sessions."""

from __future__ import annotations

import pytest

from eddl.leader.capability import McuCapabilities
from eddl.leader.errors import (
    InvalidArgumentError,
    JoinRefusedError,
    NodeExpiredError,
    UnknownNodeError,
)
from eddl.leader.membership import Membership, Node, NodeProfile, Role
from tests.unit.test_leader_support import Clock


def make(clock: Clock) -> tuple[Membership, list[tuple[str, str]]]:
    m = Membership(
        heartbeat_interval=1.0,
        patience=2,
        jitter=0.1,
        now=clock,
        join_tokens={"w-secret": Role.WORKER, "l-secret": Role.LEADER},
    )
    gone: list[tuple[str, str]] = []

    def on_gone(node: Node, kind: str) -> None:
        gone.append((node.node_id, kind))

    m.on_gone(on_gone)
    return m, gone


def test_join_heartbeat_leave() -> None:
    clock = Clock()
    m, gone = make(clock)
    node = m.join("a", "w-secret", profile=NodeProfile(benchmark_sps=50.0))
    assert "a" in m and len(m) == 1 and node.profile.benchmark_sps == 50.0
    clock.advance(0.5)
    assert m.heartbeat("a").last_seen == clock()
    m.leave("a")
    assert "a" not in m and gone == [("a", "left")]
    with pytest.raises(UnknownNodeError, match="left"):
        m.heartbeat("a")


def test_wrong_or_missing_token_is_refused_and_changes_nothing() -> None:
    m, _ = make(Clock())
    for token in ("", "nope", "w-secret "):
        with pytest.raises(JoinRefusedError):
            m.join("a", token)
    assert m.nodes() == []
    with pytest.raises(JoinRefusedError, match="does not admit leaders"):
        m.join("l", "w-secret", role=Role.LEADER)
    assert m.join("l", "l-secret", role="leader").role is Role.LEADER


def test_open_cluster_without_tokens_admits_anyone() -> None:
    m = Membership(now=Clock())
    assert m.join("a", "").alive


@pytest.mark.parametrize("node_id", ["", "x" * 129, "bad\nid"])
def test_bad_node_ids_are_refused(node_id: str) -> None:
    m, _ = make(Clock())
    with pytest.raises(ValueError, match="node id"):
        m.join(node_id, "w-secret")
    with pytest.raises(ValueError, match="unknown role"):
        m.join("a", "w-secret", role="boss")
    assert m.nodes() == []


def test_node_is_gone_after_two_missed_beats_not_before() -> None:
    clock = Clock()
    m, gone = make(clock)
    m.join("a", "w-secret")
    m.join("b", "w-secret")
    assert m.timeout == pytest.approx(2.2)
    clock.advance(2.1)  # two beats are late, but within the allowed jitter
    m.heartbeat("b")
    assert m.expire() == [] and gone == []
    clock.advance(0.2)  # a: silent 2.3 s > 2 × 1.0 × 1.1
    assert [n.node_id for n in m.expire()] == ["a"]
    assert gone == [("a", "expired")]
    assert m.expire() == []  # declared once only
    with pytest.raises(NodeExpiredError, match="join again"):
        m.heartbeat("a")
    assert "b" in m


def test_rejoin_opens_a_new_session_and_ends_the_old_one() -> None:
    clock = Clock()
    m, gone = make(clock)
    first = m.join("a", "w-secret")
    second = m.join("a", "w-secret")
    assert second.session > first.session
    assert gone == [("a", "left")]
    with pytest.raises(NodeExpiredError, match="session"):
        m.require("a", session=first.session)
    assert m.require("a", session=second.session) is second


def test_expired_node_can_rejoin_and_old_records_are_forgotten() -> None:
    clock = Clock()
    m, _ = make(clock)
    m.join("a", "w-secret")
    clock.advance(5)
    m.expire()
    assert m.join("a", "w-secret").alive
    m.join("b", "w-secret")
    clock.advance(5)
    m.expire()
    clock.advance(100)
    assert sorted(m.forget_gone(older_than=50)) == ["a", "b"]
    assert m.nodes() == []


def test_departed_nodes_are_kept_only_up_to_a_bound() -> None:
    clock = Clock()
    m = Membership(heartbeat_interval=1.0, now=clock, max_departed=3)
    for i in range(10):
        m.join(f"n{i}", "")
        clock.advance(1)
        m.leave(f"n{i}")
    m.join("alive", "")
    # Every leaver stays listed until a sweep; the sweep keeps the 3 most recent ones.
    assert len(m.nodes()) == 11
    assert m.forget_gone(older_than=3600) == [f"n{i}" for i in range(7)]
    assert [n.node_id for n in m.nodes()] == ["n7", "n8", "n9", "alive"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Membership(heartbeat_interval=0)
    with pytest.raises(ValueError):
        Membership(patience=0)
    with pytest.raises(ValueError):
        Membership(jitter=1.0)


def _mcu(arena: int = 53_248) -> McuCapabilities:
    return McuCapabilities(
        gateway_id="pi1",
        device="/dev/ttyACM0",
        board="ram64",
        arena_bytes=arena,
        algorithms=("tifed", "tifed-single"),
        max_layers=4,
        ram_bytes=65_536,
    )


def test_mcu_node_keeps_its_capabilities_across_heartbeats() -> None:
    clock = Clock()
    m, _ = make(clock)
    node = m.join("pi1.mcu0", "w-secret", role="mcu", mcu=_mcu())
    assert node.role is Role.MCU and node.mcu == _mcu()
    clock.advance(0.5)
    # A microcontroller has no psutil: its gateway's beats carry no dynamic profile.
    m.heartbeat("pi1.mcu0", profile=NodeProfile(benchmark_sps=120.0))
    assert m.require("pi1.mcu0").mcu == _mcu()
    row = node.to_dict()
    assert row["role"] == "mcu" and row["mcu"]["board"] == "ram64"
    assert row["mcu"]["algorithms"] == ["tifed", "tifed-single"]
    assert m.join("w1", "w-secret").to_dict()["mcu"] is None


def test_mcu_role_without_capabilities_and_capabilities_on_a_worker_are_refused() -> None:
    clock = Clock()
    m, gone = make(clock)
    with pytest.raises(InvalidArgumentError, match="role mcu needs an McuProfile"):
        m.join("pi1.mcu0", "w-secret", role="mcu")
    with pytest.raises(InvalidArgumentError, match="only for role mcu, not worker"):
        m.join("w1", "w-secret", role="worker", mcu=_mcu())
    assert m.nodes() == [] and gone == []
    # A present node is not disturbed by a refused rejoin.
    first = m.join("pi1.mcu0", "w-secret", role="mcu", mcu=_mcu())
    with pytest.raises(InvalidArgumentError):
        m.join("pi1.mcu0", "w-secret", role="mcu")
    assert m.require("pi1.mcu0") is first and gone == []


def test_mcu_rejoins_after_leaving_with_a_new_session() -> None:
    clock = Clock()
    m, gone = make(clock)
    old = m.join("pi1.mcu0", "w-secret", role="mcu", mcu=_mcu())
    m.leave("pi1.mcu0", "device lost: no reply\x00 to HELLO")
    assert gone == [("pi1.mcu0", "left")]
    assert old.to_dict()["leave_reason"] == "device lost: no reply to HELLO"
    with pytest.raises(UnknownNodeError, match="left; join again"):
        m.require("pi1.mcu0")
    new = m.join("pi1.mcu0", "w-secret", role="mcu", mcu=_mcu(arena=40_000))
    assert new.session > old.session and new.mcu is not None and new.mcu.arena_bytes == 40_000
