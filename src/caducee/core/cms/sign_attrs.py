"""Low-level pieces shared by CMS signing and verification.

The outer SignedData layers are written and walked by hand with :mod:`caducee.core.cms.der`;
the signed attributes are written here, also by hand.

It also brings the attribute types asn1crypto's ``cms`` module lacks: importing
``asn1crypto.tsp`` registers ``signingCertificate`` and ``signingCertificateV2``
(1.2.840.113549.1.9.16.2.47, RFC 5035) in ``CMSAttribute``; we always name attribute types by
their dotted OID so a name map built before that import cannot bite.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from asn1crypto import algos, cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from caducee.core.capabilities import Capabilities
from caducee.core.cms.der import der_oid, der_set_of, tlv

# -- OIDs ---------------------------------------------------------------------------------------

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
OID_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
OID_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"

#: Names reported in ``SignerReport.covered`` (the RFC's ASN.1 names).
ATTRIBUTE_NAMES = {
    OID_CONTENT_TYPE: "contentType",
    OID_MESSAGE_DIGEST: "messageDigest",
    OID_SIGNING_TIME: "signingTime",
    OID_SMIME_CAPABILITIES: "smimeCapabilities",
    OID_SIGNING_CERTIFICATE: "signingCertificate",
    OID_SIGNING_CERTIFICATE_V2: "signingCertificateV2",
    "1.2.840.113549.1.9.16.2.11": "encrypKeyPref",
    "1.2.840.113549.1.9.52": "cmsAlgorithmProtection",
    "1.3.6.1.4.1.311.16.4": "microsoftEncryptionKeyPreference",
}

assert tsp.SigningCertificateV2  # the import registers the ESS attribute types

# -- signed attributes --------------------------------------------------------------------------


def _attribute(oid: str, value_der: bytes) -> bytes:
    return tlv(0x30, der_oid(oid), tlv(0x31, value_der))


def _time_der(when: datetime) -> bytes:
    when = when.astimezone(UTC).replace(microsecond=0)
    # RFC 5652 §11.3: UTCTime for 1950-2049, GeneralizedTime otherwise.
    if 1950 <= when.year < 2050:
        return tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode("ascii"))  # as asn1crypto writes
    return bytes(cms.Time({"generalized_time": when}).dump())


@functools.lru_cache(maxsize=64)
def ess_cert_id_v2(cert: x509.Certificate) -> bytes:
    """ESSCertIDv2 (RFC 5035) with SHA-256 (the default, so the algorithm is omitted) and
    issuerSerial. Cached per certificate: building it with asn1crypto costs more than the
    RSA signature of a small message, and a signer signs many messages."""
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    h = hashes.Hash(hashes.SHA256())
    h.update(cert_der)
    issuer = asn1_x509.Name.load(cert.issuer.public_bytes())
    value = tsp.ESSCertIDv2(
        {
            "cert_hash": h.finalize(),
            "issuer_serial": {
                "issuer": [asn1_x509.GeneralName({"directory_name": issuer})],
                "serial_number": cert.serial_number,
            },
        }
    )
    return bytes(value.dump())


def signed_attributes(
    *,
    content_type: str,
    message_digest: bytes,
    signing_time: datetime,
    capabilities: Capabilities | None,
    certificate: x509.Certificate,
) -> bytes:
    """The DER ``SET OF Attribute`` that gets signed (the SignerInfo carries it as ``[0]``)."""
    attrs = [
        _attribute(OID_CONTENT_TYPE, der_oid(content_type)),
        _attribute(OID_MESSAGE_DIGEST, tlv(0x04, message_digest)),
        _attribute(OID_SIGNING_TIME, _time_der(signing_time)),
        _attribute(OID_SIGNING_CERTIFICATE_V2, tlv(0x30, tlv(0x30, ess_cert_id_v2(certificate)))),
    ]
    if capabilities is not None:
        attrs.append(_attribute(OID_SMIME_CAPABILITIES, capabilities.to_der()))
    return der_set_of(attrs)


def digest_algorithm_der(oid: str) -> bytes:
    """AlgorithmIdentifier for a SHA-2 digest, parameters absent (RFC 5754 §2)."""
    return tlv(0x30, der_oid(oid))


def pss_parameters(hash_name: str, salt_length: int) -> algos.RSASSAPSSParams:
    return algos.RSASSAPSSParams(
        {
            "hash_algorithm": {"algorithm": hash_name},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": hash_name}},
            "salt_length": salt_length,
        }
    )
