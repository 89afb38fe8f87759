"""Raw header handling and header protection (RFC 9788).

Headers are kept as raw lines so what was signed is exactly what is sent; the ``email`` package is
used only to read values. A protected message carries its protected header fields inside the
cryptographic payload, whose root Content-Type gets ``hp="cipher"`` (encrypted) or ``hp="clear"``
(signed only), plus ``protected-headers="v1"`` which Thunderbird reads. When encrypting, the outer
Subject is replaced by ``[...]`` (RFC 9788 baseline policy) and ``HP-Outer`` fields inside record
what was left visible outside.
"""

from __future__ import annotations

import dataclasses
import email.errors
import email.header
import email.parser
import email.policy
import functools
import re
from email.message import Message
from typing import Any

from caducee.errors import MalformedMessageError

#: Header fields copied inside the payload and checked on reading.
PROTECTED_FIELDS = (
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "followup-to",
    "keywords",
)
#: Fields hidden or replaced outside when encrypting (baseline header confidentiality policy).
OBSCURED = {"subject": "[...]"}
MAX_HEADER_BYTES = 1 << 20

_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")


@dataclasses.dataclass(frozen=True)
class Field:
    """One header field: its name as written and its raw value (folding kept, no final CRLF)."""

    name: str
    raw: bytes = dataclasses.field(repr=False)  # may be a Subject: content, never logged

    @property
    def key(self) -> str:
        return self.name.lower()

    def line(self) -> bytes:
        return self.name.encode("ascii") + b":" + self.raw + b"\r\n"

    def value(self) -> str:
        """The decoded value, unfolded (RFC 2047 words decoded)."""
        text = self.raw.decode("utf-8", "replace").replace("\r\n", "").replace("\n", "").strip()
        if "=?" not in text:  # no encoded word: what the decoder would give back (measured)
            return text
        try:
            return str(email.header.make_header(email.header.decode_header(text)))
        except (ValueError, LookupError, email.errors.HeaderParseError):
            return text


def split_message(data: bytes) -> tuple[list[Field], bytes]:
    """Split an RFC 5322 message or MIME entity into header fields and body (no copy of body)."""
    end, sep = _header_end(data)
    if end < 0:
        head, body = data, b""
    else:
        head, body = data[:end], data[end + sep :]
    return parse_fields(head), body


def header_fields(data: bytes) -> list[Field]:
    """The header fields of a message or entity, as :func:`split_message` gives them, without
    slicing (copying) the body."""
    end, _ = _header_end(data)
    return parse_fields(data if end < 0 else data[:end])


def entity_headers(data: bytes) -> Message | MimeHeaders:
    """The MIME fields of a message or entity, read from its header block only (the body,
    however large, is not looked at)."""
    end, _ = _header_end(data)
    return shared_mime_headers(data if end < 0 else data[:end])


def _header_end(data: bytes) -> tuple[int, int]:
    if data.startswith((b"\r\n", b"\n")):
        return 0, 2 if data.startswith(b"\r\n") else 1
    crlf = data.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
    # Only an LF pair before the CRLF pair matters: do not scan a large CRLF body for one.
    lf = data.find(b"\n\n", 0, MAX_HEADER_BYTES if crlf < 0 else crlf + 1)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 2, 2
    if lf >= 0:
        return lf + 1, 1
    if len(data) > MAX_HEADER_BYTES:
        raise MalformedMessageError("header section too long or never ends", "MIME headers")
    return -1, 0


def parse_fields(head: bytes) -> list[Field]:
    fields: list[Field] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MalformedMessageError("continuation line before any field", "MIME headers")
            last = fields[-1]
            fields[-1] = Field(last.name, last.raw + b"\r\n" + line)
            continue
        name, colon, raw = line.partition(b":")
        if not colon or not _FIELD_NAME.match(name.strip()):
            raise MalformedMessageError(_not_a_field(line, first=not fields), "MIME headers")
        fields.append(Field(name.strip().decode("ascii"), raw))
    return fields


def _not_a_field(line: bytes, *, first: bool) -> str:
    """Why ``line`` cannot be a header field, in words: never the raw bytes (they may be binary
    garbage or patient text)."""
    sample = line[:64]
    binary = any(b < 0x09 or 0x0D < b < 0x20 or b == 0x7F for b in sample)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        binary = binary or exc.start < len(sample) - 3  # not a character cut at the end
    if binary:
        return "input is not a MIME message (binary data: DER? use --inform der)"
    if first:
        return "input is not a MIME message (its first line is not a header field)"
    return "a line in the header block is not a header field (no 'Name:' before it)"


