"""Encrypt then decrypt with our own code: every cipher, transport, key type, identifier."""

from __future__ import annotations

import pytest
from asn1crypto import cms

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data
from caducee.errors import (
    CardError,
    DecryptionError,
    IntegrityError,
    NoMatchingRecipientError,
    PolicyError,
    UnsupportedAlgorithmError,
    UsageError,
)
from tests.conftest import TestPKI as PKI
from tests.core_envelope.conftest import CountingKey, identity, rand

CONTENT = b"Content-Type: text/plain\r\n\r\nCompte rendu: tension 12/8.\r\n"


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", list(KeyTransport))
def test_rsa_round_trip(pki: PKI, cipher: ContentCipher, transport: KeyTransport) -> None:
    alice = identity(pki, "alice").encryption
    der = encrypt_data(
        CONTENT, [Recipient(alice.certificate, transport)], random=rand, cipher=cipher
    )
    key = CountingKey(alice)
    report = decrypt_data(der, [key])
    assert report.content == CONTENT
    assert report.cipher is cipher
    assert report.authenticated is cipher.aead
    assert report.key_transport is transport
    assert report.key_agreement is None
    assert report.recipient_count == 1
    assert report.recipient_certificate == alice.certificate
    assert key.calls == 1
    outer = cms.ContentInfo.load(der)["content_type"].native
    assert outer == ("authenticated_enveloped_data" if cipher.aead else "enveloped_data")


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize(("name", "label"), [("carol", "sha256"), ("dave", "sha384")])
def test_ec_round_trip(pki: PKI, cipher: ContentCipher, name: str, label: str) -> None:
    key = identity(pki, name).encryption
    der = encrypt_data(CONTENT, [Recipient(key.certificate)], random=rand, cipher=cipher)
    counting = CountingKey(key)
    report = decrypt_data(der, [counting])
    assert report.content == CONTENT
    assert report.key_agreement == f"ecdh-{label}kdf-aes256-wrap"
    assert report.key_transport is None
    assert counting.calls == 1


def test_many_recipients_each_decrypts(pki: PKI) -> None:
    names = ("alice", "bob", "carol", "dave")
    recipients = [
        Recipient(identity(pki, n).encryption.certificate, kt, use_ski=i % 2 == 1)
        for i, (n, kt) in enumerate(
            zip(names, [*KeyTransport, KeyTransport.RSA_PKCS1V15], strict=True)
        )
    ]
    der = encrypt_data(CONTENT, recipients, random=rand)
    for n in names:
        key = CountingKey(identity(pki, n).encryption)
        report = decrypt_data(der, [key])
        assert report.content == CONTENT
        assert report.recipient_count == 4
        assert key.calls == 1


@pytest.mark.parametrize("name", ["alice", "carol"])
def test_ski_identifier(pki: PKI, name: str) -> None:
    key = identity(pki, name).encryption
    der = encrypt_data(CONTENT, [Recipient(key.certificate, use_ski=True)], random=rand)
    info = cms.ContentInfo.load(der)["content"]["recipient_infos"][0]
    if info.name == "ktri":
        assert info.chosen["rid"].name == "subject_key_identifier"
        assert info.chosen["version"].native == "v2"
    else:
        assert info.chosen["recipient_encrypted_keys"][0]["rid"].name == "r_key_id"
    assert decrypt_data(der, [key]).content == CONTENT


def test_enveloped_data_version(pki: PKI) -> None:
    alice = identity(pki, "alice").encryption.certificate
    plain = encrypt_data(b"x", [Recipient(alice)], random=rand, cipher=ContentCipher.AES_128_CBC)
    ski = encrypt_data(
        b"x", [Recipient(alice, use_ski=True)], random=rand, cipher=ContentCipher.AES_128_CBC
    )
    assert cms.ContentInfo.load(plain)["content"]["version"].native == "v0"
    assert cms.ContentInfo.load(ski)["content"]["version"].native == "v2"


