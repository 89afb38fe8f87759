"""Algorithms caducee speaks, with their OIDs and names. Pure data: no I/O.

Names follow ``openssl cms`` where it has one (``aes-256-gcm``, ``oaep``) so users can switch.
"""

from __future__ import annotations

import enum

from cryptography.hazmat.primitives import hashes


class Digest(enum.Enum):
    SHA256 = ("sha256", "2.16.840.1.101.3.4.2.1", 32)
    SHA384 = ("sha384", "2.16.840.1.101.3.4.2.2", 48)
    SHA512 = ("sha512", "2.16.840.1.101.3.4.2.3", 64)
    # Accepted when verifying what older peers send; never chosen by us.
    SHA1 = ("sha1", "1.3.14.3.2.26", 20)

    def __init__(self, label: str, oid: str, size: int) -> None:
        self.label = label
        self.oid = oid
        self.size = size

    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.label]()

    @classmethod
    def from_name(cls, name: str) -> Digest:
        for d in cls:
            if d.label == name.lower().replace("-", ""):
                return d
        raise ValueError(f"unknown digest {name!r}")

    @classmethod
    def from_oid(cls, oid: str) -> Digest | None:
        return next((d for d in cls if d.oid == oid), None)


_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class SignatureScheme(enum.Enum):
    """How a digest is turned into a signature. The digest algorithm is chosen separately."""

    RSA_PKCS1V15 = "rsa-pkcs1v15"
    RSA_PSS = "rsa-pss"  # always with MGF1 on the same digest and salt = digest length
    ECDSA = "ecdsa"


class ContentCipher(enum.Enum):
    AES_128_GCM = ("aes-128-gcm", "2.16.840.1.101.3.4.1.6", 16, True)
    AES_256_GCM = ("aes-256-gcm", "2.16.840.1.101.3.4.1.46", 32, True)
    AES_128_CBC = ("aes-128-cbc", "2.16.840.1.101.3.4.1.2", 16, False)
    AES_256_CBC = ("aes-256-cbc", "2.16.840.1.101.3.4.1.42", 32, False)
    # Read from the gateways that write them (openssl -aes192); never negotiated by us (not in
    # CIPHER_PREFERENCE), written only when asked for by name (caducee smime --cipher).
    AES_192_GCM = ("aes-192-gcm", "2.16.840.1.101.3.4.1.26", 24, True)
    AES_192_CBC = ("aes-192-cbc", "2.16.840.1.101.3.4.1.22", 24, False)

    def __init__(self, label: str, oid: str, key_size: int, aead: bool) -> None:
        self.label = label
        self.oid = oid
        self.key_size = key_size
        self.aead = aead

    @classmethod
    def from_name(cls, name: str) -> ContentCipher:
        for c in cls:
            if c.label == name.lower():
                return c
        raise ValueError(f"unknown cipher {name!r}")

    @classmethod
    def from_oid(cls, oid: str) -> ContentCipher | None:
        return next((c for c in cls if c.oid == oid), None)


class KeyTransport(enum.Enum):
    """RSA key transport paddings (RFC 8017 via RFC 4055 / RFC 3560)."""

    RSA_OAEP_SHA256 = "rsa-oaep-sha256"
    RSA_OAEP_SHA1 = "rsa-oaep-sha1"
    RSA_PKCS1V15 = "rsa-pkcs1v15"


#: Strongest first: used to pick the best common choice.
CIPHER_PREFERENCE = (
    ContentCipher.AES_256_GCM,
    ContentCipher.AES_128_GCM,
    ContentCipher.AES_256_CBC,
    ContentCipher.AES_128_CBC,
)
KEY_TRANSPORT_PREFERENCE = (
    KeyTransport.RSA_OAEP_SHA256,
    KeyTransport.RSA_OAEP_SHA1,
    KeyTransport.RSA_PKCS1V15,
)
