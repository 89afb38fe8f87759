"""The card behind the CMS engine, checked by OpenSSL: signed on the card and verified by
``openssl cms -verify``; encrypted by ``openssl cms`` and decrypted on the card."""

from __future__ import annotations

import datetime as dt

import pytest

from caducee.core.algorithms import KeyTransport, SignatureScheme
from caducee.core.cms.decrypt import decrypt_data
from caducee.core.cms.sign import sign_data
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE
from tests.card.card_faults import FaultyModule
from tests.conftest import pem_cert, run

pytestmark = [pytest.mark.softhsm, pytest.mark.interop]

CONTENT = b"Content-Type: text/plain\r\n\r\nLab result: potassium 4.1 mmol/L\r\n"


@pytest.mark.parametrize("scheme", [SignatureScheme.RSA_PKCS1V15, SignatureScheme.RSA_PSS])
def test_signed_on_card_verifies_with_openssl(rsa_card, openssl, files, scheme) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        try:
            key = card.signing_key()
            before = module.state.private_key_operations
            der = sign_data(
                CONTENT, key, signing_time=dt.datetime.now(dt.UTC), scheme=scheme, detached=False
            )
            assert module.state.private_key_operations == before + 1  # one card op per message
        finally:
            card.close()
    out = run(
        [
            openssl,
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            files("signed.der", der),
            "-CAfile",
            files("ca.pem", pem_cert(rsa_card.ca.certificate)),
            "-purpose",
            "any",
        ]
    )
    assert out == CONTENT


def test_ecdsa_signed_on_card_verifies_with_openssl(ec_card, openssl, files) -> None:
    with open_card(ec_card.uri(), pin_callback=lambda _: "1234") as card:
        der = sign_data(
            CONTENT, card.signing_key(), signing_time=dt.datetime.now(dt.UTC), detached=False
        )
    out = run(
        [
            openssl,
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            files("signed.der", der),
            "-CAfile",
            files("ca.pem", pem_cert(ec_card.ca.certificate)),
            "-purpose",
            "any",
        ]
    )
    assert out == CONTENT


@pytest.mark.parametrize(
    ("keyopt", "transport"),
    [(["-keyopt", "rsa_padding_mode:oaep"], KeyTransport.RSA_OAEP_SHA1), ([], None)],
)
def test_openssl_encrypted_is_decrypted_on_card(rsa_card, openssl, files, keyopt, transport):  # type: ignore[no-untyped-def]
    recipient = files("enc.pem", pem_cert(rsa_card.issued.encryption_certificate))
    der = run(
        [
            openssl,
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-aes-256-gcm",
            "-in",
            files("msg.txt", CONTENT),
            "-recip",
            recipient,
            *keyopt,
        ],
    )
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        try:
            before = module.state.private_key_operations
            report = decrypt_data(der, card.decryption_keys())
            assert module.state.private_key_operations == before + 1
        finally:
            card.close()
    assert report.content == CONTENT
    assert report.key_transport is (transport or KeyTransport.RSA_PKCS1V15)


def test_openssl_ecdh_encrypted_is_decrypted_on_card(ec_card, openssl, files) -> None:
    recipient = files("enc.pem", pem_cert(ec_card.issued.encryption_certificate))
    der = run(
        [
            openssl,
            "cms",
            "-encrypt",
            "-binary",
            "-outform",
            "DER",
            "-aes-256-cbc",
            "-in",
            files("msg.txt", CONTENT),
            "-recip",
            recipient,
        ],
    )
    with open_card(ec_card.uri(), pin_callback=lambda _: "1234") as card:
        report = decrypt_data(der, card.decryption_keys())
    assert report.content == CONTENT
