"""Card issuance and management: what the card authority and the holder do to a PKCS#11 token.

No CLI here (that is :mod:`caducee.cli.card`) and no private-key use (that is
:mod:`caducee.keys.pkcs11`): initialise a token, put the two key pairs and their certificates on
it, report its state, change and unblock its PIN.
"""

from caducee.card.issue import (
    CertificateIssuer,
    IssuedCard,
    KeyKind,
    add_encryption_key,
    add_signature_key,
    issue_card,
)
from caducee.card.pin import change_pin, unblock_pin
from caducee.card.status import CardObject, CardStatus, PinState, card_status, list_cards

__all__ = [
    "CardObject",
    "CardStatus",
    "CertificateIssuer",
    "IssuedCard",
    "KeyKind",
    "PinState",
    "add_encryption_key",
    "add_signature_key",
    "card_status",
    "change_pin",
    "issue_card",
    "list_cards",
    "unblock_pin",
]
