"""application/pkcs7-mime enveloped entities (RFC 8551 §3.3): wrap and unwrap.

Only the headers go through the ``email`` package; the body (tens of megabytes) is base64-coded
with ``binascii`` in large chunks and folded at 76 columns in C (``struct`` splits a chunk into
lines in one call), then joined once.
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import re
import struct
from collections.abc import Callable, Sequence
from email.message import Message

from caducee.core.algorithms import ContentCipher
from caducee.core.cms.decrypt import DecryptedReport, decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data_view
from caducee.core.mime.canon import to_crlf
from caducee.errors import MalformedMessageError
from caducee.keys.api import DecryptionKey

__all__ = ["decrypt_mime", "encrypt_mime", "is_enveloped_mime"]

_LINE = 76  # base64 characters per line (RFC 2045)
_LINES_PER_CHUNK = 4096
_CHUNK = _LINE * 3 // 4 * _LINES_PER_CHUNK  # input bytes giving exactly that many full lines
_SPLIT = struct.Struct(f"{_LINE}s" * _LINES_PER_CHUNK)
_HEADER_END = re.compile(rb"\r?\n\r?\n")

_ENVELOPED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ENVELOPED_SMIME_TYPES = ("enveloped-data", "authenveloped-data")


def _fold_base64(data: memoryview) -> list[bytes]:
    """Base64 lines of ``data``, CRLF-terminated, as a few large pieces."""
    pieces: list[bytes] = []
    b2a = binascii.b2a_base64
    for offset in range(0, len(data), _CHUNK):
        encoded = b2a(data[offset : offset + _CHUNK], newline=False)
        if len(encoded) == _LINE * _LINES_PER_CHUNK:
            lines: Sequence[bytes] = _SPLIT.unpack(encoded)
        else:  # the last chunk: its full lines, then the short one
            full = len(encoded) // _LINE
            lines = list(struct.unpack_from(f"{_LINE}s" * full, encoded))
            if len(encoded) % _LINE:
                lines.append(encoded[full * _LINE :])
        pieces.append(b"\r\n".join(lines))
        pieces.append(b"\r\n")
    return pieces


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
    """
    content = entity if canonical else to_crlf(entity)
    der = encrypt_data_view(content, recipients, random=random, cipher=cipher)
    del content
    smime_type = b"authEnveloped-data" if cipher.aead else b"enveloped-data"
    header = (
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type + b";\r\n"
        b' name="smime.p7m"\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
    )
    pieces = [header, *_fold_base64(der)]
    der.release()
    del der  # free the DER buffer before the final join
    return b"".join(pieces)


def _split_headers(message: bytes | bytearray | memoryview) -> tuple[Message, int]:
    """Parsed headers and the offset where the body starts."""
    view = memoryview(message)
    if not message[:1] or message[:1] in (b"\r", b"\n"):
        raise MalformedMessageError("no MIME headers", "MIME headers")
    found = _HEADER_END.search(view)
    if found is None:
        raise MalformedMessageError("no blank line between headers and body", "MIME headers")
    head = bytes(view[: found.start()])
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    try:
        return parser.parsebytes(head), found.end()
    except (ValueError, TypeError, IndexError) as exc:  # pragma: no cover - parser is lenient
        raise MalformedMessageError(str(exc), "MIME headers") from None


def _looks_enveloped(headers: Message) -> bool:
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
    encoding = (headers.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    body = memoryview(message)[body_start:]
    if encoding == "base64":
        try:
            der: bytes | memoryview = binascii.a2b_base64(body)
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessageError(f"bad base64 ({exc})", "MIME body") from None
    elif encoding in ("binary", "8bit", "7bit"):
        der = body
    else:
        raise MalformedMessageError(
            f"unsupported Content-Transfer-Encoding {encoding!r}", "MIME body"
        )
    report = decrypt_data(der, keys)
    return report, report.content
