"""Changing and unblocking the card's PIN.

The holder changes her PIN with the old one; after three wrong PINs the card locks and only the
SO PIN (the PUK the card authority gave her) can set a new one. PINs are passed straight to the
card and not kept.
"""

from __future__ import annotations

from caducee.keys.pkcs11 import CardSession, Pkcs11Module, TokenInfo
from caducee.keys.pkcs11_errors import PinLengthError, card_errors


def _check_length(token: TokenInfo, pin: str) -> None:
    if not token.min_pin <= len(pin) <= token.max_pin:
        raise PinLengthError(token.min_pin, token.max_pin)


def change_pin(module: Pkcs11Module, token: TokenInfo, old_pin: str, new_pin: str) -> None:
    """Set a new user PIN, proving the old one first (a wrong one counts towards the lock)."""
    _check_length(token, new_pin)
    with (
        CardSession(module, token, old_pin, rw=True) as card,
        card_errors("changing the PIN", pin_range=(token.min_pin, token.max_pin)),
    ):
        card.raw_session().setPin(old_pin, new_pin)


def unblock_pin(module: Pkcs11Module, token: TokenInfo, so_pin: str, new_pin: str) -> None:
    """Unlock a card locked by wrong PINs: log in with the SO PIN (PUK), set a new user PIN."""
    _check_length(token, new_pin)
    with (
        CardSession(module, token, so_pin, rw=True, so=True) as card,
        card_errors("setting the new PIN", pin_range=(token.min_pin, token.max_pin)),
    ):
        card.raw_session().initPin(new_pin)


def change_so_pin(module: Pkcs11Module, token: TokenInfo, old_so_pin: str, new_so_pin: str) -> None:
    """Set a new SO PIN (PUK), proving the old one first."""
    _check_length(token, new_so_pin)
    with (
        CardSession(module, token, old_so_pin, rw=True, so=True) as card,
        card_errors("changing the SO PIN", role="so", pin_range=(token.min_pin, token.max_pin)),
    ):
        card.raw_session().setPin(old_so_pin, new_so_pin)


__all__ = ["change_pin", "change_so_pin", "unblock_pin"]
