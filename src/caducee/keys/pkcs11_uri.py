"""RFC 7512 ``pkcs11:`` URIs: how a user names a card key in configuration and on the command line.

Only the attributes caducee uses are kept; unknown path attributes are refused so a typo does not
silently match another key, and unknown query attributes are ignored as RFC 7512 §2.3 allows.
The PIN given by ``pin-value`` is kept out of ``repr``.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote, unquote_to_bytes

from caducee.errors import UsageError

_PATH_ATTRS = {
    "token",
    "manufacturer",
    "serial",
    "model",
    "object",
    "type",
    "id",
    "slot-id",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-description",
    "slot-manufacturer",
}
_TYPES = {"cert", "data", "private", "public", "secret-key"}


class Pkcs11UriError(UsageError):
    """The ``pkcs11:`` URI is malformed."""


@dataclasses.dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of a ``pkcs11:`` URI caducee acts on."""

    token: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    object: str | None = None
    type: str | None = None
    id: bytes | None = None
    slot_id: int | None = None
    module_path: str | None = None
    module_name: str | None = None
    pin_source: str | None = None
    pin_value: str | None = dataclasses.field(default=None, repr=False)

    def __str__(self) -> str:
        """The URI back, without any ``pin-value`` (safe to print in messages)."""
        path: list[str] = []
        for name, value in (
            ("token", self.token),
            ("manufacturer", self.manufacturer),
            ("serial", self.serial),
            ("model", self.model),
            ("object", self.object),
            ("type", self.type),
        ):
            if value is not None:
                path.append(f"{name}={quote(value, safe='')}")
        if self.id is not None:
            path.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        if self.slot_id is not None:
            path.append(f"slot-id={self.slot_id}")
        query = [
            f"{name}={quote(value, safe='/:')}"
            for name, value in (
                ("module-path", self.module_path),
                ("module-name", self.module_name),
                ("pin-source", self.pin_source),
            )
            if value is not None
        ]
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")


def _text(raw: str, name: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Pkcs11UriError(f"pkcs11 URI: attribute {name} is not UTF-8") from None


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse ``uri``; raise :class:`Pkcs11UriError` naming the offending part."""
    if not uri.lower().startswith("pkcs11:"):
        raise Pkcs11UriError("not a pkcs11 URI (it must start with 'pkcs11:')")
    rest = uri[len("pkcs11:") :]
    path, _, query = rest.partition("?")
    values: dict[str, object] = {}
    for part in filter(None, path.split(";")):
        name, sep, raw = part.partition("=")
        name = name.lower()
        if not sep:
            raise Pkcs11UriError(f"pkcs11 URI: path attribute {name!r} has no value")
        if name not in _PATH_ATTRS:
            raise Pkcs11UriError(f"pkcs11 URI: unknown path attribute {name!r}")
        if name in values:
            raise Pkcs11UriError(f"pkcs11 URI: attribute {name!r} given twice")
        if name == "id":
            values["id"] = unquote_to_bytes(raw)
        elif name == "slot-id":
            if not raw.isdigit():
                raise Pkcs11UriError("pkcs11 URI: slot-id must be a decimal number")
            values["slot_id"] = int(raw)
        elif name == "type":
            kind = _text(raw, name)
            if kind not in _TYPES:
                raise Pkcs11UriError(f"pkcs11 URI: unknown object type {kind!r}")
            values["type"] = kind
        elif name in ("token", "serial", "manufacturer", "model", "object"):
            values[name] = _text(raw, name)
        # other standard path attributes (library-*, slot-*) are accepted and not used
    for part in filter(None, query.split("&")):
        name, sep, raw = part.partition("=")
        name = name.lower()
        key = {
            "module-path": "module_path",
            "module-name": "module_name",
            "pin-source": "pin_source",
            "pin-value": "pin_value",
        }.get(name)
        if key is None:
            continue  # RFC 7512 §2.3: unknown query attributes may be ignored
        if key in values:
            raise Pkcs11UriError(f"pkcs11 URI: attribute {name!r} given twice")
        values[key] = _text(raw, name)
    if "pin_value" in values and "pin_source" in values:
        raise Pkcs11UriError("pkcs11 URI: give pin-source or pin-value, not both")
    return Pkcs11Uri(**values)  # type: ignore[arg-type]
