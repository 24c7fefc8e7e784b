"""The CA ledger leader candidates share (eddl.security.ledger), its merge into an authority,
and its op in the replica wire form."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from eddl.leader.replica import PkiOp, ReplicaError, decode, encode
from eddl.security import pki
from eddl.security.authority import Authority, EnrolError
from eddl.security.ledger import Ledger, LedgerError, TokenRecord, merge

NOW = 1_000_000.0


def _token(uses: int, expires_at: float = NOW + 60) -> TokenRecord:
    return TokenRecord("a" * 64, "worker", expires_at, uses)


def test_merging_is_a_union_where_uses_only_go_down_and_expired_entries_drop() -> None:
    ours = Ledger({}, {1: NOW + 10, 2: NOW - 1}, {"0123456789ab": _token(3)})
    theirs = Ledger({}, {1: NOW + 20, 3: NOW + 5}, {"0123456789ab": _token(1)})
    both = merge(ours, theirs, NOW)
    assert both.revoked == {1: NOW + 20, 3: NOW + 5}
    assert both.tokens["0123456789ab"].uses_left == 1
    # Sent twice, or in the other order: the same ledger.
    assert merge(both, theirs, NOW) == both == merge(theirs, ours, NOW)
    # A record with the same id but another secret is not ours to change.
    forged = Ledger({}, {}, {"0123456789ab": TokenRecord("b" * 64, "worker", NOW + 60, 0)})
    assert merge(ours, forged, NOW).tokens["0123456789ab"].uses_left == 3


@pytest.mark.parametrize(
    "raw",
    [
        {"revoked": {"12x": NOW}},
        {"revoked": {"1" * 60: NOW}},
        {"revoked": {"1": float("nan")}},
        {"revoked": {"1": True}},
        {"revoked": [1]},
        {"issued": {"1": {"node": "a b", "role": "worker", "not_after": NOW}}},
        {"issued": {"1": {"node": "w1", "role": "root", "not_after": NOW}}},
        {"tokens": {"short": {}}},
        {"tokens": {"0123456789ab": {"secret_sha256": "x", "role": "worker"}}},
        {"tokens": {"0123456789ab": {**_token(1).__dict__, "uses_left": -1}}},
        {"tokens": {"0123456789ab": {**_token(1).__dict__, "role": "leader"}}},
        {"revoked": {str(i): NOW for i in range(50_001)}},
    ],
)
def test_a_malformed_or_unbounded_ledger_is_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(LedgerError):
        Ledger.from_dict(raw)
    head = json.dumps([{"op": "pki", **raw}]).encode()
    with pytest.raises(ReplicaError):
        decode(struct.pack(">I", len(head)) + head)


def test_a_ledger_round_trips_through_the_replica_wire_form(tmp_path: Path) -> None:
    auth = Authority(tmp_path / "pki")
    auth.new_token("gateway")
    auth.issue(pki.make_csr(pki.new_key(), "w1"), "worker")
    ledger = auth.ledger()
    (op,) = decode(encode([PkiOp(ledger)]))
    assert isinstance(op, PkiOp) and op.ledger == ledger


def test_an_authority_takes_in_a_spent_token_and_a_revocation(tmp_path: Path) -> None:
    root = Authority(tmp_path / "root")
    (tmp_path / "standby").mkdir()
    for part in ("ca.key", "ca.pem"):  # one CA per cluster, given to each candidate
        shutil.copy(root.dir / part, tmp_path / "standby" / part)
    standby = Authority(tmp_path / "standby")
    token = root.new_token("worker")
    standby.merge(root.ledger())
    root.enrol(str(token), pki.make_csr(pki.new_key(), "w1"))
    [serial] = root.revoke_node("w1")
    assert not standby.is_revoked(serial)
    changes: list[None] = []
    standby.on_change = lambda: changes.append(None)
    standby.merge(root.ledger())
    assert standby.is_revoked(serial)
    assert changes == [None]  # the standby's own check saw its list change
    assert standby.ledger().tokens[token.token_id].uses_left == 0
    # Merged again (a re-sent payload): nothing changes.
    before = standby.ledger()
    standby.merge(root.ledger())
    assert standby.ledger() == before
    with pytest.raises(EnrolError, match="already used"):
        standby.enrol(str(token), pki.make_csr(pki.new_key(), "w2"))


def test_a_token_naming_a_node_keeps_its_name_through_the_wire_and_merges(
    tmp_path: Path,
) -> None:
    root = Authority(tmp_path / "root")
    (tmp_path / "standby").mkdir()
    for part in ("ca.key", "ca.pem"):
        shutil.copy(root.dir / part, tmp_path / "standby" / part)
    standby = Authority(tmp_path / "standby")
    token = root.new_token("subleader", node_id="w1.lead")
    (op,) = decode(encode([PkiOp(root.ledger())]))
    assert isinstance(op, PkiOp) and op.ledger.tokens[token.token_id].node_id == "w1.lead"
    standby.merge(op.ledger)
    root.merge(standby.ledger())  # the root's own record rewritten by a merge
    for auth in (root, standby):
        with pytest.raises(EnrolError, match="admits node"):
            auth.enrol(str(token), pki.make_csr(pki.new_key(), "w2.lead"))
    issued = standby.enrol(str(token), pki.make_csr(pki.new_key(), "w1.lead"))
    assert issued.info.role == "subleader"
    bad = {"secret_sha256": "a" * 64, "role": "subleader", "expires_at": NOW, "uses_left": 1}
    with pytest.raises(LedgerError, match="node id"):
        Ledger.from_dict({"tokens": {"0" * 12: {**bad, "node_id": "bad name"}}})
