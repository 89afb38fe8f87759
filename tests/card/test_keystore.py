"""The "card as access key" keystore: opens with the card, locks after 3 failed openings."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from caducee.core.algorithms import KeyTransport
from caducee.keys.keystore import (
    KeystoreAccessError,
    KeystoreLockedError,
    create_keystore,
    keystore_failures,
    open_keystore,
    unblock_keystore,
)
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, Pkcs11Module
from caducee.keys.pkcs11_errors import CardRemovedError, WrongPinError
from tests.card.card_faults import FaultyModule

pytestmark = pytest.mark.softhsm


def _store(tmp_path, card, pki):  # type: ignore[no-untyped-def]
    """Dr Martin's (software) encryption key sealed to her card's decryption key."""
    path = tmp_path / "keystore.json"
    (access,) = card.decryption_keys()
    enc = pki.alice.encryption
    create_keystore(path, enc._key, enc.certificate, access)
    return path


def test_keystore_opens_with_the_card_only(rsa_card, pki, tmp_path) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        try:
            path = _store(tmp_path, card, pki)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            text = path.read_text()
            assert "PRIVATE" not in text and json.loads(text)["wrap"] == "rsa-oaep-sha1"
            (access,) = card.decryption_keys()
            before = module.state.private_key_operations
            key = open_keystore(path, access)
            assert module.state.private_key_operations == before + 1  # one card operation
        finally:
            card.close()
    assert key.certificate == pki.alice.encryption.certificate
    wrapped = key.certificate.public_key().encrypt(b"c" * 32, padding.PKCS1v15())
    assert key.decrypt_key(wrapped, KeyTransport.RSA_PKCS1V15) == b"c" * 32


def test_ec_card_opens_keystore_with_ecdh(ec_card, pki, tmp_path) -> None:
    with open_card(ec_card.uri(), pin_callback=lambda _: "1234") as card:
        path = _store(tmp_path, card, pki)
        assert json.loads(path.read_text())["wrap"] == "ecdh-hkdf-sha256"
        key = open_keystore(path, card.decryption_keys()[0])
    assert key.certificate == pki.alice.encryption.certificate


def test_three_failed_openings_lock_until_so_pin(rsa_card, pki, tmp_path) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: "1234") as card:
        path = _store(tmp_path, card, pki)
        (access,) = card.decryption_keys()
        other = pki.bob.encryption  # somebody else's key tries to open it
        with pytest.raises(KeystoreAccessError, match=r"not the one.*\(2 tries left\)"):
            open_keystore(path, other)
        with pytest.raises(KeystoreAccessError, match=r"1 try left"):
            open_keystore(path, other)
        with pytest.raises(KeystoreLockedError, match="keystore locked after 3"):
            open_keystore(path, other)
        with pytest.raises(KeystoreLockedError):  # even the right card is refused now
            open_keystore(path, access)
    with Pkcs11Module(SOFTHSM2_MODULE) as module:
        token = module.find_token(label="dr-martin")
        with pytest.raises(WrongPinError, match="wrong SO PIN"):
            unblock_keystore(path, module, token, "00000000")
        assert keystore_failures(path) == 3
        unblock_keystore(path, module, token, "12345678")
        assert keystore_failures(path) == 0
        with open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234") as card:
            key = open_keystore(path, card.decryption_keys()[0])
    assert key.certificate == pki.alice.encryption.certificate


def test_altered_keystore_counts_as_a_failure(rsa_card, pki, tmp_path) -> None:
    with open_card(rsa_card.uri(), pin_callback=lambda _: "1234") as card:
        path = _store(tmp_path, card, pki)
        doc = json.loads(path.read_text())
        doc["certificate"] = json.loads(path.read_text())["access_certificate"]  # swap certs
        path.write_text(json.dumps(doc))
        with pytest.raises(KeystoreAccessError, match="does not open it"):
            open_keystore(path, card.decryption_keys()[0])
        assert keystore_failures(path) == 1


def test_removed_card_is_not_a_keystore_failure(rsa_card, pki, tmp_path) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        try:
            path = _store(tmp_path, card, pki)
            (access,) = card.decryption_keys()
            module.state.remove_during = "decrypt"
            with pytest.raises(CardRemovedError):
                open_keystore(path, access)
            assert keystore_failures(path) == 0
        finally:
            card.close()