def join(fields: list[Field], body: bytes) -> bytes:
    return b"".join(f.line() for f in fields) + b"\r\n" + body


def get(fields: list[Field], name: str) -> Field | None:
    key = name.lower()
    return next((f for f in fields if f.key == key), None)


def is_content_field(field: Field) -> bool:
    return field.key.startswith("content-") or field.key == "mime-version"


def content_type(fields: list[Field]) -> tuple[str, dict[str, str]]:
    """(media type in lower case, parameters) of the entity; text/plain when absent."""
    field = get(fields, "content-type")
    if field is None:
        return "text/plain", {}
    media_type, params = _content_type(field.raw)
    return media_type, dict(params)


@functools.lru_cache(maxsize=32)
def _content_type(raw: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Content-Type value read once per distinct value (opening a message reads it again)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type:" + raw + b"\r\n\r\n"
    )
    params = {k.lower(): str(v) for k, v in parsed.get_params(failobj=[])[1:]}
    return parsed.get_content_type(), tuple(params.items())


def add_param(field: Field, name: str, value: str) -> Field:
    raw = re.sub(rb";\s*" + name.encode() + rb'="?[^";]*"?', b"", field.raw)
    return Field(field.name, raw.rstrip() + f'; {name}="{value}"'.encode("ascii"))


# -- reading MIME fields quickly ------------------------------------------------------------------

_FIELD_START = re.compile(rb"[!-9;-~]+:")
_NOT_PLAIN = re.compile(rb"[^\t\n\r -~]|\r(?!\n)")
_MISSING: Any = object()


class MimeHeaders:
    """A header block read for its MIME fields exactly as the ``email`` package (compat32 policy)
    reads them, for plain ASCII blocks, about ten times faster. Values that need the package's
    rarer rules (backslash escapes, RFC 2231 parameters) are handed to it. Read-only.

    Get one from :func:`read_mime_headers`; it offers the few ``email.message.Message`` methods
    the S/MIME code calls, with the same results.
    """

    __slots__ = ("_fields", "_head", "_message")

    def __init__(self, head: bytes, fields: list[tuple[str, str]]) -> None:
        self._head = head
        self._fields = fields  # (lower-case name, value as compat32 returns it), in order
        self._message: Message | None = None

    def _email(self) -> Message:
        if self._message is None:
            self._message = _email_headers(self._head)
        return self._message

    def get(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        return next((v for k, v in self._fields if k == key), failobj)

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return any(k == key for k, _ in self._fields)

    def get_content_type(self) -> str:
        value = self.get("content-type", _MISSING)
        if value is _MISSING:
            return "text/plain"
        ctype = str(value).partition(";")[0].strip().lower()
        return ctype if ctype.count("/") == 1 else "text/plain"

    def get_param(self, param: str, failobj: Any = None, header: str = "content-type") -> Any:
        value = self.get(header, _MISSING)
        if value is _MISSING:
            return failobj
        if "\\" in value or "*" in value:  # escapes, RFC 2231: the package's own rules
            return self._email().get_param(param, failobj, header)
        wanted = param.lower()
        for name, val in _split_params(value):
            if name.lower() == wanted:
                return _unquote(val)
        return failobj

    def get_boundary(self, failobj: Any = None) -> Any:
        boundary = self.get_param("boundary", _MISSING)
        if boundary is _MISSING:
            return failobj
        if not isinstance(boundary, str):
            return self._email().get_boundary(failobj)
        return _unquote(boundary).rstrip()

    def get_filename(self, failobj: Any = None) -> Any:
        filename = self.get_param("filename", _MISSING, "content-disposition")
        if filename is _MISSING:
            filename = self.get_param("name", _MISSING, "content-type")
        if filename is _MISSING:
            return failobj
        if not isinstance(filename, str):
            return self._email().get_filename(failobj)
        return _unquote(filename).strip()


def _split_params(value: str) -> list[tuple[str, str]]:
    """(name, raw value) of each ';'-separated item, ';' inside quotes kept; the first item is
    the media type itself. Names of ``name=value`` items are lower-cased."""
    items: list[str] = []
    start = 0
    quoted = False
    for found in _PARAM_DELIMITER.finditer(value):  # a few delimiters, not every character
        if found.group() == '"':
            quoted = not quoted
        elif not quoted:
            items.append(value[start : found.start()])
            start = found.end()
    items.append(value[start:])
    out = []
    for item in items:
        name, eq, val = item.partition("=")
        if eq:
            out.append((name.strip().lower(), val.strip()))
        else:
            out.append((item.strip(), ""))
    return out


_PARAM_DELIMITER = re.compile('[";]')


def _unquote(value: str) -> str:
    if len(value) > 1 and (
        (value[0] == '"' and value[-1] == '"') or (value[0] == "<" and value[-1] == ">")
    ):
        return value[1:-1]
    return value


def _email_headers(head: bytes) -> Message:
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)


