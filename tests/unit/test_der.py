"""The shared DER writer and BER reader (caducee.core.cms.der) on hand-made encodings."""

from __future__ import annotations

import pytest

from caducee.core.cms import der
from caducee.errors import MalformedMessageError


class CountingBuffer:
    """bytes that count how often they are read: a stand-in for time, without timing."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def __getitem__(self, key: int | slice) -> int | bytes:
        self.reads += 1
        return self.data[key]


def _nested_ber(depth: int, chunks: int) -> bytes:
    """``depth`` indefinite SEQUENCEs around a constructed OCTET STRING of one-byte chunks."""
    inner = b"\x24\x80" + b"\x04\x01x" * chunks + b"\x00\x00"
    return b"\x30\x80" * depth + inner + b"\x00\x00" * depth


def test_writer() -> None:
    assert der.der_header(0x04, 0x7F) == b"\x04\x7f"
    assert der.der_header(0x30, 0x80) == b"\x30\x81\x80"
    assert der.der_header(0x30, 0x10000) == b"\x30\x83\x01\x00\x00"
    assert der.tlv(0x30, b"\x05\x00", b"\x02\x01\x01") == b"\x30\x05\x05\x00\x02\x01\x01"
    assert b"".join(der.tlv_parts(0x04, [b"ab", b"c"])) == der.tlv(0x04, b"abc")
    assert der.der_set_of([b"\x02\x01\x02", b"\x02\x01\x01"]) == b"\x31\x06\x02\x01\x01\x02\x01\x02"
    assert der.der_oid("1.2.840.113549.1.7.1") == bytes.fromhex("06092a864886f70d010701")


def test_definite_and_high_tag_number() -> None:
    data = der.tlv(0x30, der.der_oid("1.2.3"), b"\x5f\x81\x00\x01z")
    top = der.read_tlv(data, 0, len(data), "t")
    oid, high = der.children(data, top, "t")
    assert der.read_oid(data, oid, "t") == "1.2.3"
    assert (high.tag, high.number, high.constructed) == (0x5F, 128, False)
    assert data[high.body : high.end] == b"z" and high.next == len(data)
    assert not top.indefinite and top.next == top.end == len(data)


@pytest.mark.parametrize("memo", [None, {}])
def test_indefinite_lengths_and_chunks(memo: der.Memo | None) -> None:
    data = _nested_ber(3, 5) + b"tail"
    top = der.read_tlv(data, 0, len(data), "t", memo=memo)
    assert top.indefinite and top.next == len(data) - 4 and top.end == top.next - 2
    element = top
    for _ in range(3):
        (element,) = der.children(data, element, "t", memo=memo)
    segments = der.octet_segments(data, element, "t", memo=memo)
    assert [data[s:e] for s, e in segments] == [b"x"] * 5


def test_memo_keeps_nested_indefinite_lengths_linear() -> None:
    def reads(memo: der.Memo | None) -> int:
        buf = CountingBuffer(_nested_ber(20, 50))
        element = der.read_tlv(buf, 0, len(buf.data), "t", memo=memo)  # type: ignore[arg-type]
        for _ in range(20):
            (element,) = der.children(buf, element, "t", memo=memo)  # type: ignore[arg-type]
        der.octet_segments(buf, element, "t", memo=memo)  # type: ignore[arg-type]
        return buf.reads

    single_walk = 2 * (20 + 50) * 3  # about three reads per element, header and end-of-contents
    assert reads({}) < single_walk
    assert reads(None) > 5 * single_walk  # without it, each level walks everything again


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "data is truncated"),
        (b"\x30", "data is truncated"),
        (b"\x30\x05\x02\x01", "declared length is larger than the data: 5 exceeds the 2 bytes"),
        (b"\x30\x82\x01", "declared length is larger than the data (length octets cut off)"),
        (b"\x30\x89" + b"\x01" * 9, "declared length has 9 length octets"),
        (b"\x04\x80\x00\x00", "indefinite length on a primitive element"),
        (b"\x30\x80\x02\x01\x01", "end-of-contents missing"),
        (b"\x30\x80" * 50 + b"\x00\x00" * 50, "ASN.1 nesting is too deep"),
        (b"\x1f\x81\x82\x83\x84\x05\x00", "tag number is too large"),
        (b"\x1f\x81", "data is truncated"),
    ],
)
def test_malformed(data: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessageError, match=r"^malformed input at here: ") as info:
        der.read_tlv(data, 0, len(data), "here", memo={})
    assert fragment in str(info.value)


def test_expectations() -> None:
    data = b"\x31\x03\x02\x01\x01"
    top = der.read_tlv(data, 0, len(data), "t")
    with pytest.raises(MalformedMessageError, match="at X: expected a SEQUENCE, found tag 0x31"):
        der.expect(top, 0x30, "X")
    with pytest.raises(MalformedMessageError, match=r"expected \[0\], found tag 0x31"):
        der.expect(top, 0xA0, "X")
    with pytest.raises(MalformedMessageError, match="element missing"):
        der.expect(None, 0x30, "X")
    with pytest.raises(MalformedMessageError, match="expected an OBJECT IDENTIFIER"):
        der.read_oid(data, top, "X")
    (integer,) = der.children(data, top, "t")
    with pytest.raises(MalformedMessageError, match="expected a constructed element"):
        der.children(data, integer, "t")
    with pytest.raises(MalformedMessageError, match="holds a non-OCTET STRING"):
        der.octet_segments(data, top, "t")
