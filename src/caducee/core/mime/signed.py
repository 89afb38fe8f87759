"""S/MIME signed entities (RFC 8551 §3.5): multipart/signed and application/pkcs7-mime.

Headers are read with the standard ``email`` package; bodies (up to tens of MB) are split with
plain ``bytes.find`` so the covered bytes come out exactly as they were sent, without a parser
pass over the whole message.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from email.message import Message

from cryptography import x509

from caducee.core.algorithms import Digest, SignatureScheme
from caducee.core.capabilities import Capabilities
from caducee.core.cms.der import children, der_oid, read_tlv
from caducee.core.cms.sign import sign_data_parts
from caducee.core.cms.sign_attrs import OID_MESSAGE_DIGEST
from caducee.core.cms.verify import ERR_DIGEST, SignedReport, verify_signed_data
from caducee.core.mime import b64
from caducee.core.mime.canon import to_crlf
from caducee.core.mime.headers import MimeHeaders, shared_mime_headers
from caducee.errors import MalformedMessageError
from caducee.keys.api import SigningKey

__all__ = ["is_signed_mime", "sign_mime", "verify_mime"]

_CRLF = b"\r\n"
_SIGNATURE_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def _b64_chunks(parts: Sequence[bytes]) -> list[bytes]:
    """Base64 of the concatenation of ``parts`` in CRLF lines of 76 characters, as chunks
    (only the few bytes around a part boundary are copied)."""
    out: list[bytes] = []
    encoder = b64.LineEncoder(out.append)
    for part in parts:
        encoder.write(part)
    encoder.close()
    return out


def _micalg(digest: Digest) -> str:
    return "sha-" + digest.label[3:]  # RFC 8551 §3.5.3.2: sha-256, sha-384, sha-512


def _message_digest(der: bytes) -> bytes:
    """The messageDigest attribute of our (small, detached) SignedData: the content's digest,
    so the boundary is derived from the content without hashing it a second time. Walked by
    hand: asn1crypto would parse the whole SignerInfo for one attribute."""
    where = "SignedData"
    ci = read_tlv(der, 0, len(der), where)
    signed_data = children(der, children(der, ci, where)[1], where)[0]
    signer_info = children(der, children(der, signed_data, where)[-1], where)[0]
    wanted = der_oid(OID_MESSAGE_DIGEST)
    for field in children(der, signer_info, where):
        if field.tag != 0xA0:  # [0] IMPLICIT signedAttrs
            continue
        for attr in children(der, field, where):
            oid, values = children(der, attr, where)
            if der[oid.start : oid.next] == wanted:
                value = children(der, values, where)[0]
                return der[value.body : value.end]
    raise AssertionError("sign_data always writes messageDigest")  # pragma: no cover


def _boundary(entity: bytes, digest: bytes) -> bytes:
    """A boundary derived from the content digest (no randomness), absent from the content."""
    for counter in range(100):
        candidate = b"----caducee-" + digest[:12].hex().encode() + b"-%d" % counter
        if b"--" + candidate not in entity:
            return candidate
    raise MalformedMessageError("cannot find a boundary absent from the content", "entity")


def sign_mime(
    entity: bytes,
    signer: SigningKey,
    *,
    signing_time: datetime,
    detached: bool = True,
    digest: Digest = Digest.SHA256,
    scheme: SignatureScheme | None = None,
    capabilities: Capabilities | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
    canonical: bool = False,
) -> bytes:
    """Sign a full MIME entity (headers and body), returned as a CRLF MIME entity.

    The result carries ``MIME-Version`` and the ``Content-*`` headers only; the caller adds the
    message headers (From, To, Date, Subject...). The entity is put in canonical form (CRLF)
    first, unless the caller says it already is (``canonical=True``: e.g. written by the
    ``email`` package with ``policy.SMTP``); the check costs two passes over a large entity.
    """
    if not canonical:
        entity = to_crlf(entity)
    parts = sign_data_parts(
        entity,
        signer,
        signing_time=signing_time,
        digest=digest,
        scheme=scheme,
        detached=detached,
        capabilities=capabilities,
        extra_certificates=extra_certificates,
    )
    if not detached:
        return b"".join(
            (
                b"MIME-Version: 1.0\r\n"
                b"Content-Type: application/pkcs7-mime; smime-type=signed-data;"
                b' name="smime.p7m"\r\n'
                b"Content-Transfer-Encoding: base64\r\n"
                b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
                b"\r\n",
                *_b64_chunks(parts),
            )
        )
    der = b"".join(parts)  # small: the content is not in it
    boundary = _boundary(entity, _message_digest(der))
    delimiter = b"--" + boundary
    return b"".join(
        (
            b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg='
            + _micalg(digest).encode()
            + b'; boundary="'
            + boundary
            + b'"\r\n\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n'
            + delimiter
            + _CRLF,
            entity,
            _CRLF + delimiter + _CRLF,
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
            b64.encode_lines(der),
            delimiter + b"--\r\n",
        )
    )


# -- reading ------------------------------------------------------------------------------------


def _split_headers(data: bytes) -> tuple[Message | MimeHeaders, int]:
    """Parse the header block; returns the headers and the offset of the body."""
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, len(data) if crlf < 0 else crlf + 2)  # no scan of a big body
    ends = [i for i in (crlf, lf) if i >= 0]
    if data.startswith((b"\r\n", b"\n")):
        header_end, body = 0, (2 if data.startswith(b"\r\n") else 1)
    elif ends:
        header_end = min(ends) + 1
        body = header_end + (2 if data[header_end : header_end + 2] == b"\r\n" else 1)
    else:
        header_end = body = len(data)
    return _parse_headers(bytes(data[:header_end])), body


def _parse_headers(head: bytes) -> Message | MimeHeaders:
    """The header block parsed once: ``is_signed_mime``, ``verify_mime`` and the message layer
    look at the same headers several times per message. Callers only read the result."""
    try:
        return shared_mime_headers(head)
    except (ValueError, TypeError, LookupError) as exc:
        raise MalformedMessageError(f"cannot parse the headers ({exc})", "MIME headers") from None


def _param(headers: Message | MimeHeaders, name: str) -> str:
    value = headers.get_param(name, "", header="content-type")
    if isinstance(value, tuple):  # RFC 2231 encoded
        value = value[2]
    return str(value).strip().lower()


@functools.lru_cache(maxsize=32)
def _kind(headers: Message | MimeHeaders) -> str | None:
    """Say "detached", "opaque" or None (not a signed S/MIME entity).

    Cached on the (cached, never modified) header object: the message layer asks twice."""
    ctype = headers.get_content_type()
    if ctype == "multipart/signed":
        protocol = _param(headers, "protocol")
        return "detached" if protocol in _SIGNATURE_TYPES else None
    if ctype in _MIME_TYPES:
        smime_type = _param(headers, "smime-type")
        if smime_type == "signed-data":
            return "opaque"
        if not smime_type:
            name = _param(headers, "name") or str(headers.get_filename("") or "").lower()
            return "opaque" if name.endswith(".p7m") else None
    return None


def is_signed_mime(headers_or_message: bytes) -> bool:
    """True for multipart/signed with a PKCS#7 signature or pkcs7-mime signed-data."""
    try:
        headers, _ = _split_headers(headers_or_message)
    except MalformedMessageError:
        return False
    return _kind(headers) is not None


