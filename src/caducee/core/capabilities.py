"""SMIMECapabilities (RFC 8551 §2.5.2): what a correspondent says it can decrypt.

A signer announces its capabilities in a signed attribute; we store those of each correspondent and
use them (or configuration) to choose algorithms when writing to them.
"""

from __future__ import annotations

import dataclasses
import functools

from asn1crypto import algos, cms, core
from cryptography import x509

from caducee.core.algorithms import (
    CIPHER_PREFERENCE,
    KEY_TRANSPORT_PREFERENCE,
    ContentCipher,
    KeyTransport,
)
from caducee.errors import MalformedMessageError

_OAEP_OID = "1.2.840.113549.1.1.7"
#: smimeCapabilities: a signed attribute (RFC 8551) and a certificate extension (RFC 4262).
SMIME_CAPABILITIES_OID = "1.2.840.113549.1.9.15"
_RSA_OID = "1.2.840.113549.1.1.1"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """Ciphers and RSA key transports a party can decrypt, strongest first.

    ``unknown`` keeps announced capability OIDs we do not use, for the record.
    """

    ciphers: tuple[ContentCipher, ...] = CIPHER_PREFERENCE
    key_transports: tuple[KeyTransport, ...] = KEY_TRANSPORT_PREFERENCE
    unknown: tuple[str, ...] = ()

    def to_asn1(self) -> cms.SMIMECapabilites:
        entries: list[dict[str, object]] = [{"capability_id": c.oid} for c in self.ciphers]
        for kt in self.key_transports:
            if kt is KeyTransport.RSA_PKCS1V15:
                entries.append({"capability_id": _RSA_OID})
            else:
                entries.append({"capability_id": _OAEP_OID, "parameters": _oaep_params(kt)})
        return cms.SMIMECapabilites(entries)

    @classmethod
    def from_asn1(cls, value: cms.SMIMECapabilites) -> Capabilities:
        ciphers: list[ContentCipher] = []
        transports: list[KeyTransport] = []
        unknown: list[str] = []
        try:
            for entry in value:
                oid = entry["capability_id"].dotted
                cipher = ContentCipher.from_oid(oid)
                if cipher is not None:
                    ciphers.append(cipher)
                elif oid == _RSA_OID:
                    transports.append(KeyTransport.RSA_PKCS1V15)
                elif oid == _OAEP_OID:
                    transports.append(_parse_oaep(entry["parameters"]))
                else:
                    unknown.append(oid)
        except (ValueError, TypeError, KeyError) as exc:
            raise MalformedMessageError(str(exc), "SMIMECapabilities") from None
        return cls(tuple(ciphers), tuple(dict.fromkeys(transports)), tuple(unknown))

    @classmethod
    def from_der(cls, data: bytes) -> Capabilities:
        """Parsed once per distinct encoding: a correspondent sends the same in every message."""
        return _from_der(bytes(data))

    def to_der(self) -> bytes:
        """Encoded once per distinct value (asn1crypto takes about a millisecond)."""
        return _to_der(self)

    def to_extension(self) -> x509.UnrecognizedExtension:
        """The RFC 4262 certificate extension: a CA announcing what the key's holder decrypts."""
        return x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SMIME_CAPABILITIES_OID), self.to_der()
        )

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> Capabilities | None:
        """What the certificate's SMIMECapabilities extension (RFC 4262) announces, if any."""
        try:
            ext = cert.extensions.get_extension_for_oid(
                x509.ObjectIdentifier(SMIME_CAPABILITIES_OID)
            )
        except (x509.ExtensionNotFound, ValueError):
            return None
        value = ext.value
        if not isinstance(value, x509.UnrecognizedExtension):
            return None
        try:
            return cls.from_der(value.value)
        except MalformedMessageError:
            return None  # a damaged announcement is ignored, not fatal


@functools.lru_cache(maxsize=64)
def _from_der(data: bytes) -> Capabilities:
    try:
        return Capabilities.from_asn1(cms.SMIMECapabilites.load(data))
    except ValueError as exc:
        raise MalformedMessageError(str(exc), "SMIMECapabilities") from None


@functools.lru_cache(maxsize=64)
def _to_der(capabilities: Capabilities) -> bytes:
    return bytes(capabilities.to_asn1().dump())


#: What gpgsm 2.2 can decrypt: AES-CBC with RSA PKCS#1 v1.5 only.
LEGACY_GPGSM = Capabilities(
    ciphers=(ContentCipher.AES_256_CBC, ContentCipher.AES_128_CBC),
    key_transports=(KeyTransport.RSA_PKCS1V15,),
)


def _oaep_params(kt: KeyTransport) -> core.Any:
    if kt is KeyTransport.RSA_OAEP_SHA1:
        return core.Any.load(b"\x30\x00")  # all defaults: SHA-1, MGF1-SHA-1
    params = algos.RSAESOAEPParams(
        {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {
                "algorithm": "mgf1",
                "parameters": {"algorithm": "sha256"},
            },
        }
    )
    return core.Any.load(params.dump())


def _parse_oaep(params: core.Asn1Value) -> KeyTransport:
    if isinstance(params, core.Void) or params.contents is None:
        return KeyTransport.RSA_OAEP_SHA1
    parsed = algos.RSAESOAEPParams.load(params.dump())
    hash_name = parsed["hash_algorithm"]["algorithm"].native
    if hash_name == "sha1":
        return KeyTransport.RSA_OAEP_SHA1
    if hash_name == "sha256":
        return KeyTransport.RSA_OAEP_SHA256
    raise MalformedMessageError(f"OAEP with {hash_name} is not supported", "SMIMECapabilities")
