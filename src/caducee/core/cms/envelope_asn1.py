"""ASN.1 pieces for enveloping that asn1crypto lacks, and the enveloping OIDs and curves.

asn1crypto knows the AES-GCM OIDs but has no type for their parameters (RFC 5084), nor for the
ECC-CMS-SharedInfo that feeds the ECDH key derivation (RFC 5753). The outer layers are written
and walked with :mod:`caducee.core.cms.der`, without copying the encrypted content.
"""

from __future__ import annotations

from typing import NamedTuple

from asn1crypto import algos, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

# --- OIDs -------------------------------------------------------------------------------------

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSAES_OAEP = "1.2.840.113549.1.1.7"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"

#: Key-agreement schemes (RFC 5753 §7.1.4, SEC 1): OID -> (KDF hash, cofactor DH?).
#: Cofactor DH equals standard DH on the NIST prime curves (cofactor 1), so both are accepted.
ECDH_SCHEMES: dict[str, tuple[str, bool]] = {
    "1.3.133.16.840.63.0.2": ("sha1", False),  # dhSinglePass-stdDH-sha1kdf-scheme (openssl)
    "1.3.132.1.11.0": ("sha224", False),
    "1.3.132.1.11.1": ("sha256", False),
    "1.3.132.1.11.2": ("sha384", False),
    "1.3.132.1.11.3": ("sha512", False),
    "1.3.133.16.840.63.0.3": ("sha1", True),  # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.14.0": ("sha224", True),
    "1.3.132.1.14.1": ("sha256", True),
    "1.3.132.1.14.2": ("sha384", True),
    "1.3.132.1.14.3": ("sha512", True),
}
ECDH_STD_SCHEME_BY_HASH = {h: oid for oid, (h, cof) in ECDH_SCHEMES.items() if not cof}

KDF_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

#: AES key wrap (RFC 3394) OIDs -> (name, KEK size in bytes).
AES_WRAPS: dict[str, tuple[str, int]] = {
    "2.16.840.1.101.3.4.1.5": ("aes128-wrap", 16),
    "2.16.840.1.101.3.4.1.25": ("aes192-wrap", 24),
    "2.16.840.1.101.3.4.1.45": ("aes256-wrap", 32),
}
OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"


class CurveProfile(NamedTuple):
    """What we use to encrypt for a curve: RFC 5753 pairs the KDF hash with the curve size."""

    curve: ec.EllipticCurve
    order: int
    kdf_hash: str


#: Group orders are public constants (SEC 2); cryptography does not expose them.
CURVES: dict[str, CurveProfile] = {
    "secp256r1": CurveProfile(
        ec.SECP256R1(),
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        "sha256",
    ),
    "secp384r1": CurveProfile(
        ec.SECP384R1(),
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
            "581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
        "sha384",
    ),
    "secp521r1": CurveProfile(
        ec.SECP521R1(),
        int(
            "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA"
            "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
        "sha512",
    ),
}


# --- structures -------------------------------------------------------------------------------


class GCMParameters(core.Sequence):  # type: ignore[misc]
    """RFC 5084 §3.2: ``GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen }``."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5753 §7.2: the SharedInfo input of the X9.63 KDF."""

    _fields = [  # noqa: RUF012 - asn1crypto's declaration style
        ("key_info", algos.AlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def shared_info(wrap_alg_der: bytes, ukm: bytes | None, kek_bits: int) -> bytes:
    """DER ECC-CMS-SharedInfo; ``wrap_alg_der`` is the key-wrap AlgorithmIdentifier as sent."""
    info = EccCmsSharedInfo(
        {
            "key_info": algos.AlgorithmIdentifier.load(wrap_alg_der),
            "supp_pub_info": kek_bits.to_bytes(4, "big"),
        }
    )
    if ukm is not None:
        info["entity_u_info"] = ukm
    return bytes(info.dump())
