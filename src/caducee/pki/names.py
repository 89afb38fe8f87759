"""What the CA accepts in the names and URLs it writes into certificates.

Checked before anything is signed or stored, so that a bad value is a one-line error naming the
field and the limit rather than an exception from the X.509 encoder (or a value the directory
refuses after the certificate exists). Upper bounds are those of RFC 5280 appendix A
(``ub-common-name`` 64, ``ub-organization-name`` 64, ``ub-title`` 64, ``ub-serial-number`` 64);
``givenName`` and ``surname`` have no small bound of their own but end up in the common name.
"""

from __future__ import annotations

import unicodedata
import urllib.parse

from caducee.errors import UsageError

UB_COMMON_NAME = 64
UB_ORGANIZATION_NAME = 64
UB_TITLE = 64
UB_NAME = 64  # given name and surname: each must also fit the 64-character common name
UB_EMAIL = 254  # RFC 5321 path limit
UB_URL = 2048

#: Unicode categories refused anywhere in a name: controls (newline, tab, NUL...), format
#: characters (invisible: zero-width joiners, bidi overrides), surrogates, private use,
#: unassigned, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def bad_character(value: str) -> str | None:
    """The first character of ``value`` a certificate name must not hold, as U+XXXX, or None."""
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return f"U+{ord(ch):04X}"
    return None


def check_text(label: str, value: str, limit: int) -> str:
    """``value`` if it is a non-empty printable string of at most ``limit`` characters."""
    if not value.strip():
        raise UsageError(f"{label} is empty")
    bad = bad_character(value)
    if bad is not None:
        raise UsageError(f"{label} contains a control or invisible character ({bad})")
    if value != value.strip():
        raise UsageError(f"{label} {value[:40]!r} has leading or trailing spaces")
    if len(value) > limit:
        raise UsageError(f"{label} is {len(value)} characters long; X.509 allows at most {limit}")
    return value


def check_country(value: str, label: str = "country") -> str:
    if len(value) != 2 or not value.isascii() or not value.isalpha():
        raise UsageError(f"{label} {value[:10]!r} must be a two-letter ISO 3166 code (e.g. FR)")
    return value.upper()


def check_http_url(label: str, value: str) -> str:
    """An absolute http(s) URL with a host (where relying parties fetch CRLs, certificates)."""
    bad = bad_character(value)
    if bad is not None or any(c.isspace() for c in value):
        raise UsageError(f"{label} {value[:60]!r} contains spaces or control characters")
    if len(value) > UB_URL:
        raise UsageError(f"{label} is {len(value)} characters long; at most {UB_URL}")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UsageError(f"{label} {value[:60]!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{label} {value[:60]!r} is not an http:// or https:// URL with a host")
    return value


def check_days(label: str, value: int) -> int:
    if value < 1:
        raise UsageError(f"{label} must be a positive number of days, got {value}")
    if value > 100 * 365:
        raise UsageError(f"{label} {value} is more than 100 years")
    return value
