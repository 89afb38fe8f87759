"""Issuing a card, its status, and key history after renewal, on a real SoftHSM2."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from caducee import devpki
from caducee.card import add_encryption_key, card_status, issue_card, list_cards
from caducee.card.devissuer import devpki_issuer
from caducee.card.issue import IssuanceError
from caducee.core.algorithms import KeyTransport
from caducee.errors import UsageError
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, CardSession, Pkcs11Module

pytestmark = pytest.mark.softhsm

NOW = dt.datetime.now(dt.UTC)


def _usage(cert: x509.Certificate) -> x509.KeyUsage:
    return cert.extensions.get_extension_for_class(x509.KeyUsage).value


def test_issued_card_has_two_key_pairs_with_test_certificates(rsa_card) -> None:
    issued = rsa_card.issued
    sig, enc = issued.signature_certificate, issued.encryption_certificate
    assert _usage(sig).digital_signature and _usage(sig).content_commitment
    assert not _usage(sig).key_encipherment
    assert _usage(enc).key_encipherment and not _usage(enc).digital_signature
    assert sig.public_key() != enc.public_key()
    for cert in (sig, enc):  # clearly labelled TEST
        (org,) = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        assert "TEST" in str(org.value)
        rsa_card.ca.certificate.public_key().verify(  # issued by the test CA
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    # the escrow copy returned to the caller is the key on the card
    assert issued.encryption_private_key.public_key() == enc.public_key()
    assert "private_key" not in repr(issued)


def test_ec_card_uses_key_agreement(ec_card) -> None:
    enc = ec_card.issued.encryption_certificate
    assert isinstance(enc.public_key(), ec.EllipticCurvePublicKey)
    assert _usage(enc).key_agreement and not _usage(enc).key_encipherment


def test_status_and_list(rsa_card) -> None:
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        (token,) = list_cards(module)
        assert token.label == "dr-martin"
        public = card_status(module, token, at=NOW)
        assert public.holder == "Dr Martin <martin@op1.test>"
        assert not public.keys_listed
        assert {(o.kind, o.purpose) for o in public.objects} == {
            ("certificate", "signature"),
            ("certificate", "encryption"),
        }
        assert all(o.valid for o in public.objects)
        assert public.pin.describe() == "ok"
        full = card_status(module, token, at=NOW, pin="1234")
        keys = {o.label: o for o in full.objects if o.kind == "private key"}
        assert keys["signature"].generated_on_card and not keys["signature"].extractable
        assert not keys["encryption"].generated_on_card  # imported, for the escrow
        assert keys["encryption"].sensitive and not keys["encryption"].extractable
        later = card_status(module, token, at=NOW + dt.timedelta(days=3000))
        assert not any(o.valid for o in later.objects)


def test_key_history_after_renewal(rsa_card, pki) -> None:
    old_pub = rsa_card.issued.encryption_certificate.public_key()
    assert isinstance(old_pub, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    old_message_key = old_pub.encrypt(b"k" * 32, oaep)
    later = NOW + dt.timedelta(days=1)
    issuer = devpki_issuer(pki.ca, "martin@op1.test", "Dr Martin", not_before=later)
    with open_card(rsa_card.uri(), pin_callback=lambda _: "1234") as card:
        card_rw = CardSession(card.module, card.token, None, rw=True)  # shares the login
        try:
            new_cert, new_key = add_encryption_key(card_rw, issuer, "rsa2048")
        finally:
            card_rw.close()
        keys = card.decryption_keys()
        assert [k.certificate for k in keys] == [new_cert, rsa_card.issued.encryption_certificate]
        assert (
            keys[0].decrypt_key(
                new_key.public_key().encrypt(b"n" * 32, oaep), KeyTransport.RSA_OAEP_SHA1
            )
            == b"n" * 32
        )
        assert keys[1].decrypt_key(old_message_key, KeyTransport.RSA_OAEP_SHA1) == b"k" * 32
        assert card.signing_key().certificate == rsa_card.issued.signature_certificate


def test_issue_refuses_a_duplicate_label_and_bad_pins(rsa_card, pki) -> None:
    issuer = devpki_issuer(pki.ca, "x@op1.test")
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        with pytest.raises(UsageError, match="already exists"):
            issue_card(module, label="dr-martin", so_pin="12345678", user_pin="1234", issuer=issuer)
        with pytest.raises(UsageError, match="PIN length out of range"):
            issue_card(module, label="other", so_pin="12345678", user_pin="12", issuer=issuer)


def test_issuer_must_certify_the_generated_key(blank_hsm, pki) -> None:
    def wrong_issuer(public_key, role):  # type: ignore[no-untyped-def]
        return pki.bob.signing.certificate

    with Pkcs11Module(SOFTHSM2_MODULE) as module, pytest.raises(IssuanceError, match="not for"):
        issue_card(module, label="c2", so_pin="12345678", user_pin="1234", issuer=wrong_issuer)


def test_issue_p384_card_on_blank_hsm(blank_hsm) -> None:
    ca = devpki.make_ca("card CA", "p384")
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module,
            label="dr-petit",
            so_pin="12345678",
            user_pin="2468",
            issuer=devpki_issuer(ca, "petit@op1.test", "Dr Petit"),
            kind="p384",
        )
        assert issued.token.label == "dr-petit"
        sig_pub = issued.signature_certificate.public_key()
        assert isinstance(sig_pub, ec.EllipticCurvePublicKey)
        assert sig_pub.curve.name == "secp384r1"
