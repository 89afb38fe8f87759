"""Reading certificates from files as users have them: PEM (one or many), DER, PKCS#7."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from caducee.errors import UsageError


def load_certificates(data: bytes, source: str = "input") -> list[x509.Certificate]:
    """Every certificate in ``data``; raises :class:`UsageError` naming ``source`` if none."""
    with warnings.catch_warnings():
        # openssl crl2pkcs7 writes its SET OF unsorted; cryptography warns and reads it anyway.
        warnings.simplefilter("ignore", UserWarning)
        return _load(data, source)


def _load(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN PKCS7-----" in data or b"-----BEGIN CMS-----" in data:
            certs = pkcs7.load_pem_pkcs7_certificates(data)
        elif b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            try:
                certs = [x509.load_der_x509_certificate(data)]
            except ValueError:
                certs = pkcs7.load_der_pkcs7_certificates(data)
    except ValueError:
        raise UsageError(
            f"{source}: no readable certificate (PEM, DER or PKCS#7 expected)"
        ) from None
    if not certs:
        raise UsageError(f"{source}: no certificate found")
    return list(certs)


def load_certificate(data: bytes, source: str = "input") -> x509.Certificate:
    certs = load_certificates(data, source)
    if len(certs) != 1:
        raise UsageError(f"{source}: expected one certificate, found {len(certs)}")
    return certs[0]
