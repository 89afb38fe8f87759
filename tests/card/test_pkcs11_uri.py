"""RFC 7512 URIs and CKR_* mapping: pure logic, no card needed."""

from __future__ import annotations

import PyKCS11
import pytest

from caducee.errors import DecryptionError, UsageError
from caducee.keys.pkcs11_errors import (
    CKF_USER_PIN_COUNT_LOW,
    CKF_USER_PIN_FINAL_TRY,
    CKF_USER_PIN_LOCKED,
    CardLockedError,
    CardOperationError,
    CardRemovedError,
    PinLengthError,
    PinNotInitializedError,
    WrongPinError,
    map_ckr,
)
from caducee.keys.pkcs11_uri import Pkcs11UriError, parse_pkcs11_uri


def test_parse_full_uri() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:token=Dr%20Martin;object=signature;type=private;id=%01%A2;serial=42"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin&x-other=1"
    )
    assert uri.token == "Dr Martin"
    assert uri.object == "signature" and uri.type == "private"
    assert uri.id == b"\x01\xa2" and uri.serial == "42"
    assert uri.module_path == "/usr/lib/softhsm/libsofthsm2.so"
    assert uri.pin_source == "file:/run/pin"
    assert str(uri) == (
        "pkcs11:token=Dr%20Martin;serial=42;object=signature;type=private;id=%01%A2"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin"
    )
    assert parse_pkcs11_uri(str(uri)) == uri


def test_pin_value_is_never_shown() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=a?pin-value=987654")
    assert uri.pin_value == "987654"
    assert "987654" not in repr(uri) and "987654" not in str(uri)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file:/x", "must start with 'pkcs11:'"),
        ("pkcs11:tokn=a", "unknown path attribute 'tokn'"),
        ("pkcs11:token", "has no value"),
        ("pkcs11:token=a;token=b", "given twice"),
        ("pkcs11:type=key", "unknown object type"),
        ("pkcs11:slot-id=x", "slot-id must be a decimal"),
        ("pkcs11:token=%ff", "not UTF-8"),
        ("pkcs11:token=a?pin-value=1&pin-source=/p", "not both"),
    ],
)
def test_malformed_uris(text: str, message: str) -> None:
    with pytest.raises(Pkcs11UriError, match=message):
        parse_pkcs11_uri(text)
    assert issubclass(Pkcs11UriError, UsageError)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0, "wrong PIN"),
        (CKF_USER_PIN_COUNT_LOW, "wrong PIN: 2 tries left"),
        (CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY, "wrong PIN: 1 try left"),
        (CKF_USER_PIN_LOCKED, "card locked: run caducee card unblock"),
    ],
)
def test_pin_incorrect_reads_the_token_flags(flags: int, expected: str) -> None:
    error = map_ckr(PyKCS11.CKR_PIN_INCORRECT, "checking the PIN", flags=lambda: flags)
    assert str(error).startswith(expected)
    assert isinstance(error, WrongPinError | CardLockedError)


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (PyKCS11.CKR_PIN_LOCKED, CardLockedError, "card locked: run caducee card unblock"),
        (PyKCS11.CKR_DEVICE_REMOVED, CardRemovedError, "card removed (while signing)"),
        (PyKCS11.CKR_TOKEN_NOT_PRESENT, CardRemovedError, "card removed (while signing)"),
        (PyKCS11.CKR_PIN_LEN_RANGE, PinLengthError, "PIN length out of range"),
        (PyKCS11.CKR_USER_PIN_NOT_INITIALIZED, PinNotInitializedError, "the card has no user PIN"),
        (
            PyKCS11.CKR_DEVICE_ERROR,
            CardOperationError,
            "card refused signing: the card or its reader failed (CKR_DEVICE_ERROR)",
        ),
    ],
)
def test_ckr_mapping(code: int, kind: type, text: str) -> None:
    error = map_ckr(code, "signing")
    assert isinstance(error, kind)
    assert str(error).startswith(text)


def test_bad_ciphertext_is_a_decryption_error() -> None:
    error = map_ckr(PyKCS11.CKR_ENCRYPTED_DATA_INVALID, "decrypting the message key")
    assert isinstance(error, DecryptionError)
