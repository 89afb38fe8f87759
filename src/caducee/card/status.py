"""What is on a card and in what state: for ``caducee card status`` and ``caducee card list``.

Certificates are public objects and readable without a PIN; private keys are listed only when the
holder gives her PIN. The PIN state comes from the token flags (count low, final try, locked, to be
changed), which is all PKCS#11 tells.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import PyKCS11
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from caducee.card.names import readable_name
from caducee.keys.keystore import ACCESS_LABEL, is_access_certificate, keystore_info
from caducee.keys.pkcs11 import CardCertificate, CardSession, Pkcs11Module, TokenInfo
from caducee.keys.pkcs11_errors import (
    CKF_SO_PIN_COUNT_LOW,
    CKF_SO_PIN_FINAL_TRY,
    CKF_SO_PIN_LOCKED,
    CKF_USER_PIN_COUNT_LOW,
    CKF_USER_PIN_FINAL_TRY,
    CKF_USER_PIN_INITIALIZED,
    CKF_USER_PIN_LOCKED,
    CKF_USER_PIN_TO_BE_CHANGED,
    tries_left,
)


@dataclasses.dataclass(frozen=True)
class PinState:
    """The PIN flags of a token, in words."""

    initialized: bool
    count_low: bool
    final_try: bool
    locked: bool
    to_be_changed: bool
    so_count_low: bool
    so_final_try: bool
    so_locked: bool
    tries_left: int | None

    @classmethod
    def from_flags(cls, flags: int) -> PinState:
        return cls(
            initialized=bool(flags & CKF_USER_PIN_INITIALIZED),
            count_low=bool(flags & CKF_USER_PIN_COUNT_LOW),
            final_try=bool(flags & CKF_USER_PIN_FINAL_TRY),
            locked=bool(flags & CKF_USER_PIN_LOCKED),
            to_be_changed=bool(flags & CKF_USER_PIN_TO_BE_CHANGED),
            so_count_low=bool(flags & CKF_SO_PIN_COUNT_LOW),
            so_final_try=bool(flags & CKF_SO_PIN_FINAL_TRY),
            so_locked=bool(flags & CKF_SO_PIN_LOCKED),
            tries_left=tries_left(flags),
        )

    def describe(self) -> str:
        if not self.initialized:
            return "no user PIN set (card not issued)"
        if self.locked:
            return "locked: run caducee card unblock"
        parts = []
        if self.final_try:
            parts.append("final try before the card locks")
        elif self.count_low:
            parts.append(f"wrong PIN entered ({self.tries_left} tries left)")
        else:
            parts.append("ok")
        if self.to_be_changed:
            parts.append("must be changed")
        if self.so_locked:
            parts.append("SO PIN locked")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class CardObject:
    """One object on the card, described without any secret."""

    kind: str  # "certificate" | "private key"
    label: str
    id: str  # hex CKA_ID
    subject: str | None = None
    # "signature" | "encryption" | "signature+encryption" | "keystore-access"
    purpose: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    valid: bool | None = None
    sensitive: bool | None = None
    extractable: bool | None = None
    generated_on_card: bool | None = None


@dataclasses.dataclass(frozen=True)
class CardStatus:
    token: TokenInfo
    holder: str | None
    pin: PinState
    objects: tuple[CardObject, ...]
    keys_listed: bool  # False when no PIN was given (private keys are not visible then)
    #: "keystore" when the card holds a keystore access key (encryption key in a local
    #: keystore), else "card"
    encryption_mode: str = "card"


def list_cards(module: Pkcs11Module) -> list[TokenInfo]:
    """Initialised cards present in the module's readers."""
    return module.tokens()


def _is_access(cert: CardCertificate) -> bool:
    return cert.label == ACCESS_LABEL or is_access_certificate(cert.certificate)


def _purpose(cert: CardCertificate) -> str:
    if _is_access(cert):
        return "keystore-access"
    sig, enc = cert.for_signature, cert.for_encryption
    return "signature+encryption" if sig and enc else "signature" if sig else "encryption"


