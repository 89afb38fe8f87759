"""PEM armour for CMS (RFC 7468 label ``CMS``; ``PKCS7`` accepted on input, as openssl writes)."""

from __future__ import annotations

import base64
import binascii
import re

from caducee.errors import MalformedMessageError

_PEM = re.compile(rb"-----BEGIN (CMS|PKCS7)-----(.*?)-----END \1-----", re.S)


def encode(der: bytes, label: str = "CMS") -> bytes:
    b64 = base64.encodebytes(der)  # 76-column lines
    return b"-----BEGIN %s-----\n%s-----END %s-----\n" % (label.encode(), b64, label.encode())


def decode(data: bytes) -> bytes:
    match = _PEM.search(data)
    if match is None:
        raise MalformedMessageError("no -----BEGIN CMS----- or PKCS7 block", "PEM")
    try:
        return base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except binascii.Error:
        raise MalformedMessageError("bad base64 in the PEM block", "PEM") from None
