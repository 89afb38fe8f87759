"""Wrong PINs, lockout, unblock, PIN change and a card pulled out: on SoftHSM2, with a card's
lockout and removal simulated around it by :mod:`tests.card.card_faults`."""

from __future__ import annotations

import datetime as dt

import pytest

from caducee.card import card_status, change_pin, unblock_pin
from caducee.core.algorithms import Digest, SignatureScheme
from caducee.errors import CardError
from caducee.keys.open import open_card
from caducee.keys.pkcs11 import SOFTHSM2_MODULE, CardSession, Pkcs11Module
from caducee.keys.pkcs11_errors import (
    CardLockedError,
    CardRemovedError,
    PinLengthError,
    WrongPinError,
)
from tests.card.card_faults import FaultyModule

pytestmark = pytest.mark.softhsm

NOW = dt.datetime.now(dt.UTC)


def _login(module: Pkcs11Module, pin: str) -> None:
    token = module.find_token(label="dr-martin")
    CardSession(module, token, pin).close()


def test_plain_softhsm_wrong_pin_says_wrong_pin_and_never_locks(module) -> None:
    for _ in range(5):
        with pytest.raises(WrongPinError) as info:
            _login(module, "0000")
        assert str(info.value) == "wrong PIN"  # SoftHSM2 does not count tries
        assert "0000" not in repr(info.value)
    _login(module, "1234")


def test_three_wrong_pins_lock_the_card_until_unblocked(rsa_card) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        with pytest.raises(WrongPinError, match=r"^wrong PIN: 2 tries left$"):
            _login(module, "0000")
        with pytest.raises(WrongPinError, match=r"^wrong PIN: 1 try left before the card locks$"):
            _login(module, "1111")
        token = module.find_token(label="dr-martin")
        assert card_status(module, token, at=NOW).pin.final_try
        with pytest.raises(CardLockedError, match=r"^card locked: run caducee card unblock$"):
            _login(module, "2222")
        # the right PIN does not open a locked card
        with pytest.raises(CardLockedError, match="card locked"):
            _login(module, "1234")
        status = card_status(module, token, at=NOW)
        assert status.pin.locked and status.pin.describe().startswith("locked")
        with pytest.raises(WrongPinError, match="wrong SO PIN"):
            unblock_pin(module, token, "87654321", "5678")
        unblock_pin(module, token, "12345678", "5678")
        assert not card_status(module, token, at=NOW).pin.locked
        with pytest.raises(WrongPinError):
            _login(module, "1234")  # the old PIN is gone
        _login(module, "5678")
        assert module.state.failures["user"] == 0


def test_a_right_pin_resets_the_count(rsa_card) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        for _ in range(2):
            with pytest.raises(WrongPinError):
                _login(module, "0000")
        _login(module, "1234")
        with pytest.raises(WrongPinError, match="2 tries left"):
            _login(module, "0000")


def test_change_pin(rsa_card) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        token = module.find_token(label="dr-martin")
        with pytest.raises(WrongPinError, match="2 tries left"):
            change_pin(module, token, "9999", "4321")
        with pytest.raises(PinLengthError, match=r"PIN length out of range \(the card accepts 4"):
            change_pin(module, token, "1234", "12")
        change_pin(module, token, "1234", "4321")
        _login(module, "4321")
        with pytest.raises(WrongPinError):
            _login(module, "1234")


@pytest.mark.parametrize("during", ["sign", "findObjects"])
def test_card_removed_mid_operation(rsa_card, during) -> None:
    with FaultyModule(SOFTHSM2_MODULE) as module:
        card = open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        try:
            key = card.signing_key()
            module.state.remove_during = during
            with pytest.raises(CardRemovedError, match=r"^card removed \(while (signing|search)"):
                if during == "sign":
                    key.sign_digest(bytes(32), Digest.SHA256, SignatureScheme.RSA_PSS)
                else:
                    card.decryption_keys()
            with pytest.raises(CardRemovedError):  # and it stays out
                key.sign_digest(bytes(32), Digest.SHA256, SignatureScheme.RSA_PSS)
            with pytest.raises(CardRemovedError, match="card removed"):
                open_card(rsa_card.uri(), module=module, pin_callback=lambda _: "1234")
        finally:
            card.close()  # closing a session on a removed card is quiet


def test_card_errors_are_caducee_card_errors(rsa_card) -> None:
    assert issubclass(CardLockedError, CardError)
    assert issubclass(CardRemovedError, CardError)
    assert issubclass(WrongPinError, CardError)
