"""The keys protocol: the only doorway to private-key operations.

The core never holds a private key. It asks a :class:`SigningKey` to sign a digest and a
:class:`DecryptionKey` to unwrap a content-encryption key (RSA) or derive an ECDH shared secret.
A software key and a PKCS#11 card implement the same two protocols, so the core cannot tell them
apart. One message costs exactly one call: one ``sign_digest`` to sign, one ``decrypt_key`` or
``ecdh`` to decrypt.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from caducee.core.algorithms import Digest, KeyTransport, SignatureScheme


@runtime_checkable
class SigningKey(Protocol):
    """A private key able to sign a precomputed digest."""

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate of the signing key (put in the SignedData, matched by SignerInfo)."""
        ...

    def signature_schemes(self) -> frozenset[SignatureScheme]:
        """Schemes this key can produce (a card may lack PSS, an EC key only has ECDSA)."""
        ...

    def sign_digest(self, digest: bytes, algorithm: Digest, scheme: SignatureScheme) -> bytes:
        """Sign ``digest`` (already hashed with ``algorithm``).

        Returns the value CMS puts in ``SignerInfo.signature``: the RSA signature block, or the
        DER ``ECDSA-Sig-Value`` for ECDSA. RSA-PSS uses MGF1 with ``algorithm`` and a salt of
        the digest length.
        """
        ...


@runtime_checkable
class DecryptionKey(Protocol):
    """A private key able to recover a content-encryption key."""

    @property
    def certificate(self) -> x509.Certificate:
        """The encryption certificate this key belongs to (matched against RecipientInfos)."""
        ...

    def key_transports(self) -> frozenset[KeyTransport]:
        """RSA paddings this key can decrypt with; empty for an EC key."""
        ...

    def decrypt_key(self, encrypted_key: bytes, padding: KeyTransport) -> bytes:
        """RSA: decrypt a wrapped content-encryption key."""
        ...

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """EC: the raw ECDH shared secret (the X coordinate) with the originator's key."""
        ...
