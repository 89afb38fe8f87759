"""Key and password options shared by CLI commands (``--inkey``, ``--signer``, ``--passin``),
and the one place the CLI asks for a secret (a card PIN, a key password).

A secret is asked only on a terminal. With no terminal (a pipe, cron, a service) the message may
be on stdin: reading a PIN there would send the first line of the mail to the card as a PIN and
eat the message, so the command refuses in one line and says where a PIN can come from.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import pathlib
import sys
import warnings
from typing import TYPE_CHECKING

import click
from cryptography import x509

from caducee.certfiles import load_certificate
from caducee.core.capabilities import Capabilities
from caducee.errors import KeyStoreError, UsageError
from caducee.keys.api import DecryptionKey, SigningKey
from caducee.keys.pkcs11_uri import Pkcs11Uri, parse_pkcs11_uri
from caducee.keys.software import SoftwareKey, load_pkcs12, load_private_key

if TYPE_CHECKING:
    from caducee.keys.pkcs11 import CardSession

#: Help for ``--inkey`` (commands that take a key).
INKEY_HELP = (
    "Key: PEM/DER, PKCS#12, or a pkcs11: URI (card). The card PIN comes from --passin, "
    "pin-source=file:PATH in the URI, $CADUCEE_PIN, else a prompt on the terminal."
)
#: Help for ``--passin``.
PASSIN_HELP = (
    "Key password, or the card PIN with a pkcs11: key: pass:TEXT, file:PATH, env:VAR, fd:N, "
    "prompt: (default for a card: pin-source in the URI, then $CADUCEE_PIN, then a prompt)."
)

PIN_HINT_URI = "set CADUCEE_PIN, give --passin, or add pin-source=file:PATH to the key URI"
PASSWORD_HINT = "give --passin (pass:, file:, env: or fd:)"  # noqa: S105 (help text)


class NoTerminalError(UsageError):
    """A secret is needed and there is no terminal to ask for it on."""


def _embedded() -> bool:
    """Whether prompts are answered by whoever embeds the CLI (click's test runner does)."""
    return getattr(click.termui.hidden_prompt_func, "__module__", "click.termui") != "click.termui"


def terminal_available() -> bool:
    """Whether a hidden prompt can be answered by a person (never by reading piped stdin)."""
    if _embedded() or (sys.stdin is not None and sys.stdin.isatty()):
        return True
    try:  # getpass asks on the controlling terminal, even when stdin is a pipe
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _read_hidden(prompt: str) -> str:
    # The prompt goes to the terminal itself, not stdout/stderr (they may be the output file).
    with warnings.catch_warnings():
        # getpass falling back to stdin warns before it reads: refuse instead of reading.
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(f"{prompt}: ")
        except EOFError:
            raise click.Abort from None


def ask_secret(prompt: str, *, needed_for: str, hint: str, confirm: bool = False) -> str:
    """A hidden prompt on the terminal; with no terminal, :class:`NoTerminalError`
    "<needed_for>: no terminal to ask on; <hint>" (stdin is never read for a secret)."""
    refusal = f"{needed_for}: no terminal to ask on; {hint}"
    if _embedded():
        return str(click.prompt(prompt, hide_input=True, err=True, confirmation_prompt=confirm))
    if not terminal_available():
        raise NoTerminalError(refusal)
    try:
        for _ in range(3):
            answer = _read_hidden(prompt)
            if not confirm or _read_hidden("Repeat for confirmation") == answer:
                return answer
            click.echo("the two entries differ: again", err=True)
    except getpass.GetPassWarning:
        raise NoTerminalError(refusal) from None
    raise UsageError(f"{needed_for}: the two entries differed three times")


def card_pin_prompt(label: str, hint: str = PIN_HINT_URI) -> str:
    """The PIN for ``label`` (e.g. "card 'dr-martin'"), asked on the terminal only."""
    return ask_secret(f"PIN for {label}", needed_for=f"a PIN is needed for {label}", hint=hint)


def read_file(path: str, what: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _first_line(data: bytes) -> bytes:
    lines = data.splitlines()
    return lines[0] if lines else b""


def _read_fd(text: str) -> bytes:
    if not text.isdigit():
        raise UsageError(f"--passin fd:{text}: not a file descriptor number")
    data = b""
    try:
        while b"\n" not in data:
            chunk = os.read(int(text), 256)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise UsageError(f"--passin fd:{text}: cannot read ({exc.strerror})") from None
    return _first_line(data)


def password(spec: str | None, prompt: str) -> bytes | None:
    """openssl-style ``--passin``: ``pass:TEXT``, ``file:PATH``, ``env:VAR``, ``fd:N``,
    ``prompt:``; None = no password."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "pass":
        return rest.encode()
    if kind == "file":
        return _first_line(read_file(rest, "password file")) if rest else b""
    if kind == "env":
        value = os.environ.get(rest)
        if value is None:
            raise UsageError(f"--passin env:{rest}: the variable is not set")
        return value.encode()
    if kind == "fd":
        return _read_fd(rest)
    if kind == "prompt":
        needed = f"a password is needed ({prompt})"
        return ask_secret(prompt, needed_for=needed, hint=PASSWORD_HINT).encode()
    raise UsageError("--passin must be pass:TEXT, file:PATH, env:VAR, fd:N or prompt:")


def _is_pkcs12(data: bytes) -> bool:
    # PFX: SEQUENCE { INTEGER 3, ... }; a PKCS#8 key starts with INTEGER 0, a PEM with text.
    return data[:1] == b"\x30" and b"\x02\x01\x03" in data[:8]


def _card_uri(inkey: str, passin: str | None) -> Pkcs11Uri:
    """The parsed card URI; a ``--passin`` PIN replaces the URI's own PIN source."""
    uri = parse_pkcs11_uri(inkey)
    if passin is None:
        return uri
    pin = password(passin, "PIN for the card")
    assert pin is not None
    try:
        text = pin.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("--passin: the card PIN is not UTF-8 text") from None
    if not text:
        raise UsageError("--passin: the card PIN is empty")
    return dataclasses.replace(uri, pin_value=text, pin_source=None)


def _usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _signs(cert: x509.Certificate) -> bool:
    ku = _usage(cert)
    return ku is None or ku.digital_signature or ku.content_commitment


def _decrypts(cert: x509.Certificate) -> bool:
    ku = _usage(cert)
    return ku is None or ku.key_encipherment or ku.key_agreement


def load_signer(
    inkey: str, cert_path: str | None, passin: str | None
) -> tuple[SigningKey, list[x509.Certificate], Capabilities]:
    """The signing key, certificates that came with it, and the capabilities to announce."""
    if inkey.startswith("pkcs11:"):
        from caducee.keys.open import open_card, select_key
        from caducee.keys.pkcs11 import card_capabilities

        uri = _card_uri(inkey, passin)
        given = (
            load_certificate(read_file(cert_path, "certificate"), cert_path) if cert_path else None
        )
        card = open_card(uri, pin_callback=card_pin_prompt)
        try:
            card_key = select_key(card, uri, purpose="sign")
            _check_card_signer(card, card_key.label, card_key.certificate, given, cert_path)
        except BaseException:
            card.close()
            raise
        return card_key, [], card_capabilities(card_key)
    key, extra = _software_key(inkey, cert_path, passin, "signer")
    return key, extra, Capabilities()


def _check_card_signer(
    card: CardSession,
    label: str,
    cert: x509.Certificate,
    given: x509.Certificate | None,
    cert_path: str | None,
) -> None:
    """Refuse a card key that is not for signing, and a --signer that is not the card's."""
    from caducee.card.names import readable_name

    if not _signs(cert):
        try:
            other = f"object={card.signing_key().label}"
        except KeyStoreError:
            other = "the card's signature key"
        raise UsageError(f"the card's {label!r} key is not for signing: use {other} in the key URI")
    if given is not None and given != cert:
        raise UsageError(
            f"--signer {cert_path} is not the certificate of the card key {label!r} "
            f"({readable_name(cert.subject)}): leave --signer out, the card's own is used"
        )


def load_decryptors(
    inkey: str, cert_path: str | None, passin: str | None, keystore: str | None = None
) -> list[DecryptionKey]:
    """Decryption keys: one for a key file; for a card, every encryption key it holds (history);
    with ``keystore``, first the key sealed in it, opened by the card (keystore mode)."""
    if inkey.startswith("pkcs11:"):
        from caducee.keys.open import open_card, select_key

        uri = _card_uri(inkey, passin)
        if keystore is not None:
            from caducee.keys.keystore import open_keystore_with_card

            card = open_card(uri, pin_callback=card_pin_prompt)
            return [open_keystore_with_card(keystore, card), *card.decryption_keys()]
        card = open_card(uri, pin_callback=card_pin_prompt)
        if uri.object is None and uri.id is None:
            return list(card.decryption_keys())
        try:
            key = select_key(card, uri, purpose="decrypt")
            if not _decrypts(key.certificate):
                raise UsageError(
                    f"the card's {key.label!r} key is not for decryption: name the encryption "
                    "key with object= in the key URI, or no object to try every one"
                )
        except BaseException:
            card.close()
            raise
        return [key]
    if keystore is not None:
        raise UsageError("--keystore goes with --inkey pkcs11:... (the card that opens it)")
    software, _ = _software_key(inkey, cert_path, passin, "recipient")
    return [software]


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
            secret = ask_secret(
                "Key password",
                needed_for=f"the key {inkey} is encrypted",
                hint=PASSWORD_HINT,
            )
            private = load_private_key(data, secret.encode())
        else:
            raise
    return SoftwareKey(
        private, load_certificate(read_file(cert_path, "certificate"), cert_path)
    ), []
