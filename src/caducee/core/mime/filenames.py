"""Attachment names and dispositions as senders really write them.

Mail programs name attachments in three ways: RFC 2231 (``filename*=utf-8''r%C3%A9sultat.pdf``,
the standard), RFC 2047 encoded words inside the quotes (``filename="=?utf-8?b?...?="``, which
Outlook and others write although RFC 2047 forbids it there), and raw 8-bit UTF-8
(``filename="résultat.pdf"``, RFC 6532 style). The ``email`` package's compat32 policy, used to
walk received entities, hands back a ``Header`` object for a header with 8-bit bytes and does
not decode encoded words in parameters; this module turns all three forms into text.

The result is what the sender chose, not yet a safe file name: the caller still reduces it to a
plain name before writing anything.
"""

from __future__ import annotations

import email.errors
import email.header
import email.message
import unicodedata

__all__ = ["decode_header_text", "disposition", "filename"]

_NAME_HEADERS = ("content-disposition", "content-type")


def decode_header_text(raw: object) -> str:
    """A header value as text: 8-bit bytes read as UTF-8 (Windows-1252 when not valid UTF-8).

    ``raw`` is what compat32 stores: a ``str`` whose 8-bit bytes are surrogate escapes, or a
    ``Header`` object.
    """
    if isinstance(raw, email.header.Header):
        raw = str(raw)
    text = str(raw)
    try:
        data = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # already real text (set by a program, not parsed from bytes)
        return text
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _decode_words(value: str) -> str:
    """RFC 2047 encoded words in a parameter value (tolerated, as every reader does)."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return value


def _decoded_copy(part: email.message.Message) -> email.message.Message:
    """The part's naming headers, with 8-bit bytes turned into text, in a fresh message."""
    copy = email.message.Message()
    for name, raw in part.raw_items():
        if name.lower() in _NAME_HEADERS:
            copy[name] = decode_header_text(raw)
    return copy


def filename(part: email.message.Message) -> str | None:
    """The attachment name the sender gave (``filename``, else the Content-Type ``name``),
    decoded from RFC 2231, RFC 2047 or 8-bit UTF-8; None when there is none."""
    try:
        value = _decoded_copy(part).get_filename()
    except (ValueError, LookupError, email.errors.MessageError):
        return None
    if value is None:
        return None
    text = _decode_words(str(value).replace("\r", "").replace("\n", "").strip())
    return unicodedata.normalize("NFC", text)


def disposition(part: email.message.Message) -> str:
    """``attachment``, ``inline``, or "" when the part has no (readable) Content-Disposition."""
    for name, raw in part.raw_items():
        if name.lower() == "content-disposition":
            return decode_header_text(raw).split(";")[0].strip().lower()
    return ""
