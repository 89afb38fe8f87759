"""PEM armour for CMS (RFC 7468 label ``CMS``).

On input we also take what other tools write: ``PKCS7`` (openssl) and gpgsm's ``--armor``
labels ``SIGNED MESSAGE`` and ``ENCRYPTED MESSAGE`` (same base64 of the DER ContentInfo).
"""

from __future__ import annotations

import base64
import binascii
import re

from caducee.errors import MalformedMessageError

LABELS = ("CMS", "PKCS7", "SIGNED MESSAGE", "ENCRYPTED MESSAGE")
_PEM = re.compile(
    rb"-----BEGIN (" + b"|".join(label.encode() for label in LABELS) + rb")-----"
    rb"(.*?)-----END \1-----",
    re.S,
)


def encode(der: bytes, label: str = "CMS") -> bytes:
    b64 = base64.encodebytes(der)  # 76-column lines
    return b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label.encode(), b64, label.encode())


def looks_armoured(data: bytes) -> bool:
    """Whether ``data`` starts (after blank space) with one of the PEM blocks we read."""
    head = data[:256].lstrip()
    return any(head.startswith(b"-----BEGIN %s-----" % label.encode()) for label in LABELS)


def decode(data: bytes) -> bytes:
    match = _PEM.search(data)
    if match is None:
        raise MalformedMessageError(
            "no -----BEGIN CMS----- block (nor PKCS7, SIGNED MESSAGE, ENCRYPTED MESSAGE)", "PEM"
        )
    body = match.group(2)
    # RFC 1421-style header lines ("Name: value") before a blank line are not base64.
    lines = [line.strip() for line in body.strip().splitlines()]
    if any(b":" in line for line in lines):
        blank = lines.index(b"") if b"" in lines else -1
        lines = lines[blank + 1 :] if blank >= 0 else [x for x in lines if b":" not in x]
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except binascii.Error:
        raise MalformedMessageError("bad base64 in the PEM block", "PEM") from None
