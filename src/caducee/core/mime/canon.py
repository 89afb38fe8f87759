"""Canonical MIME form (RFC 8551 §3.1.1): CRLF line endings, what signatures are computed over."""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


def to_crlf(data: bytes) -> bytes:
    """Turn every bare LF into CRLF; a text already in CRLF is returned unchanged (no copy)."""
    if b"\n" not in data:
        return data
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def to_lf(data: bytes) -> bytes:
    """The local (LF) form, for writing to files and pipes as openssl does on Unix."""
    return data.replace(b"\r\n", b"\n")
