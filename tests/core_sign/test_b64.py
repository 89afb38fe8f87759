"""MIME base64: folded output identical to the standard library's, lenient input, clear errors."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caducee.core.mime import b64
from caducee.errors import MalformedMessageError


def _reference(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def test_encode_lines_matches_the_standard_library() -> None:
    for size in (0, 1, 56, 57, 58, 57 * 2048, 57 * 2048 + 1, 300_001):
        data = bytes(i % 251 for i in range(size))
        assert b64.encode_lines(data) == _reference(data)
        assert b64.encoded_size(size) == len(_reference(data))


def test_encoder_over_parts_equals_base64_of_the_whole() -> None:
    sizes = [0, 3, 56, 57 * 2048 - 1, 2, 57 * 2048 * 2 + 5, 1, 0, 130]
    parts = [bytes((n + i) % 256 for i in range(n)) for n in sizes]
    out: list[bytes] = []
    encoder = b64.LineEncoder(out.append)
    for part in parts:
        encoder.write(memoryview(part))
    encoder.close()
    assert b"".join(out) == _reference(b"".join(parts))
    empty: list[bytes] = []
    encoder = b64.LineEncoder(empty.append)
    encoder.write(b"")
    encoder.close()
    assert empty == []


@given(st.lists(st.binary(max_size=400), max_size=8))
def test_encoder_any_split(parts: list[bytes]) -> None:
    out: list[bytes] = []
    encoder = b64.LineEncoder(out.append)
    for part in parts:
        encoder.write(part)
    encoder.close()
    whole = b"".join(parts)
    assert b"".join(out) == _reference(whole)
    assert b64.decode(b"".join(out), "test") == whole


@pytest.mark.parametrize(
    "encoded",
    [
        b"QUJD\r\nREVG\r\n",  # CRLF folding
        b"QUJD\nREVG\n",  # LF folding (saved by a local client)
        b"QUJDREVG",  # unfolded
        b"QU JD\tRE\r\n VG",  # whitespace anywhere
    ],
)
def test_decode_accepts_any_folding(encoded: bytes) -> None:
    assert b64.decode(encoded, "test") == b"ABCDEF"
    assert b64.decode(memoryview(b"xx" + encoded)[2:], "test") == b"ABCDEF"


@pytest.mark.parametrize("encoded", [b"Q", b"QUJDR", b"QQ"])
def test_decode_bad_padding_names_the_place(encoded: bytes) -> None:
    with pytest.raises(MalformedMessageError, match="bad base64") as caught:
        b64.decode(encoded, "MIME body")
    assert "MIME body" in str(caught.value)


@given(st.binary(max_size=300), st.binary(max_size=40), st.integers(min_value=0, max_value=400))
def test_decode_accepts_what_binascii_accepted(data: bytes, noise: bytes, at: int) -> None:
    """Same bytes as the standard library's lenient decoder, on folded base64 with stray bytes
    anywhere, a footer after the padding included."""
    encoded = _reference(data)
    mangled = encoded[:at] + noise + encoded[at:]
    try:
        expected: bytes | None = binascii.a2b_base64(mangled)
    except (binascii.Error, ValueError):
        expected = None
    if expected is None:
        with pytest.raises(MalformedMessageError):
            b64.decode(mangled, "test")
    else:
        assert b64.decode(mangled, "test") == expected


def test_footer_after_the_padding_is_ignored() -> None:
    body = _reference(b"x" * 100) + b"\r\n-- \r\nList footer: unsubscribe at list.example\r\n"
    assert b64.decode(body, "test") == b"x" * 100
