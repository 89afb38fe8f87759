"""Private-key operations: the protocol and its implementations (software, PKCS#11)."""

from caducee.keys.api import DecryptionKey, SigningKey

__all__ = ["DecryptionKey", "SigningKey"]
