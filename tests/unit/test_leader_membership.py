"""Membership: tokens, heartbeats with a patience of two missed beats, expiry, sessions."""

from __future__ import annotations

import pytest

from eddl.leader.errors import JoinRefusedError, NodeExpiredError, UnknownNodeError
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
    assert m.forget_gone(older_than=50) == 2
    assert m.nodes() == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Membership(heartbeat_interval=0)
    with pytest.raises(ValueError):
        Membership(patience=0)
    with pytest.raises(ValueError):
        Membership(jitter=1.0)
