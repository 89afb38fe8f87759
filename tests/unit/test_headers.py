"""Raw header handling and RFC 9788 header protection."""

from __future__ import annotations

import email.errors
import email.header

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caducee.core.mime import headers as h
from caducee.errors import MalformedMessageError

MESSAGE = (
    b"From: Dr Alice <alice@op1.test>\r\n"
    b"To: bob@op2.test\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats?= de\r\n laboratoire\r\n"
    b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@op1.test>\r\n"
    b"X-Mailer: test\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello\r\n"
)


def test_split_keeps_folding_and_body() -> None:
    fields, body = h.split_message(MESSAGE)
    assert body == b"hello\r\n"
    subject = h.get(fields, "subject")
    assert subject is not None
    assert subject.raw.count(b"\r\n") == 1
    assert subject.value() == "Résultats de laboratoire"
    assert h.join(fields, body) == MESSAGE


def test_split_accepts_lf_only() -> None:
    fields, body = h.split_message(MESSAGE.replace(b"\r\n", b"\n"))
    assert body == b"hello\n"
    assert [f.key for f in fields][:2] == ["from", "to"]


def test_protect_for_encryption_hides_subject_and_records_outer() -> None:
    outer, payload = h.protect(MESSAGE, encrypting=True)
    assert h.get(outer, "subject").value() == "[...]"  # type: ignore[union-attr]
    assert h.get(outer, "x-mailer") is not None
    assert all(not h.is_content_field(f) for f in outer)
    inner, body = h.split_message(payload)
    media, params = h.content_type(inner)
    assert (media, params["hp"], params["protected-headers"]) == ("text/plain", "cipher", "v1")
    assert params["charset"] == "utf-8"
    assert h.get(inner, "subject").value() == "Résultats de laboratoire"  # type: ignore[union-attr]
    hp_outer = [f.value() for f in inner if f.key == "hp-outer"]
    assert "Subject: [...]" in hp_outer
    assert h.get(inner, "x-mailer") is None
    assert body == b"hello\r\n"


def test_protect_signed_only_keeps_subject_outside() -> None:
    outer, payload = h.protect(MESSAGE, encrypting=False)
    assert h.get(outer, "subject").value() == "Résultats de laboratoire"  # type: ignore[union-attr]
    inner, _ = h.split_message(payload)
    assert h.content_type(inner)[1]["hp"] == "clear"
    assert not [f for f in inner if f.key == "hp-outer"]


def test_unprotect_prefers_inner_headers() -> None:
    outer, payload = h.protect(MESSAGE, encrypting=True)
    view = h.unprotect(outer, payload)
    assert view.protected and view.mode == "cipher"
    assert view.get("subject") == "Résultats de laboratoire"


def test_unprotect_without_hp_uses_outer_and_says_so() -> None:
    fields, _ = h.split_message(MESSAGE)
    view = h.unprotect(fields, b"Content-Type: text/plain\r\n\r\nhi")
    assert not view.protected
    assert view.get("subject") == "Résultats de laboratoire"


def test_message_without_content_type_gets_text_plain() -> None:
    _, payload = h.protect(b"Subject: x\r\n\r\nbody", encrypting=True)
    assert payload.startswith(b"Content-Type: text/plain")


@pytest.mark.parametrize(
    "bad",
    [b" continuation first\r\n\r\nbody", b"no colon here\r\n\r\nbody", b"Bad Name: x\r\n\r\n"],
)
def test_malformed_headers_raise_typed_error(bad: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        h.split_message(bad)


def test_endless_header_section_is_refused() -> None:
    with pytest.raises(MalformedMessageError, match="header section"):
        h.split_message(b"X-A: " + b"a" * (h.MAX_HEADER_BYTES + 10))


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_value_without_encoded_words_is_what_the_decoder_gives(text: str) -> None:
    raw = (" " + text).encode("utf-8").replace(b"\r", b"").replace(b"\n", b"\r\n\t")
    field = h.Field("Subject", raw)
    unfolded = raw.decode("utf-8", "replace").replace("\r\n", "").replace("\n", "").strip()
    try:
        slow = str(email.header.make_header(email.header.decode_header(unfolded)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        slow = unfolded
    assert field.value() == slow


def test_value_decodes_encoded_words() -> None:
    field = h.Field("Subject", b" =?utf-8?q?R=C3=A9sultat?= d'analyse")
    assert field.value() == "Résultat d'analyse"


def _split_params_reference(value: str) -> list[tuple[str, str]]:
    """The first implementation, one character at a time: the faster one must agree."""
    items, start, quoted = [], 0, False
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            items.append(value[start:i])
            start, quoted = i + 1, False
    items.append(value[start:])
    out = []
    for item in items:
        name, eq, val = item.partition("=")
        out.append((name.strip().lower(), val.strip()) if eq else (item.strip(), ""))
    return out


@given(st.text(alphabet=st.sampled_from('ab=; "\\\t/x-'), max_size=60))
def test_parameter_split_agrees_with_the_reference(value: str) -> None:
    assert h._split_params(value) == _split_params_reference(value)


def test_parameter_split_keeps_quoted_semicolons() -> None:
    value = 'multipart/signed; protocol="application/pkcs7-signature"; boundary="a;b"; x'
    assert h._split_params(value) == [
        ("multipart/signed", ""),
        ("protocol", '"application/pkcs7-signature"'),
        ("boundary", '"a;b"'),
        ("x", ""),
    ]
