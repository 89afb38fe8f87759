"""Publish, look up and withdraw on every backend: SQLite, LDAP (real slapd), HTTP over SQLite."""

from __future__ import annotations

import pytest

from caducee.directory.api import Directory, DirectoryEntry, InvalidEntryError

RPPS_ALICE = "10001234567"
RPPS_BOB = "10009876543"


def publish_alice_and_bob(directory: Directory, pki) -> None:  # type: ignore[no-untyped-def]
    for cert in (pki.alice.signing.certificate, pki.alice.encryption.certificate):
        directory.publish(
            cert,
            profession="Médecin généraliste",
            professional_id=RPPS_ALICE,
            organisation="Cabinet Martin",
        )
    directory.publish(
        DirectoryEntry(
            email="bob@op2.test",
            common_name="Bob Lefèvre",
            surname="Lefèvre",
            given_name="Bob",
            profession="Cardiologue",
            organisation="CHU Nord",
            professional_id=RPPS_BOB,
            certificates=(pki.bob.signing.certificate, pki.bob.encryption.certificate),
        )
    )


def test_publish_then_lookup_by_every_criterion(backend: Directory, pki) -> None:
    publish_alice_and_bob(backend, pki)
    by_email = backend.lookup(email="Alice@OP1.test")
    assert [e.email for e in by_email.entries] == ["alice@op1.test"]
    alice = by_email.entries[0]
    assert by_email.problems == ()
    assert alice.signature_certificates == (pki.alice.signing.certificate,)
    assert alice.encryption_certificates == (pki.alice.encryption.certificate,)
    assert (alice.profession, alice.organisation, alice.professional_id) == (
        "Médecin généraliste",
        "Cabinet Martin",
        RPPS_ALICE,
    )
    assert alice.source == backend.name
    assert [e.email for e in backend.lookup(name="lefèvre").entries] == ["bob@op2.test"]
    assert [e.email for e in backend.lookup(name="Bob").entries] == ["bob@op2.test"]
    assert [e.email for e in backend.lookup(name="Bob Lefèvre").entries] == ["bob@op2.test"]
    assert [e.email for e in backend.lookup(professional_id=RPPS_BOB).entries] == ["bob@op2.test"]
    assert [e.email for e in backend.lookup(organisation="chu nord").entries] == ["bob@op2.test"]
    both = backend.lookup(name="Bob", organisation="CHU Nord", professional_id=RPPS_BOB)
    assert len(both.entries) == 1
    assert backend.lookup(name="Bob", organisation="Cabinet Martin").entries == ()
    assert backend.lookup(email="nobody@op1.test").entries == ()


def test_republishing_adds_certificates_and_updates_attributes(backend: Directory, pki) -> None:
    backend.publish(pki.alice.signing.certificate, profession="Interne")
    stored = backend.publish(pki.alice.encryption.certificate, profession="Médecin")
    assert len(stored.certificates) == 2
    again = backend.publish(pki.alice.encryption.certificate, profession="Médecin")
    assert len(again.certificates) == 2  # the same certificate is not stored twice
    (entry,) = backend.lookup(email="alice@op1.test").entries
    assert entry.profession == "Médecin"


def test_withdraw_by_certificate_then_serial_then_the_entry_is_gone(
    backend: Directory, pki
) -> None:
    publish_alice_and_bob(backend, pki)
    assert backend.withdraw(pki.alice.signing.certificate) == 1
    (entry,) = backend.lookup(email="alice@op1.test").entries
    assert entry.certificates == (pki.alice.encryption.certificate,)
    assert backend.withdraw(serial=pki.alice.encryption.certificate.serial_number) == 1
    assert backend.lookup(email="alice@op1.test").entries == ()
    assert backend.withdraw(pki.alice.signing.certificate) == 0  # already gone: not an error
    assert len(backend.lookup(email="bob@op2.test").entries) == 1


def test_withdraw_by_email_removes_the_whole_entry(backend: Directory, pki) -> None:
    publish_alice_and_bob(backend, pki)
    assert backend.withdraw(email="BOB@op2.test") == 2
    assert backend.lookup(name="Bob").entries == ()
    assert backend.withdraw(email="bob@op2.test") == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("email", "*)(mail=*"),
        ("email", "*"),
        ("email", "alice@op1.test)(|(mail=*"),
        ("name", "*"),
        ("name", "a*"),
        ("name", "*)(objectClass=*"),
        ("organisation", "*)(|(o=*"),
        ("professional_id", "*"),
        ("name", "x\\2a"),
        ("name", "' OR '1'='1"),
    ],
)
def test_injection_in_lookup_values_returns_nothing(
    backend: Directory, pki, field: str, value: str
) -> None:
    publish_alice_and_bob(backend, pki)
    result = backend.lookup(**{field: value})
    assert result.entries == ()
    assert result.problems == ()


def test_emails_with_dn_special_characters_round_trip(backend: Directory, pki) -> None:
    from caducee import devpki

    odd = devpki.make_identity(pki.ca, "o+brien,jr=x@op1.test", name="O'Brien, Jr")
    backend.publish(odd.signing.certificate)
    (entry,) = backend.lookup(email="o+brien,jr=x@op1.test").entries
    assert entry.common_name == "O'Brien, Jr"
    assert backend.withdraw(odd.signing.certificate) == 1


def test_invalid_publish_is_refused_before_reaching_the_backend(backend: Directory, pki) -> None:
    with pytest.raises(InvalidEntryError):
        backend.publish(pki.ca.certificate)
    assert backend.lookup(organisation=pki.ca.certificate.subject.rfc4514_string()).entries == ()
