"""The directory contract without any backend: entries, purposes, queries, publish checks."""

from __future__ import annotations

import pytest
from cryptography import x509

from caducee import devpki
from caducee.directory.api import (
    ENCRYPTION,
    SIGNATURE,
    DirectoryEntry,
    InvalidEntryError,
    MalformedCertificateError,
    Query,
    certificate_purposes,
    decode_certificate,
    der,
    entry_from_certificate,
)
from caducee.directory.sqlite import SqliteDirectory
from caducee.errors import DirectoryError, UsageError


def test_errors_belong_to_the_directory_family() -> None:
    assert issubclass(InvalidEntryError, DirectoryError)
    assert issubclass(MalformedCertificateError, DirectoryError)


@pytest.mark.parametrize("who", ["alice", "carol", "dave"])  # RSA, P-256, P-384
def test_signature_and_encryption_are_separated_by_key_usage(pki, who: str) -> None:
    ident = getattr(pki, who)
    entry = entry_from_certificate(
        ident.signing.certificate, extra_certificates=[ident.encryption.certificate]
    )
    assert entry.signature_certificates == (ident.signing.certificate,)
    assert entry.encryption_certificates == (ident.encryption.certificate,)
    assert certificate_purposes(ident.encryption.certificate) == {ENCRYPTION}
    assert certificate_purposes(ident.signing.certificate) == {SIGNATURE}


def test_entry_from_certificate_reads_the_subject_and_accepts_overrides(pki) -> None:
    entry = entry_from_certificate(
        pki.alice.signing.certificate, profession="Cardiologue", professional_id="10001234567"
    )
    assert entry.email == "alice@op1.test"
    assert entry.common_name == "alice"
    assert entry.surname == "alice"  # inetOrgPerson needs one: last word of the CN
    assert entry.organisation == devpki.TEST_ORG
    assert (entry.profession, entry.professional_id) == ("Cardiologue", "10001234567")


@pytest.mark.parametrize("bad", ["1234", "1000123456a", "100012345678", " "])
def test_professional_id_must_be_11_digits(pki, bad: str) -> None:
    with pytest.raises(InvalidEntryError, match=r"11 digits|professional"):
        DirectoryEntry("a@b.test", "A", professional_id=bad.strip() or "x")


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@b@c", "a b@c.d", "a@b\n.c"])
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidEntryError, match="e-mail"):
        DirectoryEntry(email, "A")


def test_publishing_a_ca_certificate_is_refused(pki) -> None:
    with SqliteDirectory(":memory:") as directory, pytest.raises(InvalidEntryError, match="CA"):
        directory.publish(pki.ca.certificate)


def test_publishing_another_persons_certificate_is_refused(pki) -> None:
    entry = DirectoryEntry("alice@op1.test", "Alice", certificates=(pki.bob.signing.certificate,))
    with SqliteDirectory(":memory:") as directory:
        with pytest.raises(InvalidEntryError, match=r"not bound to alice@op1\.test"):
            directory.publish(entry)
        with pytest.raises(InvalidEntryError, match="not bound"):
            directory.publish(pki.bob.signing.certificate, email="alice@op1.test")


def test_decode_certificate_turns_garbage_into_a_directory_error(pki) -> None:
    good = der(pki.alice.signing.certificate)
    assert isinstance(decode_certificate(good, "here"), x509.Certificate)
    for blob in (b"", b"garbage", good[:-10], b"\x30\x03\x02\x01\x01"):
        with pytest.raises(MalformedCertificateError, match=r"^entry x: unreadable"):
            decode_certificate(blob, "entry x")


def test_a_query_needs_a_criterion_and_no_wildcards_exist() -> None:
    with pytest.raises(UsageError, match="needs"):
        Query()
    with pytest.raises(UsageError, match="invalid email"):
        Query(email="   ")
    entry = DirectoryEntry("a@b.test", "Alice Martin", given_name="Alice", organisation="CHU")
    assert Query(name="MARTIN").matches(entry)
    assert Query(name="alice", organisation="chu").matches(entry)
    assert not Query(name="*").matches(entry)
    assert not Query(email="a@b.test", organisation="Other").matches(entry)