def test_picks_the_matching_key_among_several(pki: PKI) -> None:
    bob = identity(pki, "bob").encryption
    der = encrypt_data(CONTENT, [Recipient(bob.certificate)], random=rand)
    others = [CountingKey(identity(pki, n).encryption) for n in ("alice", "carol", "dave")]
    mine = CountingKey(bob)
    report = decrypt_data(der, [*others, mine])
    assert report.recipient_certificate == bob.certificate
    assert mine.calls == 1
    assert all(k.calls == 0 for k in others)


def test_no_matching_recipient(pki: PKI) -> None:
    der = encrypt_data(
        CONTENT,
        [
            Recipient(identity(pki, "bob").encryption.certificate),
            Recipient(identity(pki, "dave").encryption.certificate),
        ],
        random=rand,
    )
    key = CountingKey(identity(pki, "alice").encryption)
    with pytest.raises(NoMatchingRecipientError, match="2 recipient"):
        decrypt_data(der, [key])
    assert key.calls == 0


def test_empty_and_large_content(pki: PKI) -> None:
    alice = identity(pki, "alice").encryption
    for cipher in ContentCipher:
        for content in (b"", b"z" * 16, b"y" * 1_000_003):
            der = encrypt_data(content, [Recipient(alice.certificate)], random=rand, cipher=cipher)
            assert decrypt_data(der, [alice]).content == content


def test_other_content_type(pki: PKI) -> None:
    alice = identity(pki, "alice").encryption
    signed_data_oid = "1.2.840.113549.1.7.2"
    der = encrypt_data(
        CONTENT, [Recipient(alice.certificate)], random=rand, content_type=signed_data_oid
    )
    assert decrypt_data(der, [alice]).content_type == signed_data_oid


def test_randomness_comes_only_from_the_callable(pki: PKI) -> None:
    """Same random bytes give the same content encryption (RSA-OAEP seeds aside)."""
    carol = identity(pki, "carol").encryption

    def fixed(size: int) -> bytes:
        return bytes(range(1, size + 1))

    one = encrypt_data(CONTENT, [Recipient(carol.certificate)], random=fixed)
    two = encrypt_data(CONTENT, [Recipient(carol.certificate)], random=fixed)
    assert one == two
    assert decrypt_data(one, [carol]).content == CONTENT


def test_wrong_key_for_a_recipient_is_a_decryption_error(pki: PKI) -> None:
    """Alice's identifiers but Bob's key: the key operation fails, typed."""
    alice, bob = identity(pki, "alice").encryption, identity(pki, "bob").encryption

    class Impostor(CountingKey):
        @property
        def certificate(self):  # type: ignore[no-untyped-def]
            return alice.certificate

    for transport in KeyTransport:
        for cipher in (ContentCipher.AES_256_GCM, ContentCipher.AES_256_CBC):
            der = encrypt_data(
                CONTENT, [Recipient(alice.certificate, transport)], random=rand, cipher=cipher
            )
            with pytest.raises(DecryptionError) as info:
                decrypt_data(der, [Impostor(bob)])
            if transport is KeyTransport.RSA_PKCS1V15 and cipher.aead:
                assert isinstance(
                    info.value, IntegrityError
                )  # v1.5 failures look like content ones


def test_usage_errors(pki: PKI) -> None:
    alice = identity(pki, "alice").encryption
    with pytest.raises(UsageError):
        encrypt_data(CONTENT, [], random=rand)
    with pytest.raises(UsageError):
        encrypt_data(CONTENT, [Recipient(alice.certificate)], random=lambda n: b"short")
    with pytest.raises(UsageError):
        decrypt_data(encrypt_data(CONTENT, [Recipient(alice.certificate)], random=rand), [])
    with pytest.raises(UsageError):
        encrypt_data(CONTENT, [Recipient(alice.certificate)], random=rand, content_type="nope")


