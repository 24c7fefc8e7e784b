"""The static leadership: the one source of the term, from the store's leadership record."""

from __future__ import annotations

from eddl.leader.leadership import StaticLeadership
from eddl.leader.ports import LeadershipState
from eddl.leader.store import LeadershipRecord, MemoryStore


def test_each_root_claims_a_term_above_the_stored_one_and_records_it() -> None:
    store = MemoryStore()
    first = StaticLeadership(store, leader_id="a", clock=lambda: 1.0)
    assert first.term == 1 and first.is_root() and first.root_hint() == ""
    second = StaticLeadership(store, leader_id="b", clock=lambda: 2.0)
    assert second.term == 2
    assert store.leadership() == LeadershipRecord(2, "b", "", 2.0)
    assert StaticLeadership(store, min_term=7).term == 7  # never below the asked minimum


def test_a_legacy_stored_term_is_honoured() -> None:
    store = MemoryStore()
    store.set_value("term", 5)
    assert StaticLeadership(store).term == 6


def test_the_bound_address_is_recorded_and_announced() -> None:
    store = MemoryStore()
    leadership = StaticLeadership(store, leader_id="a", clock=lambda: 3.0)
    heard: list[LeadershipState] = []
    unsubscribe = leadership.subscribe(heard.append)
    leadership.serving_at("127.0.0.1:5000")
    leadership.serving_at("127.0.0.1:5000")  # no change, no notification
    assert heard == [LeadershipState(1, True, "127.0.0.1:5000")]
    assert store.leadership() == LeadershipRecord(1, "a", "127.0.0.1:5000", 3.0)
    unsubscribe()
    leadership.serving_at("127.0.0.1:6000")
    assert len(heard) == 1


def test_a_follower_claims_nothing_and_points_to_the_root() -> None:
    store = MemoryStore()
    StaticLeadership(store, leader_id="root")
    follower = StaticLeadership(store, root=False, root_hint="10.0.0.1:50051")
    assert follower.term == 1 and not follower.is_root()
    assert follower.root_hint() == "10.0.0.1:50051"
    follower.serving_at("127.0.0.1:1")  # a follower never records itself as the root
    record = store.leadership()
    assert record is not None and record.leader_id == "root" and record.address == ""
