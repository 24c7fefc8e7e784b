"""Keys, CA, CSRs and certificates (eddl.security.pki) and the token seal."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from eddl.security import pki
from eddl.security.seal import Sealed, SealError, open_secret, seal_secret


def test_a_signed_certificate_names_the_node_and_role_and_chains_to_the_ca() -> None:
    ca_key, ca = pki.create_ca()
    key = pki.new_key()
    cert = pki.sign_csr(ca_key, ca, pki.make_csr(key, "w1"), role="worker", lifetime_s=60)
    cert.verify_directly_issued_by(ca)
    info = pki.cert_info(cert)
    assert (info.node_id, info.role) == ("w1", "worker")
    assert 65 <= info.not_after - info.not_before <= 67  # 60 s plus the back-dating (6 s)
    assert cert.public_key() == key.public_key()


def test_the_ca_hash_is_the_sha256_of_its_public_key_and_differs_per_ca() -> None:
    _, a = pki.create_ca()
    _, b = pki.create_ca()
    assert len(pki.ca_hash(a)) == 64 and pki.ca_hash(a) != pki.ca_hash(b)
    assert pki.ca_hash(a) == pki.ca_hash(pki.load_cert(pki.cert_pem(a)))


def test_a_csr_for_another_node_id_is_refused_when_the_id_is_fixed() -> None:
    ca_key, ca = pki.create_ca()
    csr = pki.make_csr(pki.new_key(), "w2")
    with pytest.raises(pki.PkiError, match="another node"):
        pki.sign_csr(ca_key, ca, csr, role="worker", lifetime_s=60, node_id="w1")


@pytest.mark.parametrize("node_id", ["", "a b", "-x", "x" * 129, "ü"])
def test_bad_node_ids_are_refused(node_id: str) -> None:
    with pytest.raises(pki.PkiError):
        pki.make_csr(pki.new_key(), node_id)


def test_a_non_p256_key_and_garbage_are_refused() -> None:
    ca_key, ca = pki.create_ca()
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(pki.PkiError, match="P-256"):
        pki.sign_csr(ca_key, ca, pki.make_csr(other, "w1"), role="worker", lifetime_s=60)
    with pytest.raises(pki.PkiError):
        pki.sign_csr(ca_key, ca, b"not a csr", role="worker", lifetime_s=60)
    with pytest.raises(pki.PkiError):
        pki.load_cert(b"x" * (pki.MAX_PEM_BYTES + 1))


def test_a_sealed_secret_opens_only_with_the_ca_key_for_the_same_csr_and_token() -> None:
    ca_key, ca = pki.create_ca()
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    csr = pki.make_csr(pki.new_key(), "w1")
    sealed = seal_secret(public, "abc", "s3cret", csr)
    assert b"s3cret" not in sealed.ciphertext
    assert open_secret(ca_key, "abc", sealed, csr) == "s3cret"
    other_csr = pki.make_csr(pki.new_key(), "w1")
    other_key, _ = pki.create_ca()
    for args in (
        (ca_key, "abc", sealed, other_csr),
        (ca_key, "abd", sealed, csr),
        (other_key, "abc", sealed, csr),
        (ca_key, "abc", Sealed(sealed.ephemeral_public, b"x" * 12, sealed.ciphertext), csr),
        (ca_key, "abc", Sealed(b"short", sealed.nonce, sealed.ciphertext), csr),
    ):
        with pytest.raises(SealError):
            open_secret(*args)