def _holder(certs: list[CardCertificate]) -> str | None:
    for cert in sorted((c for c in certs if not _is_access(c)), key=lambda c: not c.for_signature):
        subject = cert.certificate.subject
        names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        mails = subject.get_attributes_for_oid(x509.NameOID.EMAIL_ADDRESS)
        name = str(names[0].value) if names else readable_name(subject)
        return f"{name} <{mails[0].value!s}>" if mails else name
    return None


def _bool(value: Any) -> bool:
    return bool(value) if not isinstance(value, bytes | list | tuple) else any(value)


def card_status(
    module: Pkcs11Module, token: TokenInfo, *, at: dt.datetime, pin: str | None = None
) -> CardStatus:
    """Read the card's objects and PIN state; with ``pin``, list the private keys too."""
    token = module.token_info(token.slot)  # fresh flags
    with CardSession(module, token, pin) as card:
        certs = card.certificates()
        objects = [
            CardObject(
                kind="certificate",
                label=c.label,
                id=c.id.hex(),
                subject=readable_name(c.certificate.subject),
                purpose=_purpose(c),
                not_before=c.certificate.not_valid_before_utc,
                not_after=c.certificate.not_valid_after_utc,
                valid=c.certificate.not_valid_before_utc <= at <= c.certificate.not_valid_after_utc,
            )
            for c in certs
        ]
        if pin is not None:
            attrs = [
                PyKCS11.CKA_LABEL,
                PyKCS11.CKA_ID,
                PyKCS11.CKA_SENSITIVE,
                PyKCS11.CKA_EXTRACTABLE,
                PyKCS11.CKA_LOCAL,
            ]
            for handle in card.private_keys():
                label, kid, sensitive, extractable, local = card.attributes(handle, attrs)
                objects.append(
                    CardObject(
                        kind="private key",
                        label=bytes(label).decode("utf-8", "replace"),
                        id=bytes(kid).hex(),
                        sensitive=_bool(sensitive),
                        extractable=_bool(extractable),
                        generated_on_card=_bool(local),
                    )
                )
    return CardStatus(
        token=token,
        holder=_holder(certs),
        pin=PinState.from_flags(token.pin_flags),
        objects=tuple(objects),
        keys_listed=pin is not None,
        encryption_mode="keystore" if any(_is_access(c) for c in certs) else "card",
    )


@dataclasses.dataclass(frozen=True)
class KeystoreState:
    """A keystore file as ``caducee card status`` shows it (nothing secret, not opened)."""

    path: str
    holder: str  # subject of the sealed key's encryption certificate
    failures: int
    tries_left: int
    locked: bool
    belongs_to_card: bool  # its access certificate is on this card

    def describe(self) -> str:
        owner = "opens with this card" if self.belongs_to_card else "NOT for this card"
        if self.locked:
            state = "LOCKED: run caducee card unblock-keystore"
        elif self.failures:
            plural = "s" if self.failures > 1 else ""
            state = f"{self.failures} failed opening{plural} ({self.tries_left} tries left)"
        else:
            state = "ok"
        return f"{self.path}: {owner}, {state}"


def keystore_state(module: Pkcs11Module, token: TokenInfo, path: str) -> KeystoreState:
    """Read a keystore's header and check (without a PIN) whether this card opens it."""
    info = keystore_info(path)
    wanted = info.access_certificate.fingerprint(hashes.SHA256())
    with CardSession(module, module.token_info(token.slot), None) as card:
        mine = any(
            c.certificate.fingerprint(hashes.SHA256()) == wanted for c in card.certificates()
        )
    return KeystoreState(
        path=str(path),
        holder=readable_name(info.certificate.subject),
        failures=info.failures,
        tries_left=info.tries_left,
        locked=info.locked,
        belongs_to_card=mine,
    )
