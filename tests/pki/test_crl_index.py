"""CRL entries: the same answers whether a CRL is scanned (first lookups) or indexed (later)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caducee.pki.crl import ParsedCrl


def _crl(revoked: dict[int, dt.datetime]) -> x509.CertificateRevocationList:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Index CA")]))
        .last_update(now)
        .next_update(now + dt.timedelta(days=7))
    )
    for serial, when in revoked.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(key, hashes.SHA256())


def test_scanned_and_indexed_lookups_agree() -> None:
    base = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    revoked = {serial: base + dt.timedelta(hours=serial) for serial in range(3, 3000, 7)}
    parsed = ParsedCrl(_crl(revoked), "test")
    asked = [3, 4, 10, 2999, 2996, 1 << 70, 17, 1000, 24] * 6  # past the indexing threshold
    answers = []
    for serial in asked:
        entry = parsed.entry(serial)
        answers.append(None if entry is None else entry.revocation_date_utc)
    assert answers == [revoked.get(serial) for serial in asked]


def test_empty_crl_indexes_to_nothing() -> None:
    parsed = ParsedCrl(_crl({}), "test")
    assert all(parsed.entry(serial) is None for serial in range(40))