def _find_delimiter(data: bytes, delimiter: bytes, start: int, body_start: int) -> int:
    """Offset of the next line that is ``delimiter`` (possibly closing) at or after ``start``."""
    pos = start
    while True:
        i = data.find(delimiter, pos)
        if i < 0:
            return -1
        after = data[i + len(delimiter) : i + len(delimiter) + 1]
        at_line_start = i == body_start or data[i - 1 : i] == b"\n"
        if at_line_start and after in (b"", b"\r", b"\n", b"-", b" ", b"\t"):
            return i
        pos = i + 1


def _line_end(data: bytes, pos: int) -> int:
    """Offset just after the end of the line containing ``pos`` (after its LF)."""
    lf = data.find(b"\n", pos)
    return len(data) if lf < 0 else lf + 1


def _before_break(data: bytes, pos: int, floor: int) -> int:
    """Strip the line break that belongs to the delimiter at ``pos`` (RFC 2046 §5.1.1)."""
    if pos - 2 >= floor and data[pos - 2 : pos] == b"\r\n":
        return pos - 2
    if pos - 1 >= floor and data[pos - 1 : pos] == b"\n":
        return pos - 1
    return pos


def _decode_cms(part: bytes, where: str) -> bytes:
    headers, body = _split_headers(part)
    encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
    if encoding == "base64":
        return b64.decode(memoryview(part)[body:], where)
    raw = part[body:]
    if not raw:
        raise MalformedMessageError("the signature is empty", where)
    if raw[0] != 0x30:  # some senders omit Content-Transfer-Encoding: base64
        try:
            return b64.decode(raw, where)
        except MalformedMessageError:
            raise MalformedMessageError("the signature is neither DER nor base64", where) from None
    element = read_tlv(raw, 0, len(raw), where)
    return raw[: element.next]


