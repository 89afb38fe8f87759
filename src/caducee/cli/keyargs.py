"""Key and password options shared by CLI commands (``--inkey``, ``--signer``, ``--passin``)."""

from __future__ import annotations

import os
import pathlib

import click
from cryptography import x509

from caducee.certfiles import load_certificate
from caducee.core.capabilities import Capabilities
from caducee.errors import KeyStoreError, UsageError
from caducee.keys.api import DecryptionKey, SigningKey
from caducee.keys.software import SoftwareKey, load_pkcs12, load_private_key


def read_file(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def password(spec: str | None, prompt: str) -> bytes | None:
    """openssl-style ``--passin``: ``pass:TEXT``, ``file:PATH``, ``env:VAR``; None = no password."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "pass":
        return rest.encode()
    if kind == "file":
        return read_file(rest, "password file").splitlines()[0] if rest else b""
    if kind == "env":
        value = os.environ.get(rest)
        if value is None:
            raise UsageError(f"--passin env:{rest}: the variable is not set")
        return value.encode()
    if kind == "prompt":
        return str(click.prompt(prompt, hide_input=True)).encode()
    raise UsageError("--passin must be pass:TEXT, file:PATH, env:VAR or prompt:")


def _is_pkcs12(data: bytes) -> bool:
    # PFX: SEQUENCE { INTEGER 3, ... }; a PKCS#8 key starts with INTEGER 0, a PEM with text.
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[:8]


def load_signer(
    inkey: str, cert_path: str | None, passin: str | None
) -> tuple[SigningKey, list[x509.Certificate], Capabilities]:
    """The signing key, certificates that came with it, and the capabilities to announce."""
    if inkey.startswith("pkcs11:"):
        from caducee.keys.open import open_key
        from caducee.keys.pkcs11 import card_capabilities

        card_key = open_key(inkey, pin_callback=_pin_prompt, purpose="sign")
        return card_key, [], card_capabilities(card_key)
    key, extra = _software_key(inkey, cert_path, passin, "signer")
    return key, extra, Capabilities()


def load_decryptors(
    inkey: str, cert_path: str | None, passin: str | None, keystore: str | None = None
) -> list[DecryptionKey]:
    """Decryption keys: one for a key file; for a card, every encryption key it holds (history);
    with ``keystore``, first the key sealed in it, opened by the card (keystore mode)."""
    if inkey.startswith("pkcs11:"):
        from caducee.keys.open import open_card, open_key
        from caducee.keys.pkcs11_uri import parse_pkcs11_uri

        uri = parse_pkcs11_uri(inkey)
        if keystore is not None:
            from caducee.keys.keystore import open_keystore_with_card

            card = open_card(inkey, pin_callback=_pin_prompt)
            return [open_keystore_with_card(keystore, card), *card.decryption_keys()]
        if uri.object is None and uri.id is None:
            return list(open_card(inkey, pin_callback=_pin_prompt).decryption_keys())
        return [open_key(inkey, pin_callback=_pin_prompt, purpose="decrypt")]
    if keystore is not None:
        raise UsageError("--keystore goes with --inkey pkcs11:... (the card that opens it)")
    key, _ = _software_key(inkey, cert_path, passin, "recipient")
    return [key]


def _software_key(
    inkey: str, cert_path: str | None, passin: str | None, purpose: str
) -> tuple[SoftwareKey, list[x509.Certificate]]:
    data = read_file(inkey, "key file")
    pw = password(passin, "Key password")
    if _is_pkcs12(data):
        key, cert, extra = load_pkcs12(data, pw)
        if cert_path:
            cert = load_certificate(read_file(cert_path, "certificate"), cert_path)
        return SoftwareKey(key, cert), extra
    if cert_path is None:
        raise UsageError(f"--inkey {inkey}: give the {purpose} certificate too")
    try:
        private = load_private_key(data, pw)
    except KeyStoreError:
        if pw is None and b"ENCRYPTED" in data:
            private = load_private_key(data, password("prompt:", "Key password"))
        else:
            raise
    return SoftwareKey(
        private, load_certificate(read_file(cert_path, "certificate"), cert_path)
    ), []


def _pin_prompt(label: str) -> str:
    return str(click.prompt(f"PIN for {label}", hide_input=True))
