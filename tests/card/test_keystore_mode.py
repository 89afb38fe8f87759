"""Keystore mode ("card as access key") on a real SoftHSM2: issuance puts the signature key and a
decrypt-only access key on the card and seals the encryption key in a keystore file that only
that card opens; ``openssl cms`` mail is then read through the keystore."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import stat
from collections.abc import Iterator

import PyKCS11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee import devpki
from caducee.card import IssuedCard, card_access_key, issue_card
from caducee.card.devissuer import devpki_issuer
from caducee.core.algorithms import KeyTransport
from caducee.core.cms.decrypt import decrypt_data
from caducee.errors import KeyStoreError, UsageError
from caducee.keys.keystore import (
    ACCESS_LABEL,
    KeystoreAccessError,
    KeystoreLockedError,
    is_access_certificate,
    keystore_failures,
    keystore_info,
    open_keystore_with_card,
    unblock_keystore,
)
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module, key_id
from caducee.keys.pkcs11_errors import CardRemovedError
from caducee.keys.software import SoftwareKey
from tests.card.card_faults import FaultyModule
from tests.card.conftest import (
    SO_PIN,
    USER_PIN,
    _assert_unloaded,
    _require_softhsm,
    make_token_dir,
)
from tests.conftest import pem_cert, run

pytestmark = pytest.mark.softhsm

CONTENT = b"Content-Type: text/plain\r\n\r\nECG: sinus rhythm, 72 bpm\r\n"
MARTIN, PETIT = "dr-martin", "dr-petit"
PETIT_SO_PIN = "87654321"


@dataclasses.dataclass(frozen=True)
class KeystoreCards:
    """Two keystore-mode cards in one SoftHSM2: Dr Martin's (the subject) and Dr Petit's."""

    martin: IssuedCard
    petit: IssuedCard
    martin_keystore: pathlib.Path
    petit_keystore: pathlib.Path

    @staticmethod
    def uri(label: str) -> str:
        return f"pkcs11:token={label}?module-path={SOFTHSM2_MODULE}"


def _issue(ca: devpki.TestCA, label: str, so_pin: str, keystore: pathlib.Path) -> IssuedCard:
    with Pkcs11Module(SOFTHSM2_MODULE) as module:  # a fresh load sees the new token's slot
        return issue_card(
            module,
            label=label,
            so_pin=so_pin,
            user_pin=USER_PIN,
            issuer=devpki_issuer(ca, f"{label}@op1.test", label),
            kind="rsa2048",
            encryption_key="keystore",
            keystore=keystore,
        )


@pytest.fixture(scope="session")
def keystore_template(tmp_path_factory, pki):  # type: ignore[no-untyped-def]
    _require_softhsm()
    base = tmp_path_factory.mktemp("card-keystore")
    conf = make_token_dir(base)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        _assert_unloaded()
        martin = _issue(pki.ca, MARTIN, SO_PIN, base / "martin.keystore")
        petit = _issue(pki.ca, PETIT, PETIT_SO_PIN, base / "petit.keystore")
    return base, martin, petit


@pytest.fixture
def cards(keystore_template, tmp_path, monkeypatch) -> Iterator[KeystoreCards]:  # type: ignore[no-untyped-def]
    base, martin, petit = keystore_template
    dest = tmp_path / "hsm"
    shutil.copytree(base, dest)
    dest.chmod(0o700)
    monkeypatch.setenv("SOFTHSM2_CONF", str(make_token_dir(dest)))
    monkeypatch.delenv("CADUCEE_PIN", raising=False)
    _assert_unloaded()
    yield KeystoreCards(martin, petit, dest / "martin.keystore", dest / "petit.keystore")
    _assert_unloaded()


def _pin(_: str) -> str:
    return USER_PIN


def _flag(value: object) -> bool:
    return any(value) if isinstance(value, bytes | list | tuple) else bool(value)


def test_issuance_puts_access_key_on_card_and_encryption_key_in_keystore(cards) -> None:  # type: ignore[no-untyped-def]
    issued = cards.martin
    assert issued.encryption_mode == "keystore" and issued.keystore is not None
    enc_cert = issued.encryption_certificate
    with open_card(cards.uri(MARTIN), pin_callback=_pin) as card:
        labels = {}
        for handle in card.private_keys():
            label, kid, sensitive, extractable, local, sign, decrypt = card.attributes(
                handle,
                [
                    PyKCS11.CKA_LABEL,
                    PyKCS11.CKA_ID,
                    PyKCS11.CKA_SENSITIVE,
                    PyKCS11.CKA_EXTRACTABLE,
                    PyKCS11.CKA_LOCAL,
                    PyKCS11.CKA_SIGN,
                    PyKCS11.CKA_DECRYPT,
                ],
            )
            labels[bytes(label).decode()] = (
                bytes(kid),
                _flag(sensitive),
                _flag(extractable),
                _flag(local),
                _flag(sign),
                _flag(decrypt),
            )
        assert set(labels) == {"signature", ACCESS_LABEL}  # no encryption private key on card
        assert key_id(enc_cert.public_key()) not in {kid for kid, *_ in labels.values()}  # type: ignore[arg-type]
        # generated on the card, sensitive, non-extractable; decrypts, no longer signs
        assert labels[ACCESS_LABEL][1:] == (True, False, True, False, True)
        cert_labels = sorted(c.label for c in card.certificates())
        assert cert_labels == sorted(["signature", "encryption", ACCESS_LABEL])
        assert card.decryption_keys() == []  # the access key is never a message key
        assert card.signing_key().certificate == issued.signature_certificate
        access = card_access_key(card)
        assert access is not None and access.certificate == issued.access_certificate
    access_cert = issued.access_certificate
    assert access_cert is not None and is_access_certificate(access_cert)
    access_cert.verify_directly_issued_by(access_cert)  # self-signed by the card key
    assert not is_access_certificate(enc_cert) and not is_access_certificate(
        issued.signature_certificate
    )
    for absent in (x509.SubjectAlternativeName, x509.ExtendedKeyUsage):
        with pytest.raises(x509.ExtensionNotFound):
            access_cert.extensions.get_extension_for_class(absent)  # not an e-mail certificate
    assert stat.S_IMODE(issued.keystore.stat().st_mode) == 0o600
    text = cards.martin_keystore.read_text()
    assert "PRIVATE" not in text and json.loads(text)["wrap"] == "rsa-oaep-sha1"
    info = keystore_info(cards.martin_keystore)
    assert info.certificate == enc_cert and info.access_certificate == access_cert
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert issued.encryption_private_key.public_key().public_bytes(der, spki) == (
        enc_cert.public_key().public_bytes(der, spki)
    )  # returned for the escrow


@pytest.mark.interop
@pytest.mark.parametrize(
    ("keyopt", "transport"),
    [(["-keyopt", "rsa_padding_mode:oaep"], KeyTransport.RSA_OAEP_SHA1), ([], None)],
)
def test_openssl_mail_is_read_through_the_keystore(cards, openssl, files, keyopt, transport):  # type: ignore[no-untyped-def]
    recipient = files("enc.pem", pem_cert(cards.martin.encryption_certificate))
    der = run(
        [openssl, "cms", "-encrypt", "-binary", "-outform", "DER", "-aes-256-gcm",
         "-in", files("msg.txt", CONTENT), "-recip", recipient, *keyopt],
    )  # fmt: skip
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(cards.uri(MARTIN), module=module, pin_callback=_pin)
        try:
            before = module.state.private_key_operations
            key = open_keystore_with_card(cards.martin_keystore, card)
            assert module.state.private_key_operations == before + 1  # one card operation
            report = decrypt_data(der, [key])
            assert module.state.private_key_operations == before + 1  # the rest is software
        finally:
            card.close()
    assert isinstance(key, SoftwareKey)
    assert report.content == CONTENT
    assert report.key_transport is (transport or KeyTransport.RSA_PKCS1V15)


def test_wrong_card_cannot_open_and_three_tries_lock(cards) -> None:  # type: ignore[no-untyped-def]
    path = cards.martin_keystore
    with open_card(cards.uri(PETIT), pin_callback=_pin) as petit:
        with pytest.raises(KeystoreAccessError, match=r"not the one.*\(2 tries left\)"):
            open_keystore_with_card(path, petit)
        with pytest.raises(KeystoreAccessError, match=r"1 try left"):
            open_keystore_with_card(path, petit)
        with pytest.raises(KeystoreLockedError, match="unblock-keystore"):
            open_keystore_with_card(path, petit)
        assert open_keystore_with_card(cards.petit_keystore, petit).certificate == (
            cards.petit.encryption_certificate
        )  # her own keystore is another matter
    with (
        open_card(cards.uri(MARTIN), pin_callback=_pin) as martin,
        pytest.raises(KeystoreLockedError),  # locked even for the right card
    ):
        open_keystore_with_card(path, martin)
    assert keystore_failures(path) == 3
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        petit_token = module.find_token(label=PETIT)
        with pytest.raises(KeyStoreError, match="not the card of the keystore"):
            unblock_keystore(path, module, petit_token, PETIT_SO_PIN)  # her PUK is not his
        unblock_keystore(path, module, module.find_token(label=MARTIN), SO_PIN)
    assert keystore_failures(path) == 0
    with open_card(cards.uri(MARTIN), pin_callback=_pin) as martin:
        key = open_keystore_with_card(path, martin)
    assert key.certificate == cards.martin.encryption_certificate


def test_card_without_access_key_is_told_so(rsa_card, keystore_template, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "martin.keystore"
    shutil.copy(keystore_template[0] / "martin.keystore", path)
    with (
        open_card(rsa_card.uri(), pin_callback=_pin) as card,  # an on-card-mode card
        pytest.raises(KeyStoreError, match=r"no keystore access key.*another card"),
    ):
        open_keystore_with_card(path, card)
    assert keystore_failures(path) == 0  # nothing was tried


def test_card_removed_gives_a_clear_error_and_no_failure(cards) -> None:  # type: ignore[no-untyped-def]
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(cards.uri(MARTIN), module=module, pin_callback=_pin)
        try:
            module.state.remove_during = "decrypt"
            with pytest.raises(CardRemovedError, match=r"^card removed"):
                open_keystore_with_card(cards.martin_keystore, card)
        finally:
            card.close()
        with pytest.raises(CardRemovedError, match=r"^card removed"):  # and still out
            open_card(cards.uri(MARTIN), module=module, pin_callback=_pin)
    assert keystore_failures(cards.martin_keystore) == 0


@pytest.mark.interop
def test_ec_card_in_keystore_mode(blank_hsm, pki, tmp_path, openssl, files) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ec.keystore"
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        issued = issue_card(
            module,
            label="dr-ec",
            so_pin=SO_PIN,
            user_pin=USER_PIN,
            issuer=devpki_issuer(pki.ca, "ec@op1.test"),
            kind="p256",
            encryption_key="keystore",
            keystore=path,
        )
    assert json.loads(path.read_text())["wrap"] == "ecdh-hkdf-sha256"
    assert issued.access_certificate is not None
    issued.access_certificate.verify_directly_issued_by(issued.access_certificate)  # ECDSA
    der = run(
        [openssl, "cms", "-encrypt", "-binary", "-outform", "DER", "-aes-256-cbc",
         "-in", files("msg.txt", CONTENT),
         "-recip", files("enc.pem", pem_cert(issued.encryption_certificate))],
    )  # fmt: skip
    with open_card(f"pkcs11:token=dr-ec?module-path={SOFTHSM2_MODULE}", pin_callback=_pin) as c:
        assert c.decryption_keys() == []
        report = decrypt_data(der, [open_keystore_with_card(path, c)])
    assert report.content == CONTENT and report.key_agreement is not None


def test_issuance_checks_the_keystore_file_before_touching_the_card(blank_hsm, pki, tmp_path):  # type: ignore[no-untyped-def]
    existing = tmp_path / "taken.keystore"
    existing.write_text("{}")
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        common = {
            "label": "dr-x",
            "so_pin": SO_PIN,
            "user_pin": USER_PIN,
            "issuer": devpki_issuer(pki.ca, "x@op1.test"),
        }
        with pytest.raises(UsageError, match="already exists"):
            issue_card(module, **common, encryption_key="keystore", keystore=existing)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="no directory"):
            issue_card(module, **common, encryption_key="keystore", keystore=tmp_path / "a" / "b")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="needs the keystore file"):
            issue_card(module, **common, encryption_key="keystore")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="card or keystore"):
            issue_card(module, **common, encryption_key="usb")  # type: ignore[arg-type]
        assert module.tokens() == []  # the blank card was left untouched
    assert existing.read_text() == "{}"
