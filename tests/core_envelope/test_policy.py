"""Algorithm choice from the recipients' announced capabilities."""

from __future__ import annotations

import pytest
from asn1crypto import cms

from caducee.core.algorithms import ContentCipher, KeyTransport
from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
from caducee.core.policy import EncryptionChoice, choose_encryption
from caducee.errors import PolicyError
from tests.conftest import TestPKI as PKI
from tests.core_envelope.conftest import identity


def _cert(pki: PKI, name: str):  # type: ignore[no-untyped-def]
    return identity(pki, name).encryption.certificate


def test_unknown_capabilities_get_the_defaults(pki: PKI) -> None:
    choice = choose_encryption([(_cert(pki, "alice"), None), (_cert(pki, "carol"), None)])
    assert isinstance(choice, EncryptionChoice)
    assert choice.cipher is ContentCipher.AES_256_GCM
    assert choice.recipients[0].key_transport is KeyTransport.RSA_OAEP_SHA256
    assert [r.certificate for r in choice.recipients] == [_cert(pki, "alice"), _cert(pki, "carol")]
    assert not any(r.use_ski for r in choice.recipients)


def test_legacy_gpgsm_drops_everyone_to_cbc(pki: PKI) -> None:
    choice = choose_encryption([(_cert(pki, "alice"), None), (_cert(pki, "bob"), LEGACY_GPGSM)])
    assert choice.cipher is ContentCipher.AES_256_CBC
    assert choice.recipients[0].key_transport is KeyTransport.RSA_OAEP_SHA256
    assert choice.recipients[1].key_transport is KeyTransport.RSA_PKCS1V15


def test_strongest_common_cipher(pki: PKI) -> None:
    only_128 = Capabilities(ciphers=(ContentCipher.AES_128_GCM, ContentCipher.AES_128_CBC))
    choice = choose_encryption([(_cert(pki, "alice"), only_128), (_cert(pki, "dave"), None)])
    assert choice.cipher is ContentCipher.AES_128_GCM


def test_best_announced_transport_whatever_the_order(pki: PKI) -> None:
    caps = Capabilities(key_transports=(KeyTransport.RSA_PKCS1V15, KeyTransport.RSA_OAEP_SHA1))
    choice = choose_encryption([(_cert(pki, "alice"), caps)])
    assert choice.recipients[0].key_transport is KeyTransport.RSA_OAEP_SHA1


def test_ciphers_only_announced_means_an_older_client_pkcs1v15(pki: PKI) -> None:
    """openssl smime and gpgsm announce ciphers and no key transport: they may not decrypt
    OAEP, and RFC 8551 makes PKCS#1 v1.5 the one every receiver must support."""
    caps = Capabilities(ciphers=(ContentCipher.AES_256_CBC,), key_transports=())
    choice = choose_encryption([(_cert(pki, "bob"), caps)])
    assert choice.cipher is ContentCipher.AES_256_CBC
    assert choice.recipients[0].key_transport is KeyTransport.RSA_PKCS1V15
    unknown = choose_encryption([(_cert(pki, "bob"), None)])  # nothing known: RFC 8551
    assert unknown.recipients[0].key_transport is KeyTransport.RSA_OAEP_SHA256


def test_preferred_cipher(pki: PKI) -> None:
    recipients = [(_cert(pki, "alice"), None)]
    assert choose_encryption(recipients, preferred=ContentCipher.AES_128_CBC).cipher is (
        ContentCipher.AES_128_CBC
    )
    legacy = [(_cert(pki, "alice"), LEGACY_GPGSM)]
    # A preference nobody can honour falls back to the strongest common cipher.
    assert choose_encryption(legacy, preferred=ContentCipher.AES_256_GCM).cipher is (
        ContentCipher.AES_256_CBC
    )


def test_no_common_cipher(pki: PKI) -> None:
    gcm_only = Capabilities(ciphers=(ContentCipher.AES_256_GCM,))
    with pytest.raises(PolicyError, match="common"):
        choose_encryption([(_cert(pki, "alice"), gcm_only), (_cert(pki, "bob"), LEGACY_GPGSM)])


def test_only_weak_ciphers_announced(pki: PKI) -> None:
    """A peer announcing only 3DES and RC2 is refused rather than downgraded."""
    announced = cms.SMIMECapabilites(
        [{"capability_id": "1.2.840.113549.3.7"}, {"capability_id": "1.2.840.113549.3.2"}]
    )
    weak = Capabilities.from_asn1(announced)
    assert weak.ciphers == ()
    with pytest.raises(PolicyError, match="AES-128"):
        choose_encryption([(_cert(pki, "alice"), weak)])


def test_ec_certificates_use_ecdh_whatever_announced(pki: PKI) -> None:
    choice = choose_encryption([(_cert(pki, "carol"), LEGACY_GPGSM)])
    assert choice.cipher is ContentCipher.AES_256_CBC
    assert len(choice.recipients) == 1


def test_no_recipients() -> None:
    with pytest.raises(PolicyError):
        choose_encryption([])


def test_unsupported_key_types(pki: PKI) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def cert_for(public_key):  # type: ignore[no-untyped-def]
        return (
            x509.CertificateBuilder()
            .subject_name(pki.ca.certificate.subject)
            .issuer_name(pki.ca.certificate.subject)
            .public_key(public_key)
            .serial_number(9)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(pki.ca.key, hashes.SHA256())
        )

    ed = cert_for(ed25519.Ed25519PrivateKey.generate().public_key())
    k1 = cert_for(ec.generate_private_key(ec.SECP256K1()).public_key())
    for cert in (ed, k1):
        with pytest.raises(PolicyError, match="cannot encrypt"):
            choose_encryption([(cert, None)])
