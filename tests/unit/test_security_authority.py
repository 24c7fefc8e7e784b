"""The cluster CA's authority and its join tokens (eddl.security.authority, .tokens)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from eddl.security import pki
from eddl.security.authority import Authority, EnrolError
from eddl.security.tokens import JoinToken, TokenError, TokenStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ca_key_is_private_and_the_ca_survives_a_restart(tmp_path: Path) -> None:
    first = Authority(tmp_path / "pki")
    mode = stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode)
    assert mode == 0o600
    again = Authority(tmp_path / "pki")
    assert again.ca_hash == first.ca_hash


def test_a_token_pins_the_ca_and_the_store_keeps_only_a_hash(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    token = authority.new_token("gateway", ttl_s=60)
    text = str(token)
    assert text.startswith(f"EDDL1.{authority.ca_hash}.")
    assert JoinToken.parse(text) == token
    stored = (tmp_path / "pki" / "tokens.json").read_text()
    assert token.secret not in stored and token.token_id in stored


def test_a_token_admits_one_node_once(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    token = str(authority.new_token("worker", ttl_s=60))
    issued = authority.enrol(token, pki.make_csr(pki.new_key(), "w1"))
    assert (issued.info.node_id, issued.info.role) == ("w1", "worker")
    with pytest.raises(EnrolError, match="already used"):
        authority.enrol(token, pki.make_csr(pki.new_key(), "w2"))


def test_a_token_after_its_ttl_or_with_a_wrong_secret_is_refused(tmp_path: Path) -> None:
    clock = Clock()
    store = TokenStore(tmp_path / "tokens.json", clock=clock)
    token = store.create("ab" * 32, "worker", ttl_s=10)
    forged = JoinToken(token.ca_hash, token.token_id, "0" * 32)
    with pytest.raises(TokenError, match="unknown or expired"):
        store.consume(forged)
    clock.now += 11
    with pytest.raises(TokenError, match="unknown or expired"):
        store.consume(token)


def test_a_token_of_another_ca_and_malformed_tokens_are_refused(tmp_path: Path) -> None:
    a = Authority(tmp_path / "a")
    b = Authority(tmp_path / "b")
    with pytest.raises(EnrolError, match="another cluster CA"):
        a.enrol(str(b.new_token()), pki.make_csr(pki.new_key(), "w1"))
    for text in ("", "EDDL1.x.y.z", "EDDL2." + "a" * 64 + ".abcdefabcdef." + "a" * 32):
        with pytest.raises(TokenError):
            JoinToken.parse(text)
    with pytest.raises(TokenError):
        a.new_token("root")
    with pytest.raises(TokenError):
        a.new_token("worker", ttl_s=0)


def test_a_bad_csr_does_not_spend_the_token(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    token = str(authority.new_token())
    with pytest.raises(EnrolError):
        authority.enrol(token, b"garbage")
    assert authority.enrol(token, pki.make_csr(pki.new_key(), "w1")).info.node_id == "w1"


def test_renewal_keeps_the_id_and_role_and_revocation_covers_every_live_serial(
    tmp_path: Path,
) -> None:
    authority = Authority(tmp_path / "pki")
    first = authority.enrol(str(authority.new_token("gateway")), pki.make_csr(pki.new_key(), "g"))
    second = authority.renew(pki.make_csr(pki.new_key(), "g"), first.info)
    assert (second.info.node_id, second.info.role) == ("g", "gateway")
    assert second.info.serial != first.info.serial
    with pytest.raises(EnrolError, match="another node"):
        authority.renew(pki.make_csr(pki.new_key(), "other"), first.info)
    assert not authority.is_revoked(first.info.serial)
    revoked = authority.revoke_node("g")
    assert sorted(revoked) == sorted([first.info.serial, second.info.serial])
    assert authority.is_revoked(first.info.serial) and authority.is_revoked(second.info.serial)
    # Another process (``eddl node revoke``) sees the same list.
    assert Authority(tmp_path / "pki").is_revoked(second.info.serial)


def test_a_many_use_token_admits_exactly_its_count(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    token = str(authority.new_token("worker", ttl_s=60, uses=2))
    for node in ("w1", "w2"):
        assert authority.enrol(token, pki.make_csr(pki.new_key(), node)).info.node_id == node
    with pytest.raises(EnrolError, match="already used"):
        authority.enrol(token, pki.make_csr(pki.new_key(), "w3"))
    with pytest.raises(TokenError):
        authority.new_token("worker", uses=0)


def test_a_token_naming_a_node_admits_that_node_only_and_is_not_spent_by_another(
    tmp_path: Path,
) -> None:
    auth = Authority(tmp_path / "pki")
    token = str(auth.new_token("subleader", node_id="w1.lead"))
    with pytest.raises(EnrolError, match=r"admits node 'w1\.lead' only"):
        auth.enrol(token, pki.make_csr(pki.new_key(), "w2.lead"))
    with pytest.raises(EnrolError, match=r"admits node 'w1\.lead' only"):
        auth.enrol(token, pki.make_csr(pki.new_key(), "w1"))
    issued = auth.enrol(token, pki.make_csr(pki.new_key(), "w1.lead"))  # still unspent
    assert (issued.info.node_id, issued.info.role) == ("w1.lead", "subleader")
    with pytest.raises(EnrolError, match="already used"):
        auth.enrol(token, pki.make_csr(pki.new_key(), "w1.lead"))
