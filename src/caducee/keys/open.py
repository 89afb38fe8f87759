"""Open a card key from a ``pkcs11:`` URI: what ``caducee smime --inkey pkcs11:...`` calls.

The PIN comes, in this order, from the URI's ``pin-value`` (discouraged), its ``pin-source`` file,
the ``CADUCEE_PIN`` environment variable (automation), then ``pin_callback`` (a hidden prompt).
It is handed to the card once and not kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from caducee.errors import UsageError
from caducee.keys.pkcs11 import CardSession, Pkcs11Key, Pkcs11Module, TokenInfo
from caducee.keys.pkcs11_errors import CardKeyNotFoundError
from caducee.keys.pkcs11_uri import Pkcs11Uri, parse_pkcs11_uri

PIN_ENV = "CADUCEE_PIN"

Purpose = Literal["sign", "decrypt"]


def read_pin_file(source: str) -> str:
    """The PIN in a ``pin-source`` (a path or a ``file:`` URI): its first line."""
    path = source
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
        raise UsageError(f"cannot read the PIN file {path}: {reason}") from None
    pin = line.rstrip("\r\n")
    if not pin:
        raise UsageError(f"the PIN file {path} is empty")
    return pin


def resolve_pin(
    uri: Pkcs11Uri,
    token: TokenInfo,
    pin_callback: Callable[[str], str] | None,
) -> str:
    """Find the user PIN for ``token`` without ever echoing it."""
    if uri.pin_value is not None:
        return uri.pin_value
    if uri.pin_source is not None:
        return read_pin_file(uri.pin_source)
    env = os.environ.get(PIN_ENV)
    if env:
        return env
    if pin_callback is not None:
        return pin_callback(f"card {token.label!r}")  # callers prompt "PIN for <this>"
    raise UsageError(
        f"card {token.label!r} needs a PIN: use pin-source in the URI, {PIN_ENV}, or a prompt"
    )


def open_card(
    uri: str | Pkcs11Uri,
    *,
    pin_callback: Callable[[str], str] | None = None,
    module: Pkcs11Module | None = None,
) -> CardSession:
    """A logged-in session on the token the URI names (kept open until ``close()``)."""
    parsed = uri if isinstance(uri, Pkcs11Uri) else parse_pkcs11_uri(uri)
    owns = module is None
    mod = module or Pkcs11Module(parsed.module_path)
    try:
        token = mod.find_token(label=parsed.token, serial=parsed.serial, slot_id=parsed.slot_id)
        pin = resolve_pin(parsed, token, pin_callback)
        return CardSession(mod, token, pin, owns_module=owns, pin_callback=pin_callback)
    except BaseException:
        if owns:
            mod.close()
        raise


def select_key(card: CardSession, uri: Pkcs11Uri, purpose: Purpose | None = None) -> Pkcs11Key:
    """The one key on ``card`` matching the URI's object/id (and ``purpose`` when several do)."""
    if uri.type not in (None, "private", "cert"):
        raise UsageError(f"{uri}: a key URI names a private key or its certificate")
    certs = [
        c
        for c in card.certificates()
        if (uri.id is None or c.id == uri.id) and (uri.object is None or c.label == uri.object)
    ]
    certs = [c for c in certs if card.private_keys(id=c.id)]
    if purpose == "sign" and len(certs) > 1:
        certs = [c for c in certs if c.for_signature] or certs
    elif purpose == "decrypt" and len(certs) > 1:
        certs = [c for c in certs if c.for_encryption and not c.for_signature] or certs
    if not certs:
        raise CardKeyNotFoundError(
            f"no private key with its certificate on card {card.token.label!r} matches {uri}"
        )
    if len(certs) > 1 and purpose is None:
        labels = ", ".join(sorted({repr(c.label) for c in certs}))
        raise CardKeyNotFoundError(
            f"{uri} matches {len(certs)} keys ({labels}): add object= or id= to the URI"
        )
    return card.key_for(certs[0])  # certificates() is newest first


def open_key(
    uri: str,
    *,
    pin_callback: Callable[[str], str] | None = None,
    purpose: Purpose | None = None,
    module: Pkcs11Module | None = None,
) -> Pkcs11Key:
    """Open the card key named by ``uri``; the session stays logged in while the key is used
    (``key.card.close()`` ends it)."""
    parsed = parse_pkcs11_uri(uri)
    card = open_card(parsed, pin_callback=pin_callback, module=module)
    try:
        return select_key(card, parsed, purpose)
    except BaseException:
        card.close()
        raise
