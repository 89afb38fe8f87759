"""TEST certificate issuer for cards, on a throw-away :mod:`caducee.devpki` CA.

Until the operator PKI lands, ``caducee card issue`` certifies card keys with this. Every
certificate it makes carries devpki's "TEST certificates - not for production" organisation.
It certifies a bare public key (the private half is on the card), which devpki cannot.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caducee import devpki
from caducee.card.issue import CertificateIssuer, KeyRole
from caducee.card.objects import PublicKey
from caducee.errors import UsageError


def devpki_issuer(
    ca: devpki.TestCA,
    email: str,
    name: str | None = None,
    *,
    days: int = 825,
    not_before: dt.datetime | None = None,
) -> CertificateIssuer:
    """An issuer callback signing with the TEST CA ``ca`` for the holder ``email``."""

    def issue(public_key: PublicKey, role: KeyRole) -> x509.Certificate:
        is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
        sign, enc = role == "signature", role == "encryption"
        start = not_before or dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(
            minutes=5
        )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, name or email.split("@")[0]),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, devpki.TEST_ORG),
                x509.NameAttribute(NameOID.EMAIL_ADDRESS, email),
            ]
        )
        ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        usage = x509.KeyUsage(
            digital_signature=sign,
            content_commitment=sign,
            key_encipherment=enc and not is_ec,
            data_encipherment=False,
            key_agreement=enc and is_ec,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )

    return issue


def load_test_ca(cert_pem: bytes, key_pem: bytes) -> devpki.TestCA:
    """A TEST CA from PEM files (for ``caducee card issue --ca-cert/--ca-key``)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError):
        raise UsageError("cannot read the test CA certificate or key (PEM, unencrypted)") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError("the test CA key must be RSA or EC")
    return devpki.TestCA(key, cert)
