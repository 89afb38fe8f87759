"""application/pkcs7-mime enveloped entities (RFC 8551 §3.3): wrap and unwrap.

Only the headers go through the ``email`` package; the body (tens of megabytes) is encrypted,
base64-coded and folded at 76 columns in C (:mod:`caducee.core.mime.b64`) piece by piece,
straight into the result.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable, Sequence
from email.message import Message

from caducee.core.algorithms import ContentCipher
from caducee.core.cms.decrypt import DecryptedReport, decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data_stream
from caducee.core.mime import b64
from caducee.core.mime.canon import to_crlf
from caducee.core.mime.headers import MimeHeaders, shared_mime_headers
from caducee.errors import MalformedMessageError
from caducee.keys.api import DecryptionKey

__all__ = ["decrypt_mime", "encrypt_mime", "is_enveloped_mime"]

_HEADER_END = re.compile(rb"\r?\n\r?\n")

_ENVELOPED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ENVELOPED_SMIME_TYPES = ("enveloped-data", "authenveloped-data")


def encrypt_mime(
    entity: bytes,
    recipients: Sequence[Recipient],
    *,
    random: Callable[[int], bytes],
    cipher: ContentCipher = ContentCipher.AES_256_GCM,
    canonical: bool = False,
) -> bytes:
    """Encrypt a whole MIME entity (headers and body) into an application/pkcs7-mime entity.

    The entity is put in canonical form (CRLF) first, unless the caller says it already is
    (``canonical=True``, e.g. what our signer produced): the scan costs two passes over it. The
    result has CRLF line endings and carries ``MIME-Version``, ``Content-Type``,
    ``Content-Disposition`` and ``Content-Transfer-Encoding``; the caller adds
    From/To/Subject/Date.

    Memory: the ciphertext is encrypted, base64-coded and folded piece by piece straight into
    the result, whose size is known in advance, so neither the whole DER nor a list of encoded
    pieces ever exists next to it (about 1.4x the entity at the peak, beyond the input).
    """
    content = entity if canonical else to_crlf(entity)
    der_size, pieces = encrypt_data_stream(content, recipients, random=random, cipher=cipher)
    smime_type = b"authEnveloped-data" if cipher.aead else b"enveloped-data"
    header = (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type + b";\r\n"
        b' name="smime.p7m"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
    )
    total = len(header) + b64.encoded_size(der_size)
    out = io.BytesIO()
    # Size the buffer once: CPython's getvalue() then hands it over without a copy.
    out.seek(total - 1)
    out.write(b"\0")
    out.seek(0)
    out.write(header)
    writer = b64.LineEncoder(out.write)
    for piece in pieces:
        writer.write(piece)
    writer.close()
    del content, pieces
    if out.tell() != total:  # pragma: no cover - _base64_size and the writer agree
        raise AssertionError("base64 length mismatch")
    return out.getvalue()


def _split_headers(
    message: bytes | bytearray | memoryview,
) -> tuple[Message | MimeHeaders, int]:
    """Parsed headers and the offset where the body starts."""
    view = memoryview(message)
    if not message[:1] or message[:1] in (b"\r", b"\n"):
        raise MalformedMessageError("no MIME headers", "MIME headers")
    found = _HEADER_END.search(view)
    if found is None:
        raise MalformedMessageError("no blank line between headers and body", "MIME headers")
    return _parse_headers(bytes(view[: found.start()])), found.end()


def _parse_headers(head: bytes) -> Message | MimeHeaders:
    """The header block parsed once: ``is_enveloped_mime`` and ``decrypt_mime`` (and the
    message layer around them) look at the same headers several times per message. Callers
    only read the result, never change it."""
    try:
        return shared_mime_headers(head)
    except (ValueError, TypeError, IndexError) as exc:  # pragma: no cover - parser is lenient
        raise MalformedMessageError(str(exc), "MIME headers") from None


@functools.lru_cache(maxsize=32)
def _looks_enveloped(headers: Message | MimeHeaders) -> bool:
    """Cached on the (cached, never modified) header object: the message layer asks twice."""
    if headers.get_content_type() not in _ENVELOPED_TYPES:
        return False
    smime_type = headers.get_param("smime-type")
    if isinstance(smime_type, str):
        return smime_type.strip().lower() in _ENVELOPED_SMIME_TYPES
    name = headers.get_param("name") or headers.get_param("filename", header="content-disposition")
    return isinstance(name, str) and name.strip().lower().endswith(".p7m")


def is_enveloped_mime(message: bytes) -> bool:
    """Whether ``message`` is an application/(x-)pkcs7-mime entity carrying (auth)enveloped-data.

    Without an smime-type parameter (older clients) the ``.p7m`` file name decides.
    """
    try:
        headers, _ = _split_headers(message)
    except MalformedMessageError:
        return False
    return _looks_enveloped(headers)


def decrypt_mime(message: bytes, keys: Sequence[DecryptionKey]) -> tuple[DecryptedReport, bytes]:
    """Decrypt an application/pkcs7-mime message; returns the report and the inner MIME entity.

    Accepts base64 folded at any width with LF or CRLF endings, or a binary body.
    """
    headers, body_start = _split_headers(message)
    if not _looks_enveloped(headers):
        raise MalformedMessageError(
            f"not an encrypted S/MIME message (Content-Type {headers.get_content_type()})",
            "Content-Type",
        )
    encoding = str(headers.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    body = memoryview(message)[body_start:]
    if encoding == "base64":
        der: bytes | memoryview = b64.decode(body, "MIME body")
    elif encoding in ("binary", "8bit", "7bit"):
        der = body
    else:
        raise MalformedMessageError(
            f"unsupported Content-Transfer-Encoding {encoding!r}", "MIME body"
        )
    report = decrypt_data(der, keys)
    return report, report.content
