"""Message Disposition Notifications (RFC 8098), built and parsed without I/O.

A sender asks for a receipt with ``Disposition-Notification-To``; the reader's agent answers with
a ``multipart/report; report-type=disposition-notification`` whose second part is a
``message/disposition-notification`` naming the original Message-ID and what happened to it
(``displayed`` when a person opened it, ``processed`` when an agent handled it). caducee signs and
encrypts the report like any other message, so the sender can trust it.

The caller supplies the MIME boundary and the date (no randomness or clock here).

The original subject may be any text (patients' names are not ASCII): the report's Subject is
then RFC 2047-encoded and its human-readable part is UTF-8 in base64, so the report stays 7-bit.
Every other field must be printable ASCII, and a value that is not is refused, never rewritten.
"""

from __future__ import annotations

import dataclasses
import email.header
import email.parser
import email.policy
import email.utils
import re
from email.message import Message
from typing import Literal

from caducee.core.mime import b64
from caducee.core.mime.headers import entity_headers
from caducee.errors import MalformedMessageError, UsageError

__all__ = [
    "REQUEST_HEADER",
    "Disposition",
    "MdnReport",
    "build_mdn",
    "encode_subject",
    "is_mdn",
    "mdn_request_address",
    "parse_mdn",
]

REQUEST_HEADER = "Disposition-Notification-To"
Disposition = Literal["displayed", "processed", "deleted", "dispatched"]
_DISPOSITIONS = ("displayed", "processed", "deleted", "dispatched")
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,./:=?-]{1,69}$")
_SAFE_FIELD = re.compile(r"^[\x20-\x7e]*$")
#: at most this many characters of the original subject are quoted in the report
MAX_SUBJECT = 200


@dataclasses.dataclass(frozen=True)
class MdnReport:
    """What a received MDN says: which message, which recipient, what happened."""

    original_message_id: str
    final_recipient: str  # the bare e-mail address
    disposition: str  # displayed, processed, deleted, dispatched
    mode: str  # e.g. "manual-action/MDN-sent-manually"
    reporting_ua: str | None = None


def _clean(value: str, what: str) -> str:
    value = value.strip()
    if not _SAFE_FIELD.match(value):
        raise UsageError(f"MDN {what} must be printable ASCII on one line")
    return value


def _subject_text(value: str | None) -> str:
    """The original subject on one line: control characters become spaces (it is quoted for
    information only, so it is tidied rather than refused), at most :data:`MAX_SUBJECT`."""
    text = "".join(ch if ch.isprintable() else " " for ch in value or "")
    return " ".join(text.split())[:MAX_SUBJECT]


def encode_subject(text: str) -> str:
    """A Subject field value: as is when ASCII, else RFC 2047 encoded words (UTF-8), folded
    with CRLF so no line exceeds 78 characters."""
    if text.isascii():
        return text
    header = email.header.Header(text, charset="utf-8", header_name="Subject")
    return header.encode(linesep="\r\n", maxlinelen=76)


def mdn_request_address(headers: Message | dict[str, str]) -> str | None:
    """The bare address an MDN is requested for, or None (first address only, per RFC 8098)."""
    value = headers.get(REQUEST_HEADER)
    if not value:
        return None
    addresses = email.utils.getaddresses([str(value)])
    address = addresses[0][1] if addresses else ""
    return address if "@" in address else None


