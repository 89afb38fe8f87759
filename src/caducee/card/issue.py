"""Issuing a card: what the card authority does before handing it to a professional.

Two key pairs per card. The signature key is generated on the card and never leaves it
(non-repudiation). The encryption key is generated off-card so that it can be escrowed for key
recovery, imported sensitive and non-extractable, and returned to the caller - never written
anywhere here, except in keystore mode, sealed in the keystore file that only the card opens
(see :mod:`caducee.card.access`). Certificates come from an issuer callback that receives the
public key: the throw-away test CA plugs in today, the operator's CA later, with no CSR round
trip on the card.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee.card.access import add_access_key, card_access_key
from caducee.card.objects import (
    KeyKind,
    PrivateKey,
    PublicKey,
    generate_on_card,
    import_private_key,
    new_private_key,
    write_certificate,
)
from caducee.errors import CaduceeError, UsageError
from caducee.keys.keystore import create_keystore
from caducee.keys.pkcs11 import CardSession, Pkcs11Module, TokenInfo
from caducee.keys.pkcs11_errors import TokenNotFoundError, card_errors

KeyRole = Literal["signature", "encryption"]

#: Where the encryption private key lives: imported on the card (default), or sealed in a local
#: keystore file that only the card's access key opens ("card as access key").
EncryptionMode = Literal["card", "keystore"]
ENCRYPTION_MODES: tuple[EncryptionMode, ...] = ("card", "keystore")

#: Issues the certificate for a public key: signature certificates get digitalSignature +
#: nonRepudiation, encryption ones keyEncipherment (RSA) or keyAgreement (EC).
CertificateIssuer = Callable[[PublicKey, KeyRole], x509.Certificate]

SIGNATURE_LABEL = "signature"
ENCRYPTION_LABEL = "encryption"

__all__ = [
    "ENCRYPTION_MODES",
    "CertificateIssuer",
    "EncryptionMode",
    "IssuedCard",
    "KeyKind",
    "KeyRole",
    "add_encryption_key",
    "add_keystore_encryption_key",
    "add_signature_key",
    "check_keystore_target",
    "issue_card",
]


class IssuanceError(CaduceeError):
    """The issuer returned a certificate that does not fit the key it was asked to certify."""


@dataclasses.dataclass(frozen=True)
class IssuedCard:
    """The outcome of issuance. ``encryption_private_key`` is for the escrow, and only for it."""

    token: TokenInfo
    signature_certificate: x509.Certificate
    encryption_certificate: x509.Certificate
    encryption_private_key: PrivateKey = dataclasses.field(repr=False)
    #: keystore mode only: the file holding the encryption key, and the card key that opens it
    keystore: pathlib.Path | None = None
    access_certificate: x509.Certificate | None = None

    @property
    def encryption_mode(self) -> EncryptionMode:
        return "card" if self.keystore is None else "keystore"


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certify(issuer: CertificateIssuer, pub: PublicKey, role: KeyRole) -> x509.Certificate:
    cert = issuer(pub, role)
    if _spki(cert.public_key()) != _spki(pub):  # type: ignore[arg-type]
        raise IssuanceError(f"the {role} certificate is not for the key generated for it")
    return cert


def add_signature_key(
    card: CardSession,
    issuer: CertificateIssuer,
    kind: KeyKind = "rsa2048",
    *,
    always_authenticate: bool = False,
) -> x509.Certificate:
    """Generate a signature key pair on the card and store its certificate next to it (also how
    a signature key is renewed: the newest valid certificate is the one used)."""
    _, pub = generate_on_card(card, kind, SIGNATURE_LABEL, always_authenticate=always_authenticate)
    cert = _certify(issuer, pub, "signature")
    write_certificate(card, cert, SIGNATURE_LABEL)
    return cert


def add_encryption_key(
    card: CardSession,
    issuer: CertificateIssuer,
    kind: KeyKind = "rsa2048",
    *,
    private_key: PrivateKey | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """Import an (escrowable) encryption key and its certificate. Earlier encryption keys stay on
    the card, so renewal is just calling this again: old messages remain readable."""
    key = private_key if private_key is not None else new_private_key(kind)
    cert = _certify(issuer, key.public_key(), "encryption")
    import_private_key(card, key, ENCRYPTION_LABEL)
    write_certificate(card, cert, ENCRYPTION_LABEL)
    return cert, key


def check_keystore_target(path: str | os.PathLike[str]) -> pathlib.Path:
    """Where a new keystore may be written: an existing directory, no file there yet (a keystore
    is never overwritten: it may hold the only copy of a key's history)."""
    target = pathlib.Path(path)
    if target.exists() or target.is_symlink():
        raise UsageError(f"keystore {target} already exists: choose another file")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write the keystore {target}: no directory {target.parent}")
    if not os.access(target.parent, os.W_OK):
        raise UsageError(f"cannot write the keystore {target}: directory not writable")
    return target


def add_keystore_encryption_key(
    card: CardSession,
    issuer: CertificateIssuer,
    keystore: str | os.PathLike[str],
    kind: KeyKind = "rsa2048",
    *,
    private_key: PrivateKey | None = None,
) -> tuple[x509.Certificate, PrivateKey, x509.Certificate]:
    """Keystore mode: certify an off-card encryption key, seal it in ``keystore`` for the card's
    access key (generated on the card first if it has none), and write the certificate - not
    the key - on the card, so status and lookups show it. Renewal is calling this again with a
    new file: earlier keystores still open with the same card (key history).
    Returns (encryption certificate, private key for the escrow, access certificate)."""
    target = check_keystore_target(keystore)
    access = card_access_key(card) or add_access_key(card, kind)
    key = private_key if private_key is not None else new_private_key(kind)
    cert = _certify(issuer, key.public_key(), "encryption")
    create_keystore(target, key, cert, access)
    write_certificate(card, cert, ENCRYPTION_LABEL)
    return cert, key, access.certificate


def issue_card(
    module: Pkcs11Module,
    *,
    label: str,
    so_pin: str,
    user_pin: str,
    issuer: CertificateIssuer,
    kind: KeyKind = "rsa2048",
    encryption_key: EncryptionMode = "card",
    keystore: str | os.PathLike[str] | None = None,
) -> IssuedCard:
    """Initialise a blank token as ``label`` and put both key pairs with certificates on it.

    ``encryption_key="keystore"``: the card gets the signature key and a keystore access key;
    the encryption key is sealed in the new file ``keystore`` (0600) that only this card opens.
    """
    if not label or label != label.strip():
        raise UsageError("card label must be non-empty without leading or trailing spaces")
    if encryption_key not in ENCRYPTION_MODES:
        raise UsageError(f"encryption key mode must be card or keystore, not {encryption_key!r}")
    target: pathlib.Path | None = None
    if encryption_key == "keystore":
        if keystore is None:
            raise UsageError("keystore mode needs the keystore file to create")
        target = check_keystore_target(keystore)
    elif keystore is not None:
        raise UsageError("a keystore file is only used with the keystore encryption mode")
    try:
        module.find_token(label=label)
    except TokenNotFoundError:
        pass
    else:
        raise UsageError(f"a card labelled {label!r} already exists in {module.path}")
    slot = module.free_slot()
    blank = module.token_info(slot)
    for what, pin in (("SO PIN", so_pin), ("PIN", user_pin)):
        if not blank.min_pin <= len(pin) <= blank.max_pin:
            raise UsageError(
                f"{what} length out of range (the card accepts {blank.min_pin} to "
                f"{blank.max_pin} characters)"
            )
    module.init_token(slot, so_pin, label)
    token = module.find_token(label=label)  # SoftHSM2 may move an initialised token to a new slot
    with (
        CardSession(module, token, so_pin, rw=True, so=True) as so,
        card_errors("setting the user PIN", pin_range=(token.min_pin, token.max_pin)),
    ):
        so.raw_session().initPin(user_pin)
    access_cert: x509.Certificate | None = None
    with CardSession(module, token, user_pin, rw=True) as card:
        sig_cert = add_signature_key(card, issuer, kind)
        if target is None:
            enc_cert, enc_key = add_encryption_key(card, issuer, kind)
        else:
            enc_cert, enc_key, access_cert = add_keystore_encryption_key(card, issuer, target, kind)
    return IssuedCard(
        module.find_token(label=label), sig_cert, enc_cert, enc_key, target, access_cert
    )