@functools.lru_cache(maxsize=64)
def _shared_mime_headers(head: bytes) -> Message | MimeHeaders:
    return read_mime_headers(head)


def shared_mime_headers(head: bytes) -> Message | MimeHeaders:
    """:func:`read_mime_headers` for the header blocks the S/MIME layers each look at several
    times per message (is it enveloped? signed? then unwrap it): read once, shared by every
    caller, who must not change the result. The block may end with its last line break."""
    return _shared_mime_headers(head.rstrip(b"\r\n"))


def read_mime_headers(head: bytes) -> Message | MimeHeaders:
    """The header block (no blank line in it) for reading its MIME fields: a fast reader for a
    plain ASCII block of well-formed fields, else the ``email`` package's parse."""
    if _NOT_PLAIN.search(head) is not None:
        return _email_headers(head)
    fields: list[tuple[str, str]] = []
    name = ""
    parts: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not name:
                return _email_headers(head)
            parts.append(line)
            continue
        found = _FIELD_START.match(line)
        if found is None or line.startswith(b"From "):
            return _email_headers(head)  # unix-from, body lines, blank lines: the package knows
        if name:
            fields.append((name, b"".join(parts).rstrip(b"\r\n").decode("ascii")))
        name = line[: found.end() - 1].decode("ascii").lower()
        parts = [line[found.end() :].lstrip(b" \t")]
    if name:
        fields.append((name, b"".join(parts).rstrip(b"\r\n").decode("ascii")))
    return MimeHeaders(head, fields)


# -- header protection ---------------------------------------------------------------------------


def protect(message: bytes, *, encrypting: bool) -> tuple[list[Field], bytes]:
    """Split a message into (outer fields, payload entity with protected headers inside)."""
    end, sep = _header_end(message)
    if end < 0:
        head, body = message, memoryview(b"")
    else:  # the body is viewed, not sliced: it is copied once, into the payload
        head, body = message[:end], memoryview(message)[end + sep :]
    fields = parse_fields(head)
    content = [f for f in fields if is_content_field(f) and f.key != "mime-version"]
    protected = [f for f in fields if f.key in PROTECTED_FIELDS]
    others = [f for f in fields if not is_content_field(f) and f.key not in PROTECTED_FIELDS]
    if not any(f.key == "content-type" for f in content):
        content.insert(0, Field("Content-Type", b" text/plain; charset=us-ascii"))
    ctype = next(f for f in content if f.key == "content-type")
    marked = add_param(
        add_param(ctype, "protected-headers", "v1"), "hp", "cipher" if encrypting else "clear"
    )
    content = [marked if f is ctype else f for f in content]

    outer: list[Field] = []
    for f in protected:
        if encrypting and f.key in OBSCURED:
            outer.append(Field(f.name, b" " + OBSCURED[f.key].encode("ascii")))
        else:
            outer.append(f)
    inner = content + protected
    if encrypting:
        inner += [Field("HP-Outer", b" " + f.name.encode("ascii") + b":" + f.raw) for f in outer]
    return outer + others, b"".join([*(f.line() for f in inner), b"\r\n", body])


@dataclasses.dataclass(frozen=True)
class HeaderView:
    """The header fields a reader should show, and where they come from."""

    fields: tuple[Field, ...] = dataclasses.field(repr=False)
    protected: bool  # True when they come from inside the cryptographic payload (RFC 9788)
    mode: str | None  # "cipher", "clear" or None

    def get(self, name: str) -> str | None:
        field = get(list(self.fields), name)
        return field.value() if field else None


def unprotect(outer: list[Field], payload: bytes) -> HeaderView:
    """Choose the header fields to show: the protected ones when the payload carries them."""
    inner = header_fields(payload)
    _, params = content_type(inner)
    mode = params.get("hp")
    if mode is None and params.get("protected-headers") == "v1":
        mode = "cipher"
    if mode in ("cipher", "clear"):
        shown = [f for f in inner if f.key in PROTECTED_FIELDS]
        return HeaderView(tuple(shown), True, mode)
    return HeaderView(tuple(f for f in outer if not is_content_field(f)), False, None)
