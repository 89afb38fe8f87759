"""ASN.1 pieces for enveloping that asn1crypto lacks, and a zero-copy DER/BER walker.

asn1crypto knows the AES-GCM OIDs but has no type for their parameters (RFC 5084), nor for the
ECC-CMS-SharedInfo that feeds the ECDH key derivation (RFC 5753). The walker lets the envelope
code locate a multi-megabyte encryptedContent inside a message without materialising copies of
it (asn1crypto copies every OCTET STRING it dumps or parses); only the small structures around
it are handed to asn1crypto.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import NamedTuple

from asn1crypto import algos, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from caducee.errors import MalformedMessageError

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


# --- DER writing ------------------------------------------------------------------------------


def der_header(tag: int, length: int) -> bytes:
    """Identifier and definite length octets for a single-byte ``tag``."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


def der_tlv(tag: int, body: bytes) -> bytes:
    return der_header(tag, len(body)) + body


# --- DER/BER reading --------------------------------------------------------------------------

MAX_DEPTH = 32

Buffer = bytes | bytearray | memoryview


class Tlv(NamedTuple):
    """One element: ``tag`` is the identifier octet; contents are ``buf[body:end]``."""

    tag: int
    start: int
    body: int
    end: int  # end of contents (the end-of-contents octets for indefinite lengths)
    next: int  # offset just after the element
    indefinite: bool

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


Memo = dict[int, Tlv]


def read_tlv(
    buf: Buffer, pos: int, limit: int, where: str, depth: int = 0, memo: Memo | None = None
) -> Tlv:
    """Read the element starting at ``pos``; it must end by ``limit``.

    An indefinite length is resolved by walking the children to the end-of-contents; pass the
    same ``memo`` for one buffer so nested indefinite elements are walked once, not per level.
    """
    if memo is None:
        return _read_tlv(buf, pos, limit, where, depth, None)
    known = memo.get(pos)
    if known is not None and known.next <= limit:
        return known
    tlv = memo[pos] = _read_tlv(buf, pos, limit, where, depth, memo)
    return tlv


def _read_tlv(buf: Buffer, pos: int, limit: int, where: str, depth: int, memo: Memo | None) -> Tlv:
    if depth > MAX_DEPTH:
        raise MalformedMessageError("nesting too deep", where)
    if pos + 2 > limit:
        raise MalformedMessageError("truncated (element header missing)", where)
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise MalformedMessageError("unexpected high tag number", where)
    first = buf[pos + 1]
    body = pos + 2
    if first == 0x80:
        if not tag & 0x20:
            raise MalformedMessageError("indefinite length on a primitive element", where)
        cursor = body
        while True:
            if cursor + 2 > limit:
                raise MalformedMessageError("truncated (end-of-contents missing)", where)
            if buf[cursor] == 0 and buf[cursor + 1] == 0:
                return Tlv(tag, pos, body, cursor, cursor + 2, True)
            cursor = read_tlv(buf, cursor, limit, where, depth + 1, memo).next
    if first & 0x80:
        size = first & 0x7F
        if size > 8 or body + size > limit:
            raise MalformedMessageError("bad length octets", where)
        length = int.from_bytes(buf[body : body + size], "big")
        body += size
    else:
        length = first
    end = body + length
    if end > limit:
        raise MalformedMessageError(
            f"declared length {length} exceeds the {limit - body} bytes left (truncated?)", where
        )
    return Tlv(tag, pos, body, end, end, False)


def children(
    buf: Buffer, parent: Tlv, where: str, depth: int = 0, memo: Memo | None = None
) -> Iterator[Tlv]:
    """The elements inside a constructed ``parent``."""
    if not parent.constructed:
        raise MalformedMessageError("expected a constructed element", where)
    pos = parent.body
    while pos < parent.end:
        child = read_tlv(buf, pos, parent.end, where, depth + 1, memo)
        yield child
        pos = child.next


def expect(tlv: Tlv | None, tag: int, where: str) -> Tlv:
    if tlv is None:
        raise MalformedMessageError("element missing (truncated?)", where)
    if tlv.tag != tag:
        raise MalformedMessageError(f"expected tag 0x{tag:02x}, found 0x{tlv.tag:02x}", where)
    return tlv


def octet_chunks(
    buf: memoryview, tlv: Tlv, where: str, depth: int = 0, memo: Memo | None = None
) -> list[memoryview]:
    """Contents of a (possibly BER-constructed) OCTET STRING as views, without copying."""
    if not tlv.constructed:
        return [buf[tlv.body : tlv.end]]
    chunks: list[memoryview] = []
    for child in children(buf, tlv, where, depth, memo):
        if child.tag not in (0x04, 0x24):
            raise MalformedMessageError("constructed OCTET STRING holds a non-OCTET STRING", where)
        chunks.extend(octet_chunks(buf, child, where, depth + 1, memo))
    return chunks


def decode_oid(buf: Buffer, tlv: Tlv, where: str) -> str:
    """Dotted form of an OBJECT IDENTIFIER element."""
    expect(tlv, 0x06, where)
    try:
        return _dotted(bytes(buf[tlv.start : tlv.next]))
    except (ValueError, TypeError) as exc:
        raise MalformedMessageError(f"bad object identifier ({exc})", where) from None


@functools.lru_cache(maxsize=128)
def _dotted(der: bytes) -> str:
    """The same few OIDs come in every message: decode each once."""
    return str(core.ObjectIdentifier.load(der).dotted)
