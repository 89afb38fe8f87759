"""Low-level pieces shared by CMS signing and verification.

Why this module exists: asn1crypto parses lazily but copies each nested level's bytes, and a
round trip through it would copy a 20 MB eContent several times. So the outer SignedData layers
are written and walked here by hand (a small DER writer and a bounded BER reader), and asn1crypto
is only used on the small pieces (attributes, algorithm identifiers, SignerInfos).

It also brings the attribute types asn1crypto's ``cms`` module lacks: importing
``asn1crypto.tsp`` registers ``signingCertificate`` and ``signingCertificateV2``
(1.2.840.113549.1.9.16.2.47, RFC 5035) in ``CMSAttribute``; we always name attribute types by
their dotted OID so a name map built before that import cannot bite.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import NamedTuple

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from caducee.core.capabilities import Capabilities
from caducee.errors import MalformedMessageError

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

# -- DER writer ---------------------------------------------------------------------------------


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, *parts: bytes) -> bytes:
    """One DER element from its (small) content parts."""
    content = b"".join(parts)
    return bytes((tag,)) + der_length(len(content)) + content


def tlv_parts(tag: int, parts: list[bytes]) -> list[bytes]:
    """Like :func:`tlv` but returns the parts with a header in front: large content is not
    copied until the final ``b"".join``."""
    return [bytes((tag,)) + der_length(sum(len(p) for p in parts)), *parts]


@functools.lru_cache(maxsize=128)
def der_oid(dotted: str) -> bytes:
    return bytes(core.ObjectIdentifier(dotted).dump())


def der_set_of(elements: list[bytes]) -> bytes:
    """DER SET OF: elements sorted by their encoding (X.690 §11.6)."""
    return tlv(0x31, *sorted(elements))


# -- bounded BER reader -------------------------------------------------------------------------

MAX_DEPTH = 40


class Tlv(NamedTuple):
    """One BER element: ``tag`` is the first identifier octet (a SEQUENCE is 0x30, a
    constructed ``[0]`` 0xA0), ``number`` the tag number, ``start`` the header offset,
    ``cstart``/``cend`` the contents, ``end`` the offset after the element (after the
    end-of-contents octets of an indefinite length)."""

    tag: int
    number: int
    constructed: bool
    start: int
    cstart: int
    cend: int
    end: int


def read_tlv(buf: bytes, pos: int, limit: int, where: str, depth: int = 0) -> Tlv:
    """Read the element at ``pos`` that must end by ``limit``; BER indefinite lengths allowed."""
    if depth > MAX_DEPTH:
        raise MalformedMessageError("ASN.1 nesting is too deep", where)
    if pos + 2 > limit:
        raise MalformedMessageError("data is truncated", where)
    first = buf[pos]
    constructed = bool(first & 0x20)
    number = first & 0x1F
    p = pos + 1
    if number == 0x1F:  # high tag number form
        number = 0
        for _ in range(4):
            if p >= limit:
                raise MalformedMessageError("data is truncated", where)
            b = buf[p]
            p += 1
            number = (number << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        else:
            raise MalformedMessageError("tag number is too large", where)
    if p >= limit:
        raise MalformedMessageError("data is truncated", where)
    lb = buf[p]
    p += 1
    if lb == 0x80:
        if not constructed:
            raise MalformedMessageError("indefinite length on a primitive element", where)
        cstart = p
        while True:
            if p + 2 > limit:
                raise MalformedMessageError("missing end-of-contents octets", where)
            if buf[p] == 0 and buf[p + 1] == 0:
                return Tlv(first, number, constructed, pos, cstart, p, p + 2)
            p = read_tlv(buf, p, limit, where, depth + 1).end
    if lb & 0x80:
        n = lb & 0x7F
        if n > 8 or p + n > limit:
            raise MalformedMessageError("declared length is larger than the data", where)
        length = int.from_bytes(buf[p : p + n], "big")
        p += n
    else:
        length = lb
    if p + length > limit:
        raise MalformedMessageError("declared length is larger than the data", where)
    return Tlv(first, number, constructed, pos, p, p + length, p + length)


def children(buf: bytes, parent: Tlv, where: str, depth: int = 0) -> list[Tlv]:
    if not parent.constructed:
        raise MalformedMessageError("expected a constructed element", where)
    out: list[Tlv] = []
    p = parent.cstart
    while p < parent.cend:
        child = read_tlv(buf, p, parent.cend, where, depth + 1)
        out.append(child)
        p = child.end
    return out


def expect(element: Tlv, tag: int, where: str, what: str) -> Tlv:
    if element.tag != tag:
        raise MalformedMessageError(f"expected {what}, found tag 0x{element.tag:02x}", where)
    return element


def read_oid(buf: bytes, element: Tlv, where: str) -> str:
    expect(element, 0x06, where, "an OBJECT IDENTIFIER")
    try:
        return _dotted(bytes(buf[element.start : element.end]))
    except (ValueError, TypeError) as exc:
        raise MalformedMessageError(f"bad OBJECT IDENTIFIER ({exc})", where) from None


@functools.lru_cache(maxsize=128)
def _dotted(der: bytes) -> str:
    """The same few OIDs come in every message: decode each once."""
    return str(core.ObjectIdentifier.load(der).dotted)


def octet_segments(buf: bytes, element: Tlv, where: str, depth: int = 0) -> list[tuple[int, int]]:
    """Offsets of the data of an OCTET STRING, primitive or BER-constructed (nested chunks)."""
    if element.number != 4 or element.tag & 0xC0:
        raise MalformedMessageError("expected an OCTET STRING", where)
    if not element.constructed:
        return [(element.cstart, element.cend)]
    out: list[tuple[int, int]] = []
    for child in children(buf, element, where, depth):
        out.extend(octet_segments(buf, child, where, depth + 1))
    return out


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
