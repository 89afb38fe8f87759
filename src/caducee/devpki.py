"""Throw-away test PKI: a CA and professionals' certificates generated in memory.

For the demo, tests and benchmarks only. Every certificate made here carries "TEST" in its
organisation so nobody mistakes it for one issued by an operator's certification authority.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caducee.keys.software import PrivateKey, SoftwareKey

TEST_ORG = "caducee TEST certificates - not for production"


@dataclasses.dataclass(frozen=True)
class TestCA:
    key: PrivateKey
    certificate: x509.Certificate


@dataclasses.dataclass(frozen=True)
class TestIdentity:
    """A professional with separate signature and encryption key pairs."""

    email: str
    signing: SoftwareKey
    encryption: SoftwareKey
    ca: TestCA


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind in ("ec", "p256"):
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unknown key kind {kind!r}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(name: str = "caducee Test CA", kind: str = "rsa") -> TestCA:
    key = _new_key(kind)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORG),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
    return TestCA(key, cert)


def issue_certificate(
    ca: TestCA,
    email: str,
    key: PrivateKey,
    *,
    purpose: str,
    name: str | None = None,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue a certificate for ``purpose`` "signature", "encryption" or "both"."""
    is_ec = isinstance(key, ec.EllipticCurvePrivateKey)
    sign = purpose in ("signature", "both")
    enc = purpose in ("encryption", "both")
    start = not_before or (_now() - dt.timedelta(days=1))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name or email.split("@")[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_ORG),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
        ]
    )
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=sign,
                content_commitment=sign,
                key_encipherment=enc and not is_ec,
                data_encipherment=False,
                key_agreement=enc and is_ec,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca.key, hashes.SHA256())
    )


def make_identity(
    ca: TestCA, email: str, kind: str = "rsa", name: str | None = None
) -> TestIdentity:
    """A professional with a signature key pair and a separate encryption key pair."""
    sig_key = _new_key(kind)
    enc_key = _new_key(kind)
    return TestIdentity(
        email=email,
        signing=SoftwareKey(
            sig_key, issue_certificate(ca, email, sig_key, purpose="signature", name=name)
        ),
        encryption=SoftwareKey(
            enc_key, issue_certificate(ca, email, enc_key, purpose="encryption", name=name)
        ),
        ca=ca,
    )
