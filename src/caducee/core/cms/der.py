"""The one DER writer and bounded BER reader of the hand-walked CMS layers.

Why by hand: asn1crypto copies each nested level's bytes, so a multi-megabyte eContent or
encryptedContent would be copied several times. The outer layers of SignedData and
(Auth)EnvelopedData are therefore written and walked here by offsets into the caller's buffer,
and only the small pieces (attributes, algorithm identifiers, RecipientInfos) go to asn1crypto.

The reader takes what peers send: BER indefinite lengths, constructed OCTET STRINGs in nested
chunks (``openssl cms -stream``), high tag numbers. It is bounded: every length is checked
against its enclosing element, nesting has a depth limit, and a ``memo`` shared for one buffer
resolves each indefinite length once, so nested ones stay linear. Every fault is a
:class:`MalformedMessageError` naming ``where``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from asn1crypto import core

from caducee.errors import MalformedMessageError

# -- writing ------------------------------------------------------------------------------------


def der_header(tag: int, length: int) -> bytes:
    """Identifier and definite length octets (short form below 128) for a single-octet ``tag``."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


def tlv(tag: int, *parts: bytes) -> bytes:
    """One DER element from its (small) content parts."""
    content = b"".join(parts)
    return der_header(tag, len(content)) + content


def tlv_parts(tag: int, parts: list[bytes]) -> list[bytes]:
    """Like :func:`tlv` but returns the parts with a header in front: large content is not
    copied until the final ``b"".join``."""
    return [der_header(tag, sum(len(p) for p in parts)), *parts]


@functools.lru_cache(maxsize=128)
def der_oid(dotted: str) -> bytes:
    """DER OBJECT IDENTIFIER; the same few are written in every message."""
    return bytes(core.ObjectIdentifier(dotted).dump())


def der_set_of(elements: list[bytes]) -> bytes:
    """DER SET OF: elements sorted by their encoding (X.690 §11.6)."""
    return tlv(0x31, *sorted(elements))


# -- reading ------------------------------------------------------------------------------------

#: Deepest nesting accepted; CMS needs a dozen levels, the limit bounds the recursion.
MAX_DEPTH = 40

Buffer = bytes | bytearray | memoryview

_HEADER_MISSING = "data is truncated (element header missing)"


class Tlv(NamedTuple):
    """One BER element at ``buf[start:next]``; its contents are ``buf[body:end]``."""

    tag: int  # the first identifier octet: a SEQUENCE is 0x30, a constructed [0] 0xA0
    number: int  # the tag number, high-tag-number form decoded
    start: int
    body: int
    end: int  # end of contents (where the end-of-contents octets are, for indefinite lengths)
    next: int  # offset just after the element

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    @property
    def indefinite(self) -> bool:
        return self.next != self.end


#: Elements already read in one buffer, by offset (indefinite lengths are costly to resolve).
Memo = dict[int, Tlv]


def read_tlv(
    buf: Buffer, pos: int, limit: int, where: str, depth: int = 0, memo: Memo | None = None
) -> Tlv:
    """Read the element starting at ``pos``; it must end by ``limit``.

    An indefinite length is resolved by walking the children to the end-of-contents; pass the
    same ``memo`` for one buffer so nested indefinite elements are walked once, not per level.
    """
    if memo is not None:
        known = memo.get(pos)
        if known is not None and known.next <= limit:
            return known
    if depth > MAX_DEPTH:
        raise MalformedMessageError("ASN.1 nesting is too deep", where)
    if pos + 2 > limit:
        raise MalformedMessageError(_HEADER_MISSING, where)
    tag = buf[pos]
    number = tag & 0x1F
    p = pos + 1
    if number == 0x1F:
        number, p = _high_tag_number(buf, p, limit, where)
    first = buf[p]
    p += 1
    if first < 0x80:
        end = p + first
    elif first == 0x80:
        return _indefinite(buf, tag, number, pos, p, limit, where, depth, memo)
    else:
        size = first & 0x7F
        if size > 8:
            raise MalformedMessageError(
                f"declared length has {size} length octets (at most 8 accepted)", where
            )
        if p + size > limit:
            raise MalformedMessageError(
                "declared length is larger than the data (length octets cut off)", where
            )
        end = p + size + int.from_bytes(buf[p : p + size], "big")
        p += size
    if end > limit:
        raise MalformedMessageError(
            f"declared length is larger than the data: {end - p} exceeds the {limit - p}"
            " bytes left (truncated?)",
            where,
        )
    tlv = Tlv(tag, number, pos, p, end, end)
    if memo is not None:
        memo[pos] = tlv
    return tlv


