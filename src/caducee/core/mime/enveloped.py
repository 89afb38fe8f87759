"""application/pkcs7-mime enveloped entities (RFC 8551 §3.3): wrap and unwrap.

Only the headers go through the ``email`` package; the body (tens of megabytes) is encrypted,
base64-coded with ``binascii`` and folded at 76 columns in C (``struct`` splits a chunk into lines
in one call) piece by piece, straight into the result.
"""

from __future__ import annotations

import binascii
import functools
import io
import re
import struct
from collections.abc import Callable, Sequence
from email.message import Message

from caducee.core.algorithms import ContentCipher
from caducee.core.cms.decrypt import DecryptedReport, decrypt_data
from caducee.core.cms.envelope import Recipient, encrypt_data_stream
from caducee.core.mime.canon import to_crlf
from caducee.core.mime.headers import MimeHeaders, read_mime_headers
from caducee.errors import MalformedMessageError
from caducee.keys.api import DecryptionKey

__all__ = ["decrypt_mime", "encrypt_mime", "is_enveloped_mime"]

_LINE = 76  # base64 characters per line (RFC 2045)
_IN_LINE = _LINE * 3 // 4  # input bytes per full line
_LINES_PER_CHUNK = 1024
_CHUNK = _IN_LINE * _LINES_PER_CHUNK  # input bytes giving exactly that many full lines
_SPLIT = struct.Struct(f"{_LINE}s" * _LINES_PER_CHUNK)
_HEADER_END = re.compile(rb"\r?\n\r?\n")

_ENVELOPED_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_ENVELOPED_SMIME_TYPES = ("enveloped-data", "authenveloped-data")


def _split_lines(encoded: bytes) -> Sequence[bytes]:
    """``encoded`` cut into lines of 76 characters (the last one may be shorter)."""
    if len(encoded) == _LINE * _LINES_PER_CHUNK:
        return _SPLIT.unpack(encoded)
    full = len(encoded) // _LINE
    lines = list(struct.unpack_from(f"{_LINE}s" * full, encoded))
    if len(encoded) % _LINE:
        lines.append(encoded[full * _LINE :])
    return lines


class _Base64Writer:
    """Base64 in CRLF-terminated lines of 76 characters, written to ``out`` as data arrives.

    Input is encoded in whole lines (multiples of 57 bytes); the few bytes that do not fill a
    line wait for the next piece, so a piece is never copied except for those bytes.
    """

    def __init__(self, out: io.BytesIO) -> None:
        self._out = out
        self._carry = b""

    def _encode(self, block: bytes | memoryview) -> None:
        lines = _split_lines(binascii.b2a_base64(block, newline=False))  # the unsplit one goes
        self._out.write(b"\r\n".join(lines))
        self._out.write(b"\r\n")

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self._carry:
            need = -len(self._carry) % _IN_LINE
            if len(view) < need:
                self._carry += bytes(view)
                return
            self._encode(self._carry + bytes(view[:need]))
            view = view[need:]
        full = len(view) - len(view) % _IN_LINE
        for offset in range(0, full, _CHUNK):
            self._encode(view[offset : min(offset + _CHUNK, full)])
        self._carry = bytes(view[full:])

    def close(self) -> None:
        if self._carry:
            self._encode(self._carry)
            self._carry = b""


def _base64_size(size: int) -> int:
    """Length of the folded base64 of ``size`` bytes, line breaks included."""
    lines, rest = divmod(size, _IN_LINE)
    return lines * (_LINE + 2) + ((rest + 2) // 3 * 4 + 2 if rest else 0)


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
    total = len(header) + _base64_size(der_size)
    out = io.BytesIO()
    # Size the buffer once: CPython's getvalue() then hands it over without a copy.
    out.seek(total - 1)
    out.write(b"\0")
    out.seek(0)
    out.write(header)
    writer = _Base64Writer(out)
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


@functools.lru_cache(maxsize=32)
def _parse_headers(head: bytes) -> Message | MimeHeaders:
    """The header block parsed once: ``is_enveloped_mime`` and ``decrypt_mime`` (and the
    message layer around them) look at the same headers several times per message. Callers
    only read the result, never change it."""
    try:
        return read_mime_headers(head)
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