def build_mdn(
    *,
    original_message_id: str,
    original_subject: str | None,
    from_address: str,
    to_address: str,
    final_recipient: str,
    disposition: Disposition,
    manual: bool,
    date: str,
    message_id: str,
    boundary: str,
    reporting_ua: str = "caducee",
    original_recipient: str | None = None,
) -> bytes:
    """A complete RFC 5322 MDN message (CRLF line ends), ready to be signed and encrypted.

    ``manual`` selects ``manual-action/MDN-sent-manually`` (the user opened the message) versus
    ``automatic-action/MDN-sent-automatically``. The human-readable part never quotes the
    original message's content, only its subject.
    """
    if disposition not in _DISPOSITIONS:
        raise UsageError(f"unknown MDN disposition {disposition!r}")
    if not _BOUNDARY.match(boundary):
        raise UsageError("invalid MIME boundary for the MDN")
    mode = (
        "manual-action/MDN-sent-manually" if manual else "automatic-action/MDN-sent-automatically"
    )
    orig_id = _clean(original_message_id, "Original-Message-ID")
    recipient = _clean(final_recipient, "Final-Recipient")
    subject = _subject_text(original_subject)
    what = {
        "displayed": "was displayed to",
        "processed": "was processed for",
        "deleted": "was deleted by",
        "dispatched": "was dispatched for",
    }[disposition]
    human = f"The message {orig_id} ({subject or 'no subject'}) {what} {recipient}.\r\n"
    report = f"Reporting-UA: {_clean(reporting_ua, 'Reporting-UA')}\r\n"
    if original_recipient:
        report += (
            f"Original-Recipient: rfc822;{_clean(original_recipient, 'Original-Recipient')}\r\n"
        )
    report += (
        f"Final-Recipient: rfc822;{recipient}\r\n"
        f"Original-Message-ID: {orig_id}\r\n"
        f"Disposition: {mode}; {disposition}\r\n"
    )
    head = (
        f"From: {_clean(from_address, 'From')}\r\n"
        f"To: {_clean(to_address, 'To')}\r\n"
        f"Subject: {encode_subject(f'Read receipt: {subject or orig_id}')}\r\n"
        f"Date: {_clean(date, 'Date')}\r\n"
        f"Message-ID: {_clean(message_id, 'Message-ID')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=disposition-notification;\r\n"
        f' boundary="{boundary}"\r\n'
        "\r\n"
    )
    if human.isascii():
        human_part = f"Content-Type: text/plain; charset=us-ascii\r\n\r\n{human}"
    else:
        human_part = (
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            + b64.encode_lines(human.encode("utf-8")).decode("ascii")
        )
    body = (
        f"--{boundary}\r\n"
        f"{human_part}\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/disposition-notification\r\n\r\n"
        f"{report}\r\n"
        f"--{boundary}--\r\n"
    )
    return (head + body).encode("ascii")


def is_mdn(entity: bytes) -> bool:
    """True when ``entity`` is a disposition-notification report (its header block only)."""
    try:
        msg = entity_headers(entity)
    except Exception:  # any parse failure means "not an MDN"
        return False
    return (
        msg.get_content_type() == "multipart/report"
        and (msg.get_param("report-type") or "") == "disposition-notification"
    )


def _field(fields: Message, name: str) -> str:
    value = fields.get(name)
    if value is None:
        raise MalformedMessageError(f"the report has no {name} field", "MDN")
    return " ".join(str(value).split())


def parse_mdn(entity: bytes) -> MdnReport:
    """Read the ``message/disposition-notification`` part of a report (the innermost entity)."""
    if not is_mdn(entity):
        raise MalformedMessageError("not a disposition-notification report", "MDN")
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(entity)
    part = next(
        (p for p in msg.walk() if p.get_content_type() == "message/disposition-notification"),
        None,
    )
    if part is None:
        raise MalformedMessageError("no message/disposition-notification part", "MDN")
    payload = part.get_payload()
    fields: Message
    if isinstance(payload, list):  # the email package parses message/* as a nested message
        first = payload[0] if payload else None
        fields = first if isinstance(first, Message) else Message()
    else:
        raw = payload if isinstance(payload, str) else ""
        fields = email.parser.Parser(policy=email.policy.compat32).parsestr(raw, headersonly=True)
    final = _field(fields, "Final-Recipient")
    _, _, address = final.partition(";")
    address = address.strip() or final
    disposition_field = _field(fields, "Disposition")
    mode, _, rest = disposition_field.partition(";")
    disposition = rest.strip().split("/")[0].strip().lower()
    if disposition not in _DISPOSITIONS:
        raise MalformedMessageError(f"unknown disposition {disposition[:40]!r}", "MDN")
    ua = fields.get("Reporting-UA")
    return MdnReport(
        original_message_id=_field(fields, "Original-Message-ID"),
        final_recipient=address.lower(),
        disposition=disposition,
        mode=mode.strip(),
        reporting_ua=str(ua).strip() if ua else None,
    )
