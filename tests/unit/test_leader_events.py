"""Job events: gapless numbering, replay since a number, listeners, bounded memory."""

from __future__ import annotations

import pytest

from eddl.leader.events import Event, EventKind, EventLog


def test_events_are_numbered_without_gaps_and_replayed_since_a_number() -> None:
    log = EventLog("j", first_seq=5)
    a = log.append(EventKind.JOB_STARTED, 1.0, "started", version=0)
    b = log.append(EventKind.MODEL_UPDATED, 2.0, "v1", version=1)
    assert (a.seq, b.seq, log.last_seq) == (5, 6, 6)
    assert log.since(5) == [b] and log.since(0) == [a, b]
    assert log.last(EventKind.JOB_STARTED) is a and log.last(EventKind.NODE_LEFT) is None


def test_listeners_hear_new_events_until_they_unsubscribe() -> None:
    log = EventLog("j")
    heard: list[Event] = []
    unsubscribe = log.subscribe(heard.append)
    log.append(EventKind.NODE_JOINED, 1.0, "a joined")
    unsubscribe()
    unsubscribe()  # twice is harmless
    log.append(EventKind.NODE_LEFT, 2.0, "a left")
    assert [e.kind for e in heard] == [EventKind.NODE_JOINED]


def test_memory_is_bounded_but_numbering_goes_on() -> None:
    log = EventLog("j", keep=3)
    for i in range(10):
        log.append(EventKind.MODEL_UPDATED, float(i), f"v{i}")
    assert [e.seq for e in log.since(0)] == [8, 9, 10]


def test_round_trip_through_a_dict() -> None:
    e = Event("j", 3, 4.5, EventKind.POLICY_SWITCHED, "sync -> async", {"reason": "spread"})
    assert Event.from_dict(e.to_dict()) == e
    assert e.data_json() == '{"reason": "spread"}'
    with pytest.raises(ValueError):
        Event.from_dict({**e.to_dict(), "kind": "exploded"})
    with pytest.raises(ValueError):
        EventLog("j", first_seq=0)
