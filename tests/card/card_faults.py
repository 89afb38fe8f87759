"""A test double wrapped around the real SoftHSM2: it behaves like a smart card where SoftHSM2
does not.

SoftHSM2 checks PINs but never counts them. :class:`FaultyModule` keeps the try counters a real
card keeps (3 wrong PINs lock it, the SO PIN unblocks), reports them in the token flags
(count low / final try / locked), answers CKR_PIN_LOCKED once locked, and can pull the card out of
the reader (CKR_DEVICE_REMOVED), even in the middle of an operation. Everything else - PIN checks,
keys, signatures, decryption - is done by the real SoftHSM2 underneath.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import PyKCS11

from caducee.keys.pkcs11 import Pkcs11Module, TokenInfo
from caducee.keys.pkcs11_errors import (
    CKF_SO_PIN_COUNT_LOW,
    CKF_SO_PIN_FINAL_TRY,
    CKF_SO_PIN_LOCKED,
    CKF_USER_PIN_COUNT_LOW,
    CKF_USER_PIN_FINAL_TRY,
    CKF_USER_PIN_LOCKED,
    card_errors,
)

PRIVATE_KEY_OPS = ("sign", "decrypt", "deriveKey")


@dataclasses.dataclass
class CardState:
    """What the chip would remember."""

    max_tries: int = 3
    failures: dict[str, int] = dataclasses.field(default_factory=lambda: {"user": 0, "so": 0})
    removed: bool = False
    remove_during: str | None = None  # pull the card out during this session call
    calls: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def locked(self, role: str) -> bool:
        return self.failures[role] >= self.max_tries

    def flags(self) -> int:
        out = 0
        for role, (low, final, locked) in (
            ("user", (CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED)),
            ("so", (CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_LOCKED)),
        ):
            n = self.failures[role]
            if n >= self.max_tries:
                out |= locked
            elif n == self.max_tries - 1:
                out |= final | low
            elif n > 0:
                out |= low
        return out

    @property
    def private_key_operations(self) -> int:
        return sum(self.calls[name] for name in PRIVATE_KEY_OPS)


def _fail(code: int) -> None:
    raise PyKCS11.PyKCS11Error(code)


class FaultySession:
    """A real PyKCS11 session seen through a card's eyes."""

    def __init__(self, real: Any, state: CardState) -> None:
        self._real = real
        self._state = state
        self._role: str | None = None

    def _enter(self, name: str) -> None:
        self._state.calls[name] += 1
        if self._state.remove_during == name:
            self._state.removed = True
        if self._state.removed:
            _fail(PyKCS11.CKR_DEVICE_REMOVED)

    def _check_pin(self, role: str, check: Any) -> Any:
        if self._state.locked(role):
            _fail(PyKCS11.CKR_PIN_LOCKED)
        try:
            result = check()
        except PyKCS11.PyKCS11Error as exc:
            if exc.value == PyKCS11.CKR_PIN_INCORRECT:
                self._state.failures[role] += 1
            raise
        self._state.failures[role] = 0
        return result

    def login(self, pin: str, user_type: int = PyKCS11.CKU_USER) -> Any:
        self._enter("login")
        role = "so" if user_type == PyKCS11.CKU_SO else "user"
        result = self._check_pin(role, lambda: self._real.login(pin, user_type))
        self._role = role
        return result

    def setPin(self, old: str, new: str) -> Any:
        self._enter("setPin")
        return self._check_pin(self._role or "user", lambda: self._real.setPin(old, new))

    def initPin(self, pin: str) -> Any:
        self._enter("initPin")
        result = self._real.initPin(pin)
        self._state.failures["user"] = 0  # the SO unblocked the card
        return result

    def closeSession(self) -> Any:
        self._real.closeSession()  # the real card drops the session either way
        if self._state.removed:
            _fail(PyKCS11.CKR_DEVICE_REMOVED)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._real, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._enter(name)
            return target(*args, **kwargs)

        return call


class FaultyModule(Pkcs11Module):
    """The real SoftHSM2 module with a card's PIN counters and removability."""

    def __init__(self, path: str, state: CardState | None = None) -> None:
        super().__init__(path)
        self.state = state or CardState()

    def token_info(self, slot: int) -> TokenInfo:
        if self.state.removed:
            with card_errors("reading the card"):
                _fail(PyKCS11.CKR_TOKEN_NOT_PRESENT)
        info = super().token_info(slot)
        # a card that counts tries: its own maker name, its PIN flags from our counters
        return dataclasses.replace(
            info, manufacturer="caducee test card", flags=info.flags | self.state.flags()
        )

    def open_session(self, slot: int, *, rw: bool = False) -> Any:
        if self.state.removed:
            with card_errors("opening a session on the card"):
                _fail(PyKCS11.CKR_TOKEN_NOT_PRESENT)
        return FaultySession(super().open_session(slot, rw=rw), self.state)
