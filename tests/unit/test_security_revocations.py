"""A sub-leader's copy of the root's revocation list: checked whole, merged, expired entries
dropped; a bad list changes nothing."""

from __future__ import annotations

import math

import pytest

from eddl.proto.v1 import security_pb2
from eddl.security.revocations import (
    MAX_REVOKED,
    RevocationList,
    RevocationListError,
    Revocations,
)

NOW = 1_000_000.0


def message(entries: dict[int, float], revision: int = 1) -> security_pb2.RevocationList:
    return Revocations(revision, entries).to_proto()


def test_a_list_round_trips_through_the_wire_form() -> None:
    entries = {1: NOW + 1, (1 << 159) + 7: NOW + 2, 255: NOW + 3}
    assert Revocations.from_proto(message(entries, 4)) == Revocations(4, entries)


def test_lists_merge_and_a_revocation_goes_away_only_with_its_expiry() -> None:
    clock = [NOW]
    copy = RevocationList(clock=lambda: clock[0])
    copy.apply(message({11: NOW + 10, 12: NOW + 100}))
    # A later list without 11 (or an old one sent late) does not undo it.
    copy.apply(message({13: NOW + 10}, revision=2))
    assert all(copy.is_revoked(s) for s in (11, 12, 13)) and copy.revision == 2
    clock[0] = NOW + 50
    copy.apply(message({}, revision=3))
    assert not copy.is_revoked(11) and not copy.is_revoked(13) and copy.is_revoked(12)
    # An entry already expired when it arrives is not kept.
    copy.apply(message({14: NOW + 1}, revision=4))
    assert not copy.is_revoked(14)


def _entry(serial: bytes, not_after: float) -> security_pb2.RevokedCertificate:
    return security_pb2.RevokedCertificate(serial=serial, not_after=not_after)


@pytest.mark.parametrize(
    "bad",
    [
        security_pb2.RevocationList(
            revision=9, revoked=[_entry(b"\x05", NOW + 10)] * (MAX_REVOKED + 1)
        ),
        security_pb2.RevocationList(revoked=[_entry(b"\x01" * 21, NOW + 10)]),
        security_pb2.RevocationList(revoked=[_entry(b"", NOW + 10)]),
        security_pb2.RevocationList(revoked=[_entry(b"\x00\x00", NOW + 10)]),
        security_pb2.RevocationList(revoked=[_entry(b"\x05", math.nan)]),
        security_pb2.RevocationList(revoked=[_entry(b"\x05", math.inf)]),
        security_pb2.RevocationList(revoked=[_entry(b"\x05", -1.0)]),
        # One bad entry after a good one: the good one is not taken either.
        security_pb2.RevocationList(revoked=[_entry(b"\x06", NOW + 10), _entry(b"", 1.0)]),
    ],
    ids=["over-count", "long-serial", "empty-serial", "zero-serial", "nan", "inf", "negative",
         "one-bad-entry"],
)  # fmt: skip
def test_a_bad_list_is_refused_whole_and_changes_nothing(
    bad: security_pb2.RevocationList,
) -> None:
    copy = RevocationList(clock=lambda: NOW)
    copy.apply(message({3: NOW + 10}, revision=2))
    with pytest.raises(RevocationListError):
        copy.apply(bad)
    assert copy.revision == 2 and copy.lists == 1 and len(copy) == 1
    assert copy.is_revoked(3) and not copy.is_revoked(5) and not copy.is_revoked(6)


def test_the_merged_copy_is_bounded_too() -> None:
    copy = RevocationList(clock=lambda: NOW)
    copy.apply(message({s: NOW + 10 for s in range(1, MAX_REVOKED + 1)}))
    with pytest.raises(RevocationListError):
        copy.apply(message({MAX_REVOKED + 1: NOW + 10}, revision=2))
    assert len(copy) == MAX_REVOKED and copy.revision == 1