def _multipart_parts(
    message: bytes, headers: Message | MimeHeaders, body: int
) -> tuple[bytes, bytes]:
    boundary = headers.get_boundary()
    if not boundary:
        raise MalformedMessageError("multipart/signed without a boundary", "Content-Type")
    delimiter = b"--" + boundary.encode("ascii", "replace")
    first = _find_delimiter(message, delimiter, body, body)
    if first < 0:
        raise MalformedMessageError("no part delimiter found", "multipart/signed")
    content_start = _line_end(message, first)
    second = _find_delimiter(message, delimiter, content_start, content_start)
    if second < 0 or message[second + len(delimiter) : second + len(delimiter) + 2] == b"--":
        raise MalformedMessageError("the signature part is missing", "multipart/signed")
    covered = message[content_start : _before_break(message, second, content_start)]
    sig_start = _line_end(message, second)
    close = _find_delimiter(message, delimiter, sig_start, sig_start)
    sig_end = len(message) if close < 0 else _before_break(message, close, sig_start)
    return covered, message[sig_start:sig_end]


def _has_bare_lf(data: bytes) -> bool:
    return data.count(b"\n") != data.count(b"\r\n")


def verify_mime(
    message: bytes, *, extra_certificates: Sequence[x509.Certificate] = ()
) -> tuple[SignedReport, bytes]:
    """Verify a signed S/MIME message; returns the report and the signed entity as covered."""
    headers, body = _split_headers(message)
    kind = _kind(headers)
    if kind is None:
        raise MalformedMessageError(
            f"not a signed S/MIME message ({headers.get_content_type()})", "Content-Type"
        )
    if kind == "opaque":
        der = _decode_cms(message, "application/pkcs7-mime")
        report = verify_signed_data(der, extra_certificates=extra_certificates)
        return report, report.content

    covered, signature_part = _multipart_parts(message, headers, body)
    sig_headers, _ = _split_headers(signature_part)
    if sig_headers.get_content_type() not in _SIGNATURE_TYPES:
        raise MalformedMessageError(
            f"second part is {sig_headers.get_content_type()}, not a PKCS#7 signature",
            "multipart/signed",
        )
    der = _decode_cms(signature_part, "application/pkcs7-signature")
    report = verify_signed_data(
        der, detached_content=covered, extra_certificates=extra_certificates
    )
    if any(s.error == ERR_DIGEST for s in report.signers) and _has_bare_lf(covered):
        # Saved with local (LF) line endings: the signer hashed the CRLF form. Two C-speed
        # replaces instead of a regex: a 20 MB body stays fast.
        canonical = covered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        retry = verify_signed_data(
            der, detached_content=canonical, extra_certificates=extra_certificates
        )
        if retry.valid:
            return retry, canonical
    return report, covered
