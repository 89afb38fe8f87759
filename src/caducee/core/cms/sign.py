"""CMS SignedData (RFC 5652 §5, RFC 8551): one signer, signed attributes, one key operation.

The content is hashed once and copied once (into the final DER when encapsulated); the outer
layers are written by hand around it so a 20 MB message never goes through asn1crypto.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.der import der_oid, der_set_of, tlv, tlv_parts
from caducee.core.cms.sign_attrs import (
    ID_DATA,
    ID_SIGNED_DATA,
    digest_algorithm_der,
    pss_parameters,
    signed_attributes,
)
from caducee.errors import UnsupportedAlgorithmError, UsageError
from caducee.keys.api import SigningKey

__all__ = ["default_scheme", "sign_data", "sign_data_parts"]

_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_RSASSA_PSS = "1.2.840.113549.1.1.10"
_ECDSA_WITH = {
    Digest.SHA256: "1.2.840.10045.4.3.2",
    Digest.SHA384: "1.2.840.10045.4.3.3",
    Digest.SHA512: "1.2.840.10045.4.3.4",
}


@functools.lru_cache(maxsize=64)
def _public_key(cert: x509.Certificate) -> object:
    """The certificate's public key, loaded once per certificate (a signer signs many times)."""
    return cert.public_key()


def default_scheme(certificate: x509.Certificate) -> SignatureScheme:
    """RSA keys sign with PKCS#1 v1.5 (what every S/MIME peer reads), EC keys with ECDSA."""
    key = _public_key(certificate)
    if isinstance(key, rsa.RSAPublicKey):
        return SignatureScheme.RSA_PKCS1V15
    if isinstance(key, ec.EllipticCurvePublicKey):
        return SignatureScheme.ECDSA
    raise UnsupportedAlgorithmError("the signer certificate holds neither an RSA nor an EC key")


def _signature_algorithm(scheme: SignatureScheme, digest: Digest) -> bytes:
    if scheme is SignatureScheme.RSA_PKCS1V15:
        # rsaEncryption with NULL, as OpenSSL and NSS write it (RFC 5754 §3.2 allows it).
        return tlv(0x30, der_oid(_RSA_ENCRYPTION), b"\x05\x00")
    if scheme is SignatureScheme.RSA_PSS:
        params = pss_parameters(digest.label, digest.size)
        return tlv(0x30, der_oid(_RSASSA_PSS), bytes(params.dump()))
    return tlv(0x30, der_oid(_ECDSA_WITH[digest]))


def _check_choice(signer: SigningKey, digest: Digest, scheme: SignatureScheme) -> None:
    if digest not in _ECDSA_WITH:
        raise UnsupportedAlgorithmError(
            f"{digest.label} is accepted for verifying only, not for signing", oid=digest.oid
        )
    key = _public_key(signer.certificate)
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    if is_rsa != (scheme is not SignatureScheme.ECDSA):
        kind = "an RSA" if is_rsa else "an EC"
        raise UnsupportedAlgorithmError(f"{kind} key cannot sign with {scheme.value}")
    if scheme not in signer.signature_schemes():
        raise UnsupportedAlgorithmError(f"this signing key does not offer {scheme.value}")


@functools.lru_cache(maxsize=64)
def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    serial = bytes(core.Integer(cert.serial_number).dump())
    return tlv(0x30, cert.issuer.public_bytes(), serial)


@functools.lru_cache(maxsize=64)
def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def sign_data_parts(
    content: bytes,
    signer: SigningKey,
    *,
    signing_time: datetime,
    digest: Digest = Digest.SHA256,
    scheme: SignatureScheme | None = None,
    detached: bool = True,
    capabilities: Capabilities | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
    content_type: str = ID_DATA,
) -> list[bytes]:
    """Like :func:`sign_data`, but returns the DER in pieces, one of them ``content`` itself
    (not copied), so a caller can base64-encode a large message without joining it first.

    Signed attributes: contentType, messageDigest, signingTime, signingCertificateV2 and, when
    given, SMIMECapabilities. The signer is named by issuerAndSerialNumber; the certificates
    field holds the signer's certificate and ``extra_certificates``.
    """
    if signing_time.tzinfo is None:
        raise UsageError("signing_time must carry a time zone (use UTC)")
    cert = signer.certificate
    scheme = scheme or default_scheme(cert)
    _check_choice(signer, digest, scheme)

    h = hashes.Hash(digest.hash())
    h.update(content)
    attrs = signed_attributes(
        content_type=content_type,
        message_digest=h.finalize(),
        signing_time=signing_time,
        capabilities=capabilities,
        certificate=cert,
    )
    h = hashes.Hash(digest.hash())
    h.update(attrs)
    signature = signer.sign_digest(h.finalize(), digest, scheme)

    digest_alg = digest_algorithm_der(digest.oid)
    signer_info = tlv(
        0x30,
        b"\x02\x01\x01",  # version 1: issuerAndSerialNumber
        _issuer_and_serial(cert),
        digest_alg,
        b"\xa0" + attrs[1:],  # [0] IMPLICIT SET OF Attribute
        _signature_algorithm(scheme, digest),
        tlv(0x04, signature),
    )
    cert_ders = [_cert_der(cert)]
    for extra in extra_certificates:
        der = _cert_der(extra)
        if der not in cert_ders:
            cert_ders.append(der)

    econtent: list[bytes] = [] if detached else tlv_parts(0xA0, tlv_parts(0x04, [content]))
    encap = tlv_parts(0x30, [der_oid(content_type), *econtent])
    version = b"\x02\x01\x01" if content_type == ID_DATA else b"\x02\x01\x03"
    signed_data = tlv_parts(
        0x30,
        [
            version,
            tlv(0x31, digest_alg),
            *encap,
            b"\xa0" + der_set_of(cert_ders)[1:],  # [0] IMPLICIT CertificateSet
            tlv(0x31, signer_info),
        ],
    )
    return tlv_parts(0x30, [der_oid(ID_SIGNED_DATA), *tlv_parts(0xA0, signed_data)])


def sign_data(
    content: bytes,
    signer: SigningKey,
    *,
    signing_time: datetime,
    digest: Digest = Digest.SHA256,
    scheme: SignatureScheme | None = None,
    detached: bool = True,
    capabilities: Capabilities | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
    content_type: str = ID_DATA,
) -> bytes:
    """Sign ``content`` and return the DER ``ContentInfo`` holding the ``SignedData``.

    Signed attributes: contentType, messageDigest, signingTime, signingCertificateV2 and, when
    given, SMIMECapabilities. The signer is named by issuerAndSerialNumber; the certificates
    field holds the signer's certificate and ``extra_certificates``. ``scheme`` None picks
    PKCS#1 v1.5 for RSA and ECDSA for EC keys.
    """
    return b"".join(
        sign_data_parts(
            content,
            signer,
            signing_time=signing_time,
            digest=digest,
            scheme=scheme,
            detached=detached,
            capabilities=capabilities,
            extra_certificates=extra_certificates,
            content_type=content_type,
        )
    )
