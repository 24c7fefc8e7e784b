"""Keys, the cluster CA, CSRs and certificates, with ``cryptography`` (never openssl).

Every key is EC P-256. A node's certificate names the node in its common name and its role in
its organizational unit; it is short-lived and signed by the cluster CA. The CA's identity in a
join token is the SHA-256 of its public key (SubjectPublicKeyInfo, DER), as kubeadm pins it.

A leader's certificate also names each of its hosts as ``eddl-leader.<host>``: the CA adds
those names for the roles that lead (``leader``, and ``subleader``, which leads its group's
workers) only and refuses a CSR asking for one, so a client that checks the server name
``eddl-leader.<host it dialled>`` (:func:`leader_name`) accepts only a leader at that address:
the TLS name check is the server's role check.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "LEADER_PREFIX",
    "LEADING_ROLES",
    "CertInfo",
    "PkiError",
    "ca_hash",
    "cert_info",
    "cert_pem",
    "check_csr",
    "check_node_id",
    "create_ca",
    "key_pem",
    "leader_name",
    "load_cert",
    "load_key",
    "make_csr",
    "new_key",
    "sign_csr",
]

MAX_PEM_BYTES = 16 * 1024
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
MAX_SANS = 16
LEADER_PREFIX = "eddl-leader."
# The roles whose certificates carry the leader names: the root and its candidates, and a
# sub-leader, which its group's workers dial as their leader.
LEADING_ROLES = frozenset({"leader", "subleader"})


class PkiError(ValueError):
    """A key, CSR or certificate is malformed or does not fit the cluster's rules."""


@dataclass(frozen=True)
class CertInfo:
    """What the cluster reads from a certificate."""

    node_id: str
    role: str
    serial: int
    not_after: float  # POSIX seconds
    not_before: float


def check_node_id(node_id: str) -> str:
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise PkiError("node id must be 1-128 of [A-Za-z0-9._:-], starting alphanumeric")
    return node_id


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem[:MAX_PEM_BYTES], password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError("not a PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("only EC keys are used")
    return key


def load_cert(pem: bytes) -> x509.Certificate:
    if len(pem) > MAX_PEM_BYTES:
        raise PkiError("certificate too large")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError("not a PEM certificate") from exc


def ca_hash(ca_cert: x509.Certificate) -> str:
    """SHA-256 (hex) of the CA's public key, DER SubjectPublicKeyInfo: the pin in a token."""
    der = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(
    name: str = "EDDL cluster CA", years: int = 10
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not _HOST.fullmatch(name):
        raise PkiError(f"not a host name or address: {name[:64]!r}")
    return x509.DNSName(name)


def leader_name(host: str) -> str:
    """The name a leader's certificate carries for ``host`` (a name or an address)."""
    return LEADER_PREFIX + host


def make_csr(key: ec.EllipticCurvePrivateKey, node_id: str, hosts: tuple[str, ...] = ()) -> bytes:
    """A CSR naming ``node_id``, asking for ``hosts`` (names or addresses) as SANs."""
    check_node_id(node_id)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _csr_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names: list[x509.GeneralName] = [
        n for n in ext.value if isinstance(n, x509.DNSName | x509.IPAddress)
    ]
    if len(names) > MAX_SANS:
        raise PkiError(f"at most {MAX_SANS} subject alternative names")
    if any(isinstance(n, x509.DNSName) and n.value.startswith(LEADER_PREFIX) for n in names):
        raise PkiError(f"names starting {LEADER_PREFIX!r} are the CA's to give (leaders only)")
    return names


def check_csr(csr_pem: bytes) -> str:
    """The node id of a CSR the CA would sign (else :class:`PkiError`)."""
    return _checked_csr(csr_pem)[1]


def _checked_csr(
    csr_pem: bytes,
) -> tuple[x509.CertificateSigningRequest, str, list[x509.GeneralName]]:
    if len(csr_pem) > MAX_PEM_BYTES:
        raise PkiError("CSR too large")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiError("not a PEM CSR") from exc
    if not csr.is_signature_valid:
        raise PkiError("CSR signature is invalid")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise PkiError("the CSR's key must be EC P-256")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise PkiError("the CSR must name exactly one node (common name)")
    return csr, check_node_id(str(cns[0].value)), _csr_names(csr)


def sign_csr(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    csr_pem: bytes,
    *,
    role: str,
    lifetime_s: float,
    node_id: str | None = None,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign a node's CSR: CN = the node id (the CSR's, or ``node_id`` which it must equal),
    OU = ``role``, SANs = the node id plus the hosts the CSR asks for (and, for a leading role,
    each of them as :func:`leader_name`)."""
    csr, cn, asked = _checked_csr(csr_pem)
    if node_id is not None and cn != node_id:
        raise PkiError("the CSR names another node")
    public = csr.public_key()
    names: list[x509.GeneralName] = [x509.DNSName(cn)] if _HOST.fullmatch(cn) else []
    names += [n for n in asked if n not in names]
    if role in LEADING_ROLES:
        names += [x509.DNSName(leader_name(str(n.value))) for n in list(names)]
    now = now or _now()
    # Back-dated a little for clocks slightly behind; little enough that two thirds of the
    # lifetime (when nodes renew) stays in the future.
    skew = dt.timedelta(seconds=min(60.0, max(lifetime_s, 0.0) / 10))
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - skew)
        .not_valid_after(now + dt.timedelta(seconds=lifetime_s))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def cert_info(cert: x509.Certificate) -> CertInfo:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(cns) != 1 or len(ous) != 1:
        raise PkiError("a node certificate names one node and one role")
    return CertInfo(
        node_id=str(cns[0].value),
        role=str(ous[0].value),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc.timestamp(),
        not_before=cert.not_valid_before_utc.timestamp(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
