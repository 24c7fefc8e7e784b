"""Seal a join token's secret to the CA's public key, bound to one CSR.

The bootstrap port has no TLS (the caller has no certificate and no CA yet), so the secret is
encrypted: ECDH between an ephemeral P-256 key and the CA's key, HKDF-SHA256 over the token id
and the CSR's hash, AES-256-GCM. An eavesdropper learns nothing reusable; replaying the request
gets a certificate for a key it does not hold, and only once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SealError", "Sealed", "open_secret", "seal_secret"]


class SealError(ValueError):
    """A sealed secret cannot be opened (wrong key, CSR or token id; tampered)."""


@dataclass(frozen=True)
class Sealed:
    ephemeral_public: bytes
    nonce: bytes
    ciphertext: bytes


def _key(shared: bytes, token_id: str, csr_pem: bytes) -> bytes:
    info = b"eddl-enrol-v1|" + token_id.encode() + b"|" + hashlib.sha256(csr_pem).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal_secret(
    ca_public: ec.EllipticCurvePublicKey, token_id: str, secret: str, csr_pem: bytes
) -> Sealed:
    eph = ec.generate_private_key(ec.SECP256R1())
    key = _key(eph.exchange(ec.ECDH(), ca_public), token_id, csr_pem)
    nonce = os.urandom(12)
    return Sealed(
        eph.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        nonce,
        AESGCM(key).encrypt(nonce, secret.encode(), None),
    )


def open_secret(
    ca_key: ec.EllipticCurvePrivateKey, token_id: str, sealed: Sealed, csr_pem: bytes
) -> str:
    if len(sealed.ephemeral_public) != 65 or len(sealed.nonce) != 12:
        raise SealError("malformed sealed secret")
    if len(sealed.ciphertext) > 256:
        raise SealError("sealed secret too long")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sealed.ephemeral_public)
        key = _key(ca_key.exchange(ec.ECDH(), peer), token_id, csr_pem)
        plain = AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, None)
    except (ValueError, InvalidTag) as exc:
        raise SealError("the token secret does not open for this CA and CSR") from exc
    return plain.decode("ascii", errors="replace")
