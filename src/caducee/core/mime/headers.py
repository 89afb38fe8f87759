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
import re

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
    raw: bytes

    @property
    def key(self) -> str:
        return self.name.lower()

    def line(self) -> bytes:
        return self.name.encode("ascii") + b":" + self.raw + b"\r\n"

    def value(self) -> str:
        """The decoded value, unfolded (RFC 2047 words decoded)."""
        text = self.raw.decode("utf-8", "replace").replace("\r\n", "").replace("\n", "").strip()
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


def _header_end(data: bytes) -> tuple[int, int]:
    if data.startswith((b"\r\n", b"\n")):
        return 0, 2 if data.startswith(b"\r\n") else 1
    crlf = data.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
    lf = data.find(b"\n\n", 0, MAX_HEADER_BYTES)
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
            raise MalformedMessageError(f"not a header field: {line[:40]!r}", "MIME headers")
        fields.append(Field(name.strip().decode("ascii"), raw))
    return fields


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
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type:" + field.raw + b"\r\n\r\n"
    )
    params = {k.lower(): str(v) for k, v in parsed.get_params(failobj=[])[1:]}
    return parsed.get_content_type(), params


def add_param(field: Field, name: str, value: str) -> Field:
    raw = re.sub(rb";\s*" + name.encode() + rb'="?[^";]*"?', b"", field.raw)
    return Field(field.name, raw.rstrip() + f'; {name}="{value}"'.encode("ascii"))


# -- header protection ---------------------------------------------------------------------------


def protect(message: bytes, *, encrypting: bool) -> tuple[list[Field], bytes]:
    """Split a message into (outer fields, payload entity with protected headers inside)."""
    fields, body = split_message(message)
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
    return outer + others, join(inner, body)


@dataclasses.dataclass(frozen=True)
class HeaderView:
    """The header fields a reader should show, and where they come from."""

    fields: tuple[Field, ...]
    protected: bool  # True when they come from inside the cryptographic payload (RFC 9788)
    mode: str | None  # "cipher", "clear" or None

    def get(self, name: str) -> str | None:
        field = get(list(self.fields), name)
        return field.value() if field else None


def unprotect(outer: list[Field], payload: bytes) -> HeaderView:
    """Choose the header fields to show: the protected ones when the payload carries them."""
    inner, _ = split_message(payload)
    _, params = content_type(inner)
    mode = params.get("hp")
    if mode is None and params.get("protected-headers") == "v1":
        mode = "cipher"
    if mode in ("cipher", "clear"):
        shown = [f for f in inner if f.key in PROTECTED_FIELDS]
        return HeaderView(tuple(shown), True, mode)
    return HeaderView(tuple(f for f in outer if not is_content_field(f)), False, None)
