"""Choosing how to encrypt for a set of recipients, from what each says it can decrypt.

One content cipher serves every recipient, so the strongest cipher they all announce wins; if a
single one cannot do AES-GCM the whole message drops to AES-CBC (never below AES-128: nothing
weaker exists in :class:`ContentCipher`). Each RSA recipient gets the best key transport it
announces; EC recipients always get ECDH. A recipient with unknown capabilities is assumed to
follow RFC 8551 (AES-256-GCM and RSAES-OAEP-SHA256); one that announced ciphers but no key
transport is an older client and gets RSA PKCS#1 v1.5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.core.algorithms import (
    CIPHER_PREFERENCE,
    KEY_TRANSPORT_PREFERENCE,
    ContentCipher,
    Digest,
    KeyTransport,
)
from caducee.core.capabilities import Capabilities
from caducee.core.cms.envelope import Recipient
from caducee.core.cms.envelope_asn1 import CURVES
from caducee.errors import PolicyError

__all__ = ["EncryptionChoice", "choose_encryption"]

_DEFAULTS = Capabilities()


@dataclasses.dataclass(frozen=True)
class EncryptionChoice:
    cipher: ContentCipher
    recipients: tuple[Recipient, ...]


def _who(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def _transport(cert: x509.Certificate, caps: Capabilities) -> KeyTransport:
    announced = set(caps.key_transports)
    if not announced:
        if caps.ciphers:
            # An announcement that lists ciphers only comes from a client that predates key
            # transport announcements (openssl smime, gpgsm 2.2, PKCS#7 gateways): it decrypts
            # PKCS#1 v1.5, the one RSA key transport RFC 8551 makes a MUST, and maybe not OAEP.
            return KeyTransport.RSA_PKCS1V15
        return KeyTransport.RSA_OAEP_SHA256  # nothing known: RFC 8551's preference
    for kt in KEY_TRANSPORT_PREFERENCE:
        if kt in announced:
            return kt
    raise PolicyError(f"no usable RSA key transport for {_who(cert)}")  # pragma: no cover


def choose_encryption(
    recipients: Sequence[tuple[x509.Certificate, Capabilities | None]],
    *,
    preferred: ContentCipher | None = None,
) -> EncryptionChoice:
    """The strongest cipher every recipient can decrypt, and a :class:`Recipient` for each.

    ``preferred`` (configuration, or a user's explicit choice) is used when every recipient
    supports it; otherwise the strongest common cipher is chosen.
    """
    if not recipients:
        raise PolicyError("no recipients to encrypt for")
    common = list(CIPHER_PREFERENCE)
    chosen: list[Recipient] = []
    for cert, caps in recipients:
        # What they told us in a signed message, else what their CA says (RFC 4262), else defaults.
        caps = caps or Capabilities.from_certificate(cert) or _DEFAULTS
        public_key = cert.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            chosen.append(Recipient(cert, _transport(cert, caps)))
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in CURVES:
                raise PolicyError(
                    f"cannot encrypt for {_who(cert)}: EC curve {public_key.curve.name}"
                    " is not supported (P-256, P-384, P-521 are)"
                )
            chosen.append(Recipient(cert))
        else:
            raise PolicyError(
                f"cannot encrypt for {_who(cert)}: only RSA and EC certificates are supported"
            )
        if caps.ciphers:
            announced = set(caps.ciphers)
        else:  # nothing announced at all means unknown; only non-AES ciphers means no AES
            announced = set() if caps.unknown else set(CIPHER_PREFERENCE)
        remaining = [c for c in common if c in announced]
        if not remaining:
            raise PolicyError(
                f"no cipher of AES-128 strength or better is common to all recipients"
                f" (stuck at {_who(cert)}, who announces"
                f" {', '.join(c.label for c in caps.ciphers) or 'nothing usable'})"
            )
        common = remaining
    cipher = preferred if preferred in common else common[0]
    assert cipher is not None
    return EncryptionChoice(cipher, tuple(chosen))


def signing_digest(certificate: x509.Certificate) -> Digest:
    """The digest to sign with: matched to the key's strength (gpgsm refuses SHA-256 on P-384)."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {384: Digest.SHA384, 521: Digest.SHA512}.get(key.curve.key_size, Digest.SHA256)
    return Digest.SHA256
