"""PKCS#11 return values (``CKR_*``) turned into caducee errors a professional can act on.

A card answers with a number; Dr Martin needs "wrong PIN: 2 tries left" or "card locked: run
caducee card unblock". The mapping lives here, at the adapter boundary, so nothing above the keys
layer ever sees a PyKCS11 exception. No message ever carries a PIN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import PyKCS11

from caducee.errors import CaduceeError, CardError, DecryptionError

#: The card policy from the specification: a card locks after this many wrong PINs. PKCS#11 only
#: tells "count low" / "final try" / "locked", so the remaining count is derived from this.
MAX_PIN_TRIES = 3

# CKF_* token flags (PKCS#11 v2.40 §5.4); spelled here so the meaning is next to the number.
CKF_LOGIN_REQUIRED = 0x4
CKF_USER_PIN_INITIALIZED = 0x8
CKF_PROTECTED_AUTHENTICATION_PATH = 0x100
CKF_TOKEN_INITIALIZED = 0x400
CKF_USER_PIN_COUNT_LOW = 0x10000
CKF_USER_PIN_FINAL_TRY = 0x20000
CKF_USER_PIN_LOCKED = 0x40000
CKF_USER_PIN_TO_BE_CHANGED = 0x80000
CKF_SO_PIN_COUNT_LOW = 0x100000
CKF_SO_PIN_FINAL_TRY = 0x200000
CKF_SO_PIN_LOCKED = 0x400000
CKF_SO_PIN_TO_BE_CHANGED = 0x800000

Role = Literal["user", "so"]


class WrongPinError(CardError):
    """The PIN was refused; ``tries_left`` is None when the card does not say."""

    def __init__(self, tries_left: int | None, role: Role = "user") -> None:
        self.tries_left = tries_left
        self.role = role
        what = "wrong PIN" if role == "user" else "wrong SO PIN (PUK)"
        if tries_left is None:
            text = what
        elif tries_left == 1:
            text = f"{what}: 1 try left before the card locks"
        else:
            text = f"{what}: {tries_left} tries left"
        super().__init__(text)


class CardLockedError(CardError):
    """Too many wrong PINs: the user PIN (or the SO PIN) is blocked."""

    def __init__(self, role: Role = "user") -> None:
        self.role = role
        if role == "user":
            super().__init__("card locked: run caducee card unblock")
        else:
            super().__init__("card blocked: the SO PIN (PUK) is locked; the card must be replaced")


class CardRemovedError(CardError):
    """The card left the reader (or the reader went away) during or between operations."""

    def __init__(self, action: str | None = None) -> None:
        self.action = action
        super().__init__(f"card removed (while {action})" if action else "card removed")


class PinLengthError(CardError):
    """The new PIN is shorter or longer than the card accepts."""

    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        bounds = f" (the card accepts {minimum} to {maximum} characters)" if minimum else ""
        super().__init__(f"PIN length out of range{bounds}")


class PinNotInitializedError(CardError):
    """The token was initialised but no user PIN was ever set."""

    def __init__(self) -> None:
        super().__init__(
            "the card has no user PIN yet: it was not fully issued (caducee card issue)"
        )


class PinExpiredError(CardError):
    """The card demands a PIN change before any private-key use."""

    def __init__(self) -> None:
        super().__init__("the PIN must be changed first: run caducee card change-pin")


class TokenNotFoundError(CardError):
    """No token matches what was asked for (label, serial)."""


class CardKeyNotFoundError(CardError):
    """No private key or certificate on the card matches the URI."""


class CardOperationError(CardError):
    """Any other refusal from the card or its module; names the action and the CKR code."""


def _ckr_name(code: int) -> str:
    name = PyKCS11.CKR.get(code)
    return name if isinstance(name, str) else f"CKR 0x{code:08X}"


#: Other refusals a card gives, in words; the CKR name is kept in brackets for the helpdesk.
#: (The PIN, removal, session and decryption codes get their own error classes in map_ckr.)
_CKR_WORDS: dict[int, str] = {
    PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED: "this key is not allowed to do that",
    PyKCS11.CKR_KEY_TYPE_INCONSISTENT: "the key is of the wrong type for this operation",
    PyKCS11.CKR_KEY_HANDLE_INVALID: "the key is no longer on the card",
    PyKCS11.CKR_KEY_SIZE_RANGE: "the card does not support keys of this size",
    PyKCS11.CKR_DATA_LEN_RANGE: "the data has the wrong length for this key",
    PyKCS11.CKR_DATA_INVALID: "the card does not accept this data",
    PyKCS11.CKR_DEVICE_MEMORY: "the card is full",
    PyKCS11.CKR_HOST_MEMORY: "the card middleware ran out of memory",
    PyKCS11.CKR_DEVICE_ERROR: "the card or its reader failed",
    PyKCS11.CKR_GENERAL_ERROR: "the card or its middleware failed",
    PyKCS11.CKR_FUNCTION_FAILED: "the card could not complete the operation",
    PyKCS11.CKR_TOKEN_WRITE_PROTECTED: "the card is write-protected",
    PyKCS11.CKR_OPERATION_ACTIVE: "another operation is still running on the card",
    PyKCS11.CKR_FUNCTION_NOT_SUPPORTED: "the card middleware does not offer this function",
    PyKCS11.CKR_ATTRIBUTE_READ_ONLY: "the card does not let this object be changed",
    PyKCS11.CKR_TEMPLATE_INCONSISTENT: "the card does not accept this object",
    PyKCS11.CKR_ARGUMENTS_BAD: "the card middleware rejected the request's parameters",
    PyKCS11.CKR_CRYPTOKI_NOT_INITIALIZED: "the card middleware is not initialised",
}


def describe_ckr(code: int) -> str:
    """``code`` in words a professional can read, with its CKR name for support."""
    words = _CKR_WORDS.get(code)
    return f"{words} ({_ckr_name(code)})" if words else _ckr_name(code)


def tries_left(flags: int, role: Role = "user") -> int | None:
    """What the token flags say about remaining PIN tries (None: the card does not tell)."""
    low, final, locked = (
        (CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED)
        if role == "user"
        else (CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_LOCKED)
    )
    if flags & locked:
        return 0
    if flags & final:
        return 1
    if flags & low:
        return MAX_PIN_TRIES - 1
    return None


def map_ckr(
    code: int,
    action: str,
    *,
    role: Role = "user",
    flags: Callable[[], int] | None = None,
    pin_range: tuple[int, int] | None = None,
    key_label: str | None = None,
) -> CaduceeError:
    """The caducee error for ``code`` returned while doing ``action`` (e.g. "signing");
    ``key_label`` names the card key the operation used, if any."""
    if code == PyKCS11.CKR_PIN_INCORRECT:
        left: int | None = None
        if flags is not None:
            try:
                left = tries_left(flags(), role)
            except PyKCS11.PyKCS11Error:
                left = None
        if left == 0:
            return CardLockedError(role)
        return WrongPinError(left, role)
    if code == PyKCS11.CKR_PIN_LOCKED:
        return CardLockedError(role)
    if code in (PyKCS11.CKR_PIN_LEN_RANGE, PyKCS11.CKR_PIN_INVALID):
        return PinLengthError(*(pin_range or (None, None)))
    if code == PyKCS11.CKR_PIN_EXPIRED:
        return PinExpiredError()
    if code == PyKCS11.CKR_USER_PIN_NOT_INITIALIZED:
        return PinNotInitializedError()
    if code in (
        PyKCS11.CKR_DEVICE_REMOVED,
        PyKCS11.CKR_TOKEN_NOT_PRESENT,
        PyKCS11.CKR_TOKEN_NOT_RECOGNIZED,
        PyKCS11.CKR_SESSION_HANDLE_INVALID,
        PyKCS11.CKR_SESSION_CLOSED,
    ):
        return CardRemovedError(action)
    if code == PyKCS11.CKR_USER_NOT_LOGGED_IN:
        return CardOperationError(f"card refused {action}: not logged in (PIN needed)")
    if code == PyKCS11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
        return CardOperationError(
            f"card busy while {action}: it is open with the other PIN (user or SO); close it first"
        )
    if code == PyKCS11.CKR_SESSION_READ_ONLY_EXISTS:
        return CardOperationError(
            f"card busy while {action}: another program holds a session on it; close it first"
        )
    if code in (
        PyKCS11.CKR_ENCRYPTED_DATA_INVALID,
        PyKCS11.CKR_ENCRYPTED_DATA_LEN_RANGE,
    ) or (code == PyKCS11.CKR_GENERAL_ERROR and action.startswith("decrypt")):
        return DecryptionError(
            f"the card could not {action}: the key was not encrypted for this card key "
            "or with another padding"
        )
    if code in (PyKCS11.CKR_MECHANISM_INVALID, PyKCS11.CKR_MECHANISM_PARAM_INVALID):
        return CardOperationError(f"the card does not support this algorithm for {action}")
    if code == PyKCS11.CKR_FUNCTION_CANCELED:
        return CardOperationError(f"{action} cancelled on the card reader")
    if code == PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED and key_label is not None:
        instead = _OTHER_KEY.get(action)
        text = f"the card's {key_label!r} key is not for {action}"
        return CardOperationError(f"{text}: {instead}" if instead else text)
    return CardOperationError(f"card refused {action}: {describe_ckr(code)}")


#: What to use instead when a card key refuses an operation it is not meant for.
_OTHER_KEY = {
    "signing": "use the card's signature key (object=signature in the key URI)",
    "decrypting the message key": "use the card's encryption key (object=encryption)",
}


@contextmanager
def card_errors(
    action: str,
    *,
    role: Role = "user",
    flags: Callable[[], int] | None = None,
    pin_range: tuple[int, int] | None = None,
    key_label: str | None = None,
) -> Iterator[None]:
    """Translate PyKCS11 errors raised inside the block; chain nothing that could hold a PIN."""
    try:
        yield
    except PyKCS11.PyKCS11Error as exc:
        code = int(exc.value)
        raise map_ckr(
            code, action, role=role, flags=flags, pin_range=pin_range, key_label=key_label
        ) from None