def _high_tag_number(buf: Buffer, p: int, limit: int, where: str) -> tuple[int, int]:
    """The tag number in base-128 octets after the first identifier octet (X.690 §8.1.2.4),
    and the offset of the length octets."""
    number = 0
    for _ in range(4):
        if p >= limit:
            raise MalformedMessageError(_HEADER_MISSING, where)
        octet = buf[p]
        p += 1
        number = (number << 7) | (octet & 0x7F)
        if not octet & 0x80:
            if p >= limit:
                raise MalformedMessageError(_HEADER_MISSING, where)
            return number, p
    raise MalformedMessageError("tag number is too large", where)


def _indefinite(
    buf: Buffer,
    tag: int,
    number: int,
    start: int,
    body: int,
    limit: int,
    where: str,
    depth: int,
    memo: Memo | None,
) -> Tlv:
    """The element whose contents start at ``body``, their end found by walking the children
    to the end-of-contents octets."""
    if not tag & 0x20:
        raise MalformedMessageError("indefinite length on a primitive element", where)
    cursor = body
    while True:
        if cursor + 2 > limit:
            raise MalformedMessageError("data is truncated (end-of-contents missing)", where)
        if buf[cursor] == 0 and buf[cursor + 1] == 0:
            break
        cursor = read_tlv(buf, cursor, limit, where, depth + 1, memo).next
    tlv = Tlv(tag, number, start, body, cursor, cursor + 2)
    if memo is not None:
        memo[start] = tlv
    return tlv


def children(
    buf: Buffer, parent: Tlv, where: str, depth: int = 0, memo: Memo | None = None
) -> list[Tlv]:
    """The elements inside a constructed ``parent``."""
    if not parent.tag & 0x20:
        raise MalformedMessageError("expected a constructed element", where)
    out: list[Tlv] = []
    pos, end = parent.body, parent.end
    while pos < end:
        child = read_tlv(buf, pos, end, where, depth + 1, memo)
        out.append(child)
        pos = child.next
    return out


_TAG_NAMES = {
    0x02: "an INTEGER",
    0x04: "an OCTET STRING",
    0x06: "an OBJECT IDENTIFIER",
    0x30: "a SEQUENCE",
    0x31: "a SET",
}


def expect(element: Tlv | None, tag: int, where: str) -> Tlv:
    """``element`` if it is there with identifier octet ``tag``."""
    if element is None:
        raise MalformedMessageError("element missing (truncated?)", where)
    if element.tag != tag:
        raise MalformedMessageError(
            f"expected {_tag_name(tag)}, found tag 0x{element.tag:02x}", where
        )
    return element


def _tag_name(tag: int) -> str:
    if tag & 0xC0 == 0x80:  # context-specific
        return f"[{tag & 0x1F}]"
    return _TAG_NAMES.get(tag, f"tag 0x{tag:02x}")


def read_oid(buf: Buffer, element: Tlv | None, where: str) -> str:
    """Dotted form of an OBJECT IDENTIFIER element."""
    element = expect(element, 0x06, where)
    try:
        return _dotted(bytes(buf[element.start : element.next]))
    except (ValueError, TypeError) as exc:
        raise MalformedMessageError(f"bad OBJECT IDENTIFIER ({exc})", where) from None


@functools.lru_cache(maxsize=128)
def _dotted(der: bytes) -> str:
    """The same few OIDs come in every message: decode each once."""
    return str(core.ObjectIdentifier.load(der).dotted)


def octet_segments(
    buf: Buffer, element: Tlv, where: str, depth: int = 0, memo: Memo | None = None
) -> list[tuple[int, int]]:
    """Offsets of the data of an OCTET STRING (or one implicitly tagged), primitive or
    BER-constructed in nested chunks: the data is never copied here."""
    if not element.tag & 0x20:
        return [(element.body, element.end)]
    out: list[tuple[int, int]] = []
    for child in children(buf, element, where, depth, memo):
        if child.tag == 0x04:
            out.append((child.body, child.end))
        elif child.tag == 0x24:  # chunks may themselves be in chunks
            out.extend(octet_segments(buf, child, where, depth + 1, memo))
        else:
            raise MalformedMessageError("constructed OCTET STRING holds a non-OCTET STRING", where)
    return out
