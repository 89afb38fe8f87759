"""Whole-message protect/open: layer order, header protection, every layer reported."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from caducee.core.cms.envelope import Recipient
from caducee.core.message import ProtectOptions, open_message, protect
from caducee.core.mime.enveloped import encrypt_mime
from caducee.errors import CaduceeError, MalformedMessageError, UsageError

NOW = dt.datetime(2026, 11, 29, 9, 30, tzinfo=dt.UTC)
LETTER = (
    b"From: alice@op1.test\r\nTo: bob@op2.test\r\nCc: carol@op1.test\r\n"
    b"Subject: Discharge letter\r\nDate: Sun, 29 Nov 2026 09:30:00 +0000\r\n"
    b"Message-ID: <m1@op1.test>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nThe patient went home.\r\n"
)


def seal(pki, **kw):  # type: ignore[no-untyped-def]
    return protect(
        LETTER,
        signer=kw.pop("signer", pki.alice.signing),
        recipients=kw.pop(
            "recipients",
            [
                Recipient(pki.bob.encryption.certificate),
                Recipient(pki.carol.encryption.certificate),
            ],
        ),
        signing_time=NOW,
        random=os.urandom,
        **kw,
    )


@pytest.mark.parametrize("order", ["sign-encrypt", "encrypt-sign", "sign-encrypt-sign"])
def test_every_order_opens_and_reports_layers(pki, order) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki, options=ProtectOptions(order=order))
    opened = open_message(wire, keys=[pki.bob.encryption])
    kinds = [layer.kind for layer in opened.layers]
    expected = {
        "sign-encrypt": ["encrypted", "signed"],
        "encrypt-sign": ["signed", "encrypted"],
        "sign-encrypt-sign": ["signed", "encrypted", "signed"],
    }[order]
    assert kinds == expected
    assert opened.signature_valid
    assert b"The patient went home." in opened.entity
    assert opened.headers.protected and opened.headers.get("subject") == "Discharge letter"


def test_ec_recipient_reads_it_too(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki)
    opened = open_message(wire, keys=[pki.carol.encryption])
    assert opened.layers[0].decrypted is not None
    assert opened.layers[0].decrypted.key_agreement


def test_outer_headers_hide_subject(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki)
    head = wire.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: [...]" in head
    assert b"Discharge letter" not in wire
    assert b"To: bob@op2.test" in head


def test_signed_only_keeps_subject_and_is_readable(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki, recipients=[])
    assert b"Subject: Discharge letter" in wire.split(b"\r\n\r\n", 1)[0]
    opened = open_message(wire)
    assert not opened.encrypted and opened.signature_valid
    assert opened.headers.mode == "clear"


def test_opaque_signing(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki, options=ProtectOptions(detached=False))
    opened = open_message(wire, keys=[pki.bob.encryption])
    assert opened.layers[1].signed is not None and not opened.layers[1].signed.detached


def test_no_header_protection(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki, options=ProtectOptions(header_protection=False))
    assert b"Subject: Discharge letter" in wire
    opened = open_message(wire, keys=[pki.bob.encryption])
    assert not opened.headers.protected
    assert opened.headers.get("subject") == "Discharge letter"


def test_tampered_signature_is_reported_not_hidden(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki, recipients=[])
    tampered = wire.replace(b"The patient went home.", b"The patient went away.")
    opened = open_message(tampered)
    assert opened.signed and not opened.signature_valid


def test_wrong_key_raises_typed_error(pki) -> None:  # type: ignore[no-untyped-def]
    wire = seal(pki)
    with pytest.raises(CaduceeError, match="recipient"):
        open_message(wire, keys=[pki.dave.encryption])


def test_encrypted_without_key_is_a_usage_error(pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        open_message(seal(pki), keys=[])


def test_absurd_nesting_is_refused(pki) -> None:  # type: ignore[no-untyped-def]
    entity = b"Content-Type: text/plain\r\n\r\nx"
    recipient = [Recipient(pki.bob.encryption.certificate)]
    for _ in range(10):
        entity = encrypt_mime(entity, recipient, random=os.urandom)
    with pytest.raises(MalformedMessageError, match="nested"):
        open_message(entity, keys=[pki.bob.encryption])


def test_nothing_to_do(pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError):
        protect(LETTER, signer=None, recipients=[], signing_time=NOW, random=os.urandom)


def test_policy_reads_rfc4262_capabilities_from_the_certificate(pki) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from caducee.core.algorithms import ContentCipher, KeyTransport
    from caducee.core.capabilities import LEGACY_GPGSM, Capabilities
    from caducee.core.policy import choose_encryption

    base = pki.bob.encryption.certificate
    cert = (
        x509.CertificateBuilder()
        .subject_name(base.subject)
        .issuer_name(pki.ca.certificate.subject)
        .public_key(base.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(base.not_valid_before_utc)
        .not_valid_after(base.not_valid_after_utc)
        .add_extension(LEGACY_GPGSM.to_extension(), critical=False)
        .sign(pki.ca.key, hashes.SHA256())
    )
    assert Capabilities.from_certificate(cert) == LEGACY_GPGSM
    choice = choose_encryption([(cert, None)])
    assert choice.cipher is ContentCipher.AES_256_CBC
    assert choice.recipients[0].key_transport is KeyTransport.RSA_PKCS1V15
    # what the correspondent said in a signed message wins over the certificate
    choice = choose_encryption([(cert, Capabilities())])
    assert choice.cipher is ContentCipher.AES_256_GCM
