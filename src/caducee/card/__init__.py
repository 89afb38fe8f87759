"""Card issuance and management: what the card authority and the holder do to a PKCS#11 token.

No CLI here (that is :mod:`caducee.cli.card`) and no private-key use (that is
:mod:`caducee.keys.pkcs11`): initialise a token, put the two key pairs and their certificates on
it (or, in keystore mode, the signature key and a keystore access key on it and the encryption
key in a local keystore file), report its state, change and unblock its PIN.
"""

from caducee.card.access import add_access_key, card_access_key
from caducee.card.issue import (
    ENCRYPTION_MODES,
    CertificateIssuer,
    EncryptionMode,
    IssuedCard,
    KeyKind,
    add_encryption_key,
    add_keystore_encryption_key,
    add_signature_key,
    issue_card,
)
from caducee.card.pin import change_pin, unblock_pin
from caducee.card.status import (
    CardObject,
    CardStatus,
    KeystoreState,
    PinState,
    card_status,
    keystore_state,
    list_cards,
)

__all__ = [
    "ENCRYPTION_MODES",
    "CardObject",
    "CardStatus",
    "CertificateIssuer",
    "EncryptionMode",
    "IssuedCard",
    "KeyKind",
    "KeystoreState",
    "PinState",
    "add_access_key",
    "add_encryption_key",
    "add_keystore_encryption_key",
    "add_signature_key",
    "card_access_key",
    "card_status",
    "change_pin",
    "issue_card",
    "keystore_state",
    "list_cards",
    "unblock_pin",
]
