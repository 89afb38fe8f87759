"""One exception root, with families that say whose fault it is.

Every error raised on purpose by caducee derives from :class:`CaduceeError`. The CLI prints
``str(error)`` as one line and exits with ``error.exit_code``; nothing here ever carries a PIN,
a key or message content in its text.
"""

from __future__ import annotations


class CaduceeError(Exception):
    """Root of every error caducee raises on purpose."""

    exit_code = 1


# --- usage and configuration -------------------------------------------------------------------


class UsageError(CaduceeError):
    """The caller asked for something inconsistent (bad option combination, unreadable file)."""

    exit_code = 2


class ConfigError(CaduceeError):
    """The configuration is missing or invalid."""

    exit_code = 2


# --- cryptography and message format ----------------------------------------------------------


class CryptoError(CaduceeError):
    """A message could not be built, parsed, decrypted or verified."""

    exit_code = 3


class MalformedMessageError(CryptoError):
    """Input is not well-formed MIME/CMS/ASN.1. ``where`` names the structure that failed."""

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"malformed input at {where}: {message}" if where else message)


class UnsupportedAlgorithmError(CryptoError):
    """An algorithm identifier we do not implement (or refuse, being too weak)."""

    def __init__(self, message: str, oid: str | None = None) -> None:
        self.oid = oid
        super().__init__(message)


class SignatureError(CryptoError):
    """A signature does not verify (content altered, wrong key, broken signer info)."""


class MissingCertificateError(CryptoError):
    """A needed certificate (signer, recipient) is neither in the message nor supplied."""


class DecryptionError(CryptoError):
    """A message could not be decrypted."""


class NoMatchingRecipientError(DecryptionError):
    """None of the message's recipients matches the key we hold."""


class IntegrityError(DecryptionError):
    """Authenticated decryption failed: the ciphertext or its tag was altered."""


# --- trust, keys, directories, transport, policy ---------------------------------------------


class TrustError(CaduceeError):
    """A certificate could not be validated against the trust anchors."""

    exit_code = 4


class KeyStoreError(CaduceeError):
    """A private-key operation failed in the keys layer (wrong password, unusable key)."""

    exit_code = 5


class CardError(KeyStoreError):
    """The smart card (PKCS#11 token) refused or failed an operation."""


class DirectoryError(CaduceeError):
    """A certificate directory could not be reached or answered badly."""

    exit_code = 6


class TransportError(CaduceeError):
    """SMTP/IMAP/HTTP transport failure.

    ``needs_fixing``: trying again on a timer will not help (credentials refused, TLS that
    cannot be trusted or established, nothing configured): someone must change something."""

    exit_code = 7
    needs_fixing: bool = False


class PolicyError(CaduceeError):
    """The operation is refused by policy (weak algorithm, missing recipient certificate...)."""

    exit_code = 8