def test_ski_needed_but_missing(pki: PKI) -> None:
    """A certificate without subjectKeyIdentifier cannot be named by SKI."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    alice = identity(pki, "alice").encryption
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    bare = (
        x509.CertificateBuilder()
        .subject_name(alice.certificate.subject)
        .issuer_name(pki.ca.certificate.subject)
        .public_key(alice.certificate.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(pki.ca.key, hashes.SHA256())
    )
    with pytest.raises(PolicyError, match="subjectKeyIdentifier"):
        encrypt_data(CONTENT, [Recipient(bare, use_ski=True)], random=rand)


class _CardLike(CountingKey):
    """A key that behaves like a PKCS#11 token: limited paddings, raising on bad blocks."""

    def __init__(self, key, transports, failure=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(key)
        self._transports = frozenset(transports)
        self._failure = failure

    def key_transports(self) -> frozenset[KeyTransport]:
        return self._transports

    def decrypt_key(self, encrypted_key: bytes, padding: KeyTransport) -> bytes:
        self.calls += 1
        if self._failure is not None:
            raise self._failure
        return self._key.decrypt_key(encrypted_key, padding)


def test_card_without_oaep_sha256_is_told_before_any_operation(pki: PKI) -> None:
    alice = identity(pki, "alice").encryption
    der = encrypt_data(CONTENT, [Recipient(alice.certificate)], random=rand)
    card = _CardLike(alice, [KeyTransport.RSA_PKCS1V15, KeyTransport.RSA_OAEP_SHA1])
    with pytest.raises(UnsupportedAlgorithmError, match="rsa-oaep-sha256"):
        decrypt_data(der, [card])
    assert card.calls == 0


@pytest.mark.parametrize("cipher", [ContentCipher.AES_256_GCM, ContentCipher.AES_256_CBC])
def test_raising_v15_unwrap_looks_like_a_content_failure(pki: PKI, cipher: ContentCipher) -> None:
    """A token that raises on a bad PKCS#1 v1.5 block must not become a padding oracle."""
    alice = identity(pki, "alice").encryption
    der = encrypt_data(
        CONTENT,
        [Recipient(alice.certificate, KeyTransport.RSA_PKCS1V15)],
        random=rand,
        cipher=cipher,
    )
    card = _CardLike(alice, KeyTransport, ValueError("CKR_ENCRYPTED_DATA_INVALID"))
    with pytest.raises(DecryptionError) as raised:
        decrypt_data(der, [card])
    assert type(raised.value) is (IntegrityError if cipher.aead else DecryptionError)
    assert card.calls == 1


def test_card_errors_pass_through(pki: PKI) -> None:
    """A locked card or a removed token is the user's business: not masked as a bad message."""
    alice = identity(pki, "alice").encryption
    der = encrypt_data(CONTENT, [Recipient(alice.certificate)], random=rand)
    card = _CardLike(alice, KeyTransport, CardError("PIN locked"))
    with pytest.raises(CardError, match="PIN locked"):
        decrypt_data(der, [card])


def test_p521_round_trip(pki: PKI) -> None:
    """P-521 (no fixture identity): sha512kdf with AES-256 key wrap."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from caducee import devpki
    from caducee.keys.software import SoftwareKey

    private = ec.generate_private_key(ec.SECP521R1())
    cert = devpki.issue_certificate(pki.ca, "erin@op1.test", private, purpose="encryption")
    key = SoftwareKey(private, cert)
    der = encrypt_data(CONTENT, [Recipient(cert, use_ski=True)], random=rand)
    report = decrypt_data(der, [key])
    assert report.content == CONTENT
    assert report.key_agreement == "ecdh-sha512kdf-aes256-wrap"


def test_curve_orders_are_right() -> None:
    """The hard-coded group orders: n-1 is a valid scalar, n is not."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from caducee.core.cms.envelope_asn1 import CURVES

    for profile in CURVES.values():
        ec.derive_private_key(profile.order - 1, profile.curve)
        with pytest.raises(ValueError):
            ec.derive_private_key(profile.order, profile.curve)
