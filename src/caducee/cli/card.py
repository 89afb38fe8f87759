"""``caducee card``: issue, inspect and manage the professional's PKCS#11 card.

PINs are read from a hidden prompt, or for automation from a file (``--pin-source``) or an
environment variable (``CADUCEE_PIN``, ``CADUCEE_SO_PIN``, ``CADUCEE_NEW_PIN``). They are never
echoed, logged or written anywhere.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee import devpki
from caducee.card import (
    card_status,
    change_pin,
    issue_card,
    keystore_state,
    list_cards,
    unblock_pin,
)
from caducee.card.devissuer import devpki_issuer, load_test_ca
from caducee.card.issue import CertificateIssuer, IssuedCard, check_keystore_target
from caducee.card.names import readable_name
from caducee.cli.keyargs import ask_secret, read_file
from caducee.errors import ConfigError, UsageError
from caducee.keys.open import read_pin_file
from caducee.keys.pkcs11 import Pkcs11Module, TokenInfo, default_module_path

if TYPE_CHECKING:
    from caducee.card.renew import RenewedCard
    from caducee.directory.api import Directory
    from caducee.pki import CertificateAuthority, ProfessionalIdentity

F = TypeVar("F", bound=Callable[..., Any])

KINDS = click.Choice(["rsa2048", "rsa3072", "p256", "p384"])
MODES = click.Choice(["card", "keystore"])


@click.group("card")
def group() -> None:
    """Issue and manage the professional's smart card (PKCS#11)."""


def _module_option(func: F) -> F:
    return click.option(
        "--module",
        "module_path",
        metavar="PATH",
        help="PKCS#11 module (default: $CADUCEE_PKCS11_MODULE, else SoftHSM2).",
    )(func)


def _token_option(func: F) -> F:
    return click.option(
        "--token", "label", metavar="LABEL", help="Card label (needed when several are present)."
    )(func)


#: The option that gives each environment variable's PIN from a file.
_SOURCE_OPTION = {
    "CADUCEE_PIN": "--pin-source",
    "CADUCEE_SO_PIN": "--so-pin-source",
    "CADUCEE_NEW_PIN": "--new-pin-source",
}


def _pin(source: str | None, env: str, prompt: str, *, confirm: bool = False) -> str:
    """A PIN from ``--...-pin-source``, then ``$env``, then a hidden prompt on the terminal
    (never from piped stdin: with no terminal, a one-line refusal naming both other ways)."""
    if source:
        return read_pin_file(source)
    value = os.environ.get(env)
    if value:
        return value
    return ask_secret(
        prompt,
        needed_for=f"{prompt} needed",
        hint=f"set {env} or use {_SOURCE_OPTION.get(env, '--pin-source')} FILE",
        confirm=confirm,
    )


def _open_module(path: str | None) -> Pkcs11Module:
    return Pkcs11Module(path or default_module_path())


def _token(module: Pkcs11Module, label: str | None) -> TokenInfo:
    return module.find_token(label=label, how_to_name="name one with --token LABEL")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- list / status --------------------------------------------------------------------------


@group.command("list")
@_module_option
def list_command(module_path: str | None) -> None:
    """List the cards present in the readers."""
    with _open_module(module_path) as module:
        cards = list_cards(module)
        if not cards:
            click.echo(f"no card in {module.path}")
            return
        for token in cards:
            maker = " ".join(filter(None, (token.manufacturer, token.model)))
            click.echo(f"{token.label}\tserial {token.serial}\t{maker}\tslot {token.slot}")


@group.command("status")
@_module_option
@_token_option
@click.option("--keys", "with_keys", is_flag=True, help="Also list private keys (asks the PIN).")
@click.option("--pin-source", metavar="FILE", help="Read the PIN from FILE (with --keys).")
@click.option(
    "--keystore",
    "keystore_path",
    metavar="FILE",
    help="Keystore to report on (default: the configuration's, in keystore mode).",
)
@click.option("--config", "config_path", metavar="PATH", help="Configuration file to read.")
def status_command(
    module_path: str | None,
    label: str | None,
    with_keys: bool,
    pin_source: str | None,
    keystore_path: str | None = None,
    config_path: str | None = None,
) -> None:
    """Show the holder, key and certificate objects, validity and PIN state of a card, and the
    state of its keystore in keystore mode."""
    keystore_path = keystore_path or _configured_keystore(config_path)
    with _open_module(module_path) as module:
        token = _token(module, label)
        pin = (
            _pin(pin_source, "CADUCEE_PIN", f"PIN for card {token.label!r}") if with_keys else None
        )
        now = _now()
        status = card_status(module, token, at=now, pin=pin)
        del pin
        keystore = keystore_state(module, token, keystore_path) if keystore_path else None
    t = status.token
    click.echo(f"card:    {t.label} (serial {t.serial}, {t.manufacturer} {t.model})")
    click.echo(f"holder:  {status.holder or 'unknown (no certificate on the card)'}")
    click.echo(f"PIN:     {status.pin.describe()}")
    if status.encryption_mode == "keystore":
        click.echo("mode:    keystore (encryption key in a local keystore the card opens)")
    else:
        click.echo("mode:    card (encryption key on the card)")
    if keystore is not None:
        click.echo(f"keystore: {keystore.describe()}")
    for obj in status.objects:
        if obj.kind == "certificate":
            state = "valid" if obj.valid else "NOT valid now"
            until = obj.not_after.date().isoformat() if obj.not_after else "?"
            click.echo(
                f"cert     {obj.label:<11} {obj.purpose:<10} until {until} ({state})  "
                f"id {obj.id[:16]}  {obj.subject}"
            )
        else:
            origin = "generated on card" if obj.generated_on_card else "imported"
            guard = "non-extractable" if obj.sensitive and not obj.extractable else "EXTRACTABLE"
            click.echo(f"key      {obj.label:<11} {origin}, {guard}  id {obj.id[:16]}")
    _echo_renewal(status.objects, now)
    if not status.keys_listed:
        click.echo("(private keys not listed: use --keys and give the PIN)")


def _echo_renewal(objects: tuple[Any, ...], now: dt.datetime) -> None:
    """When the certificates in use end, and whether renewal is due (objects are newest
    first: the first certificate of a purpose is the one in use)."""
    from caducee.card.renew import renewal_notice

    for purpose in ("signature", "encryption"):
        for obj in objects:
            if obj.kind == "certificate" and obj.purpose == purpose and obj.not_after:
                click.echo(f"renewal: {renewal_notice(purpose, obj.not_after, now)}")
                break


def _configured_keystore(config_path: str | None) -> str | None:
    """The keystore of the configuration (``--config``, else the default file if present)."""
    from caducee.config import default_config_path, load_config

    if config_path is None and not default_config_path().exists():
        return None
    try:
        config = load_config(config_path)
    except ConfigError:
        if config_path is not None:
            raise
        return None  # status is about the card: a broken default configuration is not its issue
    keystore = config.identity.keystore
    return str(keystore) if config.identity.encryption_key == "keystore" and keystore else None


# -- PIN management -------------------------------------------------------------------------


@group.command("change-pin")
@_module_option
@_token_option
@click.option("--pin-source", metavar="FILE", help="Read the current PIN from FILE.")
@click.option("--new-pin-source", metavar="FILE", help="Read the new PIN from FILE.")
def change_pin_command(
    module_path: str | None, label: str | None, pin_source: str | None, new_pin_source: str | None
) -> None:
    """Change the card's PIN (the current one is needed)."""
    with _open_module(module_path) as module:
        token = _token(module, label)
        old = _pin(pin_source, "CADUCEE_PIN", f"Current PIN for card {token.label!r}")
        new = _pin(new_pin_source, "CADUCEE_NEW_PIN", "New PIN", confirm=True)
        change_pin(module, token, old, new)
        del old, new
    click.echo(f"PIN of card {token.label!r} changed")


@group.command("unblock")
@_module_option
@_token_option
@click.option("--so-pin-source", metavar="FILE", help="Read the SO PIN (PUK) from FILE.")
@click.option("--new-pin-source", metavar="FILE", help="Read the new PIN from FILE.")
def unblock_command(
    module_path: str | None,
    label: str | None,
    so_pin_source: str | None,
    new_pin_source: str | None,
) -> None:
    """Unblock a locked card with the SO PIN (PUK) and set a new PIN."""
    with _open_module(module_path) as module:
        token = _token(module, label)
        so_pin = _pin(so_pin_source, "CADUCEE_SO_PIN", f"SO PIN (PUK) for card {token.label!r}")
        new = _pin(new_pin_source, "CADUCEE_NEW_PIN", "New PIN", confirm=True)
        unblock_pin(module, token, so_pin, new)
        del so_pin, new
    click.echo(f"card {token.label!r} unblocked with a new PIN")


@group.command("unblock-keystore")
@_module_option
@_token_option
@click.option("--keystore", "keystore_path", required=True, metavar="FILE", help="The keystore.")
@click.option("--so-pin-source", metavar="FILE", help="Read the SO PIN (PUK) from FILE.")
def unblock_keystore_command(
    module_path: str | None, label: str | None, keystore_path: str, so_pin_source: str | None
) -> None:
    """Unlock a keystore locked by 3 failed openings: the card's SO PIN (PUK) is needed."""
    from caducee.keys.keystore import unblock_keystore

    with _open_module(module_path) as module:
        token = _token(module, label)
        so_pin = _pin(so_pin_source, "CADUCEE_SO_PIN", f"SO PIN (PUK) for card {token.label!r}")
        unblock_keystore(keystore_path, module, token, so_pin)
        del so_pin
    click.echo(f"keystore {keystore_path} unblocked")


# -- issuance -------------------------------------------------------------------------------


SIGNATURE_FILE = "signature.pem"
ENCRYPTION_FILE = "encryption.pem"


def _check_cert_dir(cert_out: str | None) -> None:
    """Refuse an unusable --cert-out before any PIN is asked, the CA opened or the card touched:
    a failure after issuance leaves an initialised card and two certificates nobody holds."""
    if cert_out is None:
        return
    out = pathlib.Path(cert_out)
    if not out.is_dir():
        what = "not a directory" if out.exists() else "no such directory (create it first)"
        raise UsageError(f"--cert-out {out}: {what}")
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--cert-out {out}: directory not writable")


def _check_cert_files(cert_out: str | None, ca_file: str, overwrite: bool) -> None:
    """The certificate files --cert-out will hold: not there yet, unless --overwrite."""
    _check_out_files(cert_out, (SIGNATURE_FILE, ENCRYPTION_FILE, ca_file), overwrite)


def _write_public(path: pathlib.Path, data: bytes, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise UsageError(f"cannot write {path}: it appeared meanwhile; not overwritten") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@group.command("issue")
@_module_option
@click.option("--token", "label", required=True, metavar="LABEL", help="Label for the new card.")
@click.option("--email", required=True, help="The holder's e-mail address.")
@click.option("--name", help="The holder's name (certificate common name).")
@click.option("--kind", type=KINDS, default="rsa2048", show_default=True, help="Key type.")
@click.option("--ca", "ca_dir", metavar="DIR", help="Operator CA directory: real certificates.")
@click.option("--ca-pass-source", metavar="FILE", help="CA key passphrase (else CADUCEE_CA_PASS).")
@click.option("--given-name", help="Holder's given name (with --ca).")
@click.option("--surname", help="Holder's surname (with --ca).")
@click.option("--professional-id", help="National professional identifier, 11 digits (with --ca).")
@click.option("--profession", help="Profession, e.g. 'General practitioner' (with --ca).")
@click.option("--organisation", help="Practice or hospital (with --ca).")
@click.option("--ca-cert", metavar="FILE", help="TEST CA certificate (PEM).")
@click.option("--ca-key", metavar="FILE", help="TEST CA private key (PEM, unencrypted).")
@click.option(
    "--cert-out",
    metavar="DIR",
    help="Write signature.pem, encryption.pem and the CA certificate (ca.pem with --ca, "
    "else test-ca.pem) to DIR, an existing directory; checked before the card is touched.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace certificate files already in the --cert-out DIR."
)
@click.option("--so-pin-source", metavar="FILE", help="Read the new SO PIN (PUK) from FILE.")
@click.option("--pin-source", metavar="FILE", help="Read the new user PIN from FILE.")
@click.option(
    "--encryption-key",
    "encryption_mode",
    type=MODES,
    default="card",
    show_default=True,
    help="Where the encryption key lives: on the card, or in a keystore the card opens.",
)
@click.option(
    "--keystore",
    "keystore_path",
    metavar="FILE",
    help="Keystore file to create (--encryption-key keystore; default DIR/keystore.json "
    "with --cert-out DIR).",
)
def issue_command(
    module_path: str | None,
    label: str,
    email: str,
    name: str | None,
    kind: str,
    ca_cert: str | None,
    ca_key: str | None,
    cert_out: str | None,
    so_pin_source: str | None,
    pin_source: str | None,
    ca_dir: str | None = None,
    ca_pass_source: str | None = None,
    given_name: str | None = None,
    surname: str | None = None,
    professional_id: str | None = None,
    profession: str | None = None,
    organisation: str | None = None,
    encryption_mode: str = "card",
    keystore_path: str | None = None,
    overwrite: bool = False,
) -> None:
    """Initialise a blank card with a signature key pair and a separate encryption key pair.

    With --ca, the operator's certification authority issues both certificates for the holder's
    professional identity. Without it, TEST certificates come from --ca-cert/--ca-key or from a
    throw-away TEST CA (see --cert-out). With --encryption-key keystore, the encryption key is
    sealed in a keystore file that only this card opens (the card holds the signature key and
    the keystore's access key).
    """
    if (ca_cert is None) != (ca_key is None):
        raise UsageError("give both --ca-cert and --ca-key, or neither")
    _check_cert_dir(cert_out)
    keystore = _keystore_target(encryption_mode, keystore_path, cert_out)
    _check_cert_files(cert_out, "ca.pem" if ca_dir is not None else "test-ca.pem", overwrite)
    if ca_dir is not None:
        if ca_cert:
            raise UsageError("give --ca or --ca-cert/--ca-key, not both")
        _issue_from_operator(
            module_path, label, kind, cert_out, so_pin_source, pin_source, ca_dir,
            ca_pass_source, email, given_name, surname, professional_id, profession,
            organisation, keystore=keystore, overwrite=overwrite,
        )  # fmt: skip
        return
    if ca_cert and ca_key:
        ca = load_test_ca(read_file(ca_cert, "CA certificate"), read_file(ca_key, "CA key"))
    else:
        ca = devpki.make_ca("caducee throw-away card CA")
    issued = _issue(
        module_path, label, kind, keystore, so_pin_source, pin_source, cert_out, email,
        issuer=lambda _module: devpki_issuer(ca, email, name),
        ca_certificate=ca.certificate, ca_file="test-ca.pem", overwrite=overwrite,
    )  # fmt: skip
    click.echo("certificates are TEST certificates - not for production")
    if not ca_cert:
        kept = f"its certificate is in {cert_out}/test-ca.pem" if cert_out else "not kept"
        click.echo(f"issued by a throw-away TEST CA ({kept})")
    _echo_escrow(issued)


def _issue(
    module_path: str | None,
    label: str,
    kind: str,
    keystore: pathlib.Path | None,
    so_pin_source: str | None,
    pin_source: str | None,
    cert_out: str | None,
    email: str,
    *,
    issuer: Callable[[Pkcs11Module], CertificateIssuer],
    ca_certificate: x509.Certificate,
    ca_file: str,
    overwrite: bool = False,
) -> IssuedCard:
    """Ask the new PINs, initialise the card, put its keys and certificates on it, report."""
    so_pin = _pin(so_pin_source, "CADUCEE_SO_PIN", "New SO PIN (PUK)", confirm=True)
    user_pin = _pin(pin_source, "CADUCEE_PIN", "New PIN", confirm=True)
    with _open_module(module_path) as module:
        issued = issue_card(
            module,
            label=label,
            so_pin=so_pin,
            user_pin=user_pin,
            issuer=issuer(module),
            kind=kind,  # type: ignore[arg-type]
            **_mode_arguments(keystore),
        )
    del so_pin, user_pin
    pem = serialization.Encoding.PEM
    if cert_out:
        out = pathlib.Path(cert_out)
        sig, enc = issued.signature_certificate, issued.encryption_certificate
        _write_public(out / SIGNATURE_FILE, sig.public_bytes(pem), overwrite)
        _write_public(out / ENCRYPTION_FILE, enc.public_bytes(pem), overwrite)
        _write_public(out / ca_file, ca_certificate.public_bytes(pem), overwrite)
    click.echo(f"card {label!r} issued for {email} (serial {issued.token.serial})")
    _echo_keys(issued)
    return issued


def _keystore_target(mode: str, path: str | None, cert_out: str | None) -> pathlib.Path | None:
    """The keystore file to create, checked before any PIN is asked or the card touched."""
    if mode != "keystore":
        if path is not None:
            raise UsageError("--keystore goes with --encryption-key keystore")
        return None
    if path is None:
        if cert_out is None:
            raise UsageError("--encryption-key keystore: give --keystore FILE (or --cert-out DIR)")
        path = str(pathlib.Path(cert_out) / "keystore.json")
    return check_keystore_target(path)


def _mode_arguments(keystore: pathlib.Path | None) -> dict[str, Any]:
    if keystore is None:
        return {}
    return {"encryption_key": "keystore", "keystore": keystore}


def _echo_keys(issued: IssuedCard) -> None:
    if issued.keystore is None:
        click.echo("signature key generated on the card; encryption key imported (non-extractable)")
        return
    click.echo("signature key and keystore access key generated on the card (non-extractable)")
    click.echo(
        f"encryption key sealed in the keystore {issued.keystore} (mode 0600): it opens only "
        "with this card; install it on the holder's workstation"
    )


def _echo_escrow(issued: IssuedCard) -> None:
    where = f"the keystore {issued.keystore}" if issued.keystore else "the card"
    click.echo(f"warning: no key escrow configured, the encryption key exists only in {where}")


def _issue_from_operator(
    module_path: str | None,
    label: str,
    kind: str,
    cert_out: str | None,
    so_pin_source: str | None,
    pin_source: str | None,
    ca_dir: str,
    ca_pass_source: str | None,
    email: str,
    given_name: str | None,
    surname: str | None,
    professional_id: str | None,
    profession: str | None,
    organisation: str | None,
    *,
    keystore: pathlib.Path | None = None,
    overwrite: bool = False,
) -> None:
    from caducee.cli.ca import ca_passphrase
    from caducee.keys.pkcs11 import token_capabilities
    from caducee.pki import CertificateAuthority, ProfessionalIdentity

    if not (given_name and surname and professional_id):
        raise UsageError("with --ca, give --given-name, --surname and --professional-id")
    identity = ProfessionalIdentity(
        given_name, surname, email, professional_id, profession, organisation
    )
    source = pathlib.Path(ca_pass_source) if ca_pass_source else None
    ca = CertificateAuthority.open(pathlib.Path(ca_dir), passphrase=ca_passphrase(source))

    def issuer(module: Pkcs11Module) -> CertificateIssuer:
        # Written in the encryption certificate (RFC 4262): what this kind of card decrypts.
        # A keystore key is a software key: it decrypts everything, the CA's default applies.
        if keystore is not None:
            return ca.issuer_for(identity)
        slot = module.free_slot()
        info = module.token_info(slot)
        caps = token_capabilities(module.mechanisms(slot), info.manufacturer)
        return ca.issuer_for(identity, capabilities=caps)

    issued = _issue(
        module_path, label, kind, keystore, so_pin_source, pin_source, cert_out, email,
        issuer=issuer, ca_certificate=ca.certificate, ca_file="ca.pem", overwrite=overwrite,
    )  # fmt: skip
    click.echo(f"certificates issued by {readable_name(ca.certificate.subject)}")
    _echo_escrow(issued)


# -- renewal --------------------------------------------------------------------------------


PURPOSE_CHOICE = click.Choice(["signature", "encryption", "both"])


def _renewed_files(purpose: str) -> tuple[str, ...]:
    """The --cert-out files a renewal writes (only the renewed certificates, and the CA's)."""
    wanted = ("signature", "encryption") if purpose == "both" else (purpose,)
    names = {"signature": SIGNATURE_FILE, "encryption": ENCRYPTION_FILE}
    return (*(names[p] for p in wanted), "ca.pem")


@group.command("renew")
@_module_option
@_token_option
@click.option(
    "--purpose",
    type=PURPOSE_CHOICE,
    default="both",
    show_default=True,
    help="Which certificates to renew (each gets a new key pair).",
)
@click.option("--ca", "ca_dir", required=True, metavar="DIR", help="Operator CA directory.")
@click.option("--ca-pass-source", metavar="FILE", help="CA key passphrase (else CADUCEE_CA_PASS).")
@click.option("--pin-source", metavar="FILE", help="Read the card PIN from FILE.")
@click.option("--kind", type=KINDS, help="Key type of the new keys (default: as the old ones).")
@click.option(
    "--keystore",
    "keystore_path",
    metavar="FILE",
    help="Keystore-mode cards: the NEW keystore file for the new encryption key.",
)
@click.option(
    "--cert-out",
    metavar="DIR",
    help="Write the new certificate(s) and ca.pem to DIR, an existing directory; checked "
    "before the card is touched.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace certificate files already in the --cert-out DIR."
)
@click.option("--publish", "publish_url", metavar="URL", help="Publish the new certificates.")
@click.option("--bind-dn", help="LDAP: DN to bind as for --publish.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="LDAP: file holding the bind password.",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="HTTP: file holding the operator token."
)
@click.option(
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds before an unreachable directory is an error.",
)
@click.option(
    "--revoke-previous",
    is_flag=True,
    help="Revoke the certificates the new ones replace (reason superseded: earlier signatures "
    "stay valid, older mail stays readable) and, with --publish, withdraw them.",
)
def renew_command(
    module_path: str | None,
    label: str | None,
    purpose: str,
    ca_dir: str,
    ca_pass_source: str | None,
    pin_source: str | None,
    kind: str | None,
    keystore_path: str | None,
    cert_out: str | None,
    overwrite: bool,
    publish_url: str | None,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    revoke_previous: bool,
) -> None:
    """Renew the card's certificates with NEW key pairs, for the identity already on the card.

    The operator's CA issues the new certificates. The earlier encryption key stays on the card
    (older mail stays readable); the earlier signature key is removed. Refused, with nothing
    changed, for a card whose certificate is revoked or on hold.
    """
    from caducee.cli.ca import _open_directory, ca_passphrase
    from caducee.pki import CertificateAuthority
    from caducee.pki.store import CAStore

    # 1. every input, before the card or the CA key is touched
    _check_cert_dir(cert_out)
    _check_out_files(cert_out, _renewed_files(purpose), overwrite)
    if keystore_path is not None:
        check_keystore_target(keystore_path)
    CAStore(ca_dir).config()  # a missing CA is said before any passphrase is asked
    source = pathlib.Path(ca_pass_source) if ca_pass_source else None
    ca = CertificateAuthority.open(pathlib.Path(ca_dir), passphrase=ca_passphrase(source))
    directory = None
    if publish_url is not None:
        directory = _open_directory(
            publish_url, bind_dn, password_file, token_file, timeout, create=True
        )
    try:
        _renew(
            module_path, label, purpose, ca, pin_source, kind, keystore_path, cert_out,
            overwrite, publish_url, directory, revoke_previous,
        )  # fmt: skip
    finally:
        if directory is not None:
            directory.close()


def _check_out_files(cert_out: str | None, names: tuple[str, ...], overwrite: bool) -> None:
    """``names`` in --cert-out: none there yet (nor a directory instead), unless --overwrite."""
    if cert_out is None:
        return
    out = pathlib.Path(cert_out)
    for name in names:
        if (out / name).is_dir():
            raise UsageError(f"--cert-out {out}: {name} is a directory")
    existing = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
    if existing and not overwrite:
        raise UsageError(
            f"--cert-out {out}: {', '.join(existing)} already there; choose another "
            "directory, or add --overwrite"
        )


def _renew(
    module_path: str | None,
    label: str | None,
    purpose: str,
    ca: CertificateAuthority,
    pin_source: str | None,
    kind: str | None,
    keystore_path: str | None,
    cert_out: str | None,
    overwrite: bool,
    publish_url: str | None,
    directory: Directory | None,
    revoke_previous: bool = False,
) -> None:
    from caducee.card.renew import (
        RenewalRefusedError,
        ca_status_check,
        plan_renewal,
        renew_card,
    )
    from caducee.keys.pkcs11 import CardSession, token_capabilities
    from caducee.pki import ProfessionalIdentity
    from caducee.pki.publish import check_publishable

    purposes = ("signature", "encryption") if purpose == "both" else (purpose,)
    with _open_module(module_path) as module:
        token = _token(module, label)
        pin = _pin(pin_source, "CADUCEE_PIN", f"PIN for card {token.label!r}")
        with CardSession(module, token, pin, rw=True) as card:
            del pin
            # 2. what the card holds, checked against the CA (still nothing changed)
            plan = plan_renewal(
                card,
                purposes,
                kind=kind,  # type: ignore[arg-type]
                keystore=keystore_path,
                check=ca_status_check(ca),
            )
            try:
                identity = ProfessionalIdentity.from_certificate(plan.identity_certificate)
            except UsageError as exc:
                raise RenewalRefusedError(
                    f"the certificate on card {token.label!r} carries no professional identity "
                    f"({exc}): issue a new card with caducee card issue --ca"
                ) from None
            if directory is not None:
                check_publishable(identity)
            caps = None
            if plan.keystore is None:  # what this card decrypts, written in the certificate
                caps = token_capabilities(module.mechanisms(token.slot), token.manufacturer)
            # 3. new keys, new certificates, then the card
            renewed = renew_card(card, plan, ca.issuer_for(identity, capabilities=caps))
    _report_renewal(token.label, identity, ca, renewed, cert_out, overwrite)
    if directory is not None:
        _publish_renewed(directory, publish_url or "", identity, renewed, cert_out)
    if revoke_previous:
        _revoke_previous(renewed, ca, directory, publish_url)
    else:
        _echo_superseded(renewed, ca, publish_url)


def _revoke_previous(
    renewed: RenewedCard,
    ca: CertificateAuthority,
    directory: Directory | None,
    publish_url: str | None,
) -> None:
    """Revoke (superseded) what the renewal replaced, and withdraw it from the directory."""
    from caducee.errors import CaduceeError
    from caducee.pki.publish import DirectoryPublisher, PublicationError
    from caducee.serials import format_serial

    for cert in renewed.previous.values():
        shown = format_serial(cert.serial_number)
        try:
            ca.revoke(cert.serial_number, "superseded")
        except CaduceeError as exc:
            raise UsageError(
                f"card renewed; revoking the earlier certificate {shown} failed: {exc}; revoke"
                f" it with 'caducee ca revoke --ca {ca.store.path} {shown} --reason superseded'"
            ) from None
        note = ""
        if directory is not None:
            try:
                removed = DirectoryPublisher(directory).revoked(cert, "superseded")
            except CaduceeError as exc:
                raise PublicationError(
                    f"card renewed, {shown} revoked; withdrawing it from {publish_url} failed:"
                    f" {exc}; withdraw it with 'caducee directory withdraw -d {publish_url}"
                    f" --serial {shown}'"
                ) from None
            note = f", withdrawn from {publish_url}" if removed else ""
        click.echo(f"earlier certificate {shown} revoked (superseded){note}")


def _report_renewal(
    label: str,
    identity: ProfessionalIdentity,
    ca: CertificateAuthority,
    renewed: RenewedCard,
    cert_out: str | None,
    overwrite: bool,
) -> None:
    from caducee.serials import format_serial

    click.echo(
        f"card {label!r} renewed for {identity.common_name} <{identity.email}> by "
        f"{readable_name(ca.certificate.subject)}"
    )
    for purpose, cert in renewed.certificates():
        serial = format_serial(cert.serial_number)
        until = cert.not_valid_after_utc.date().isoformat()
        old = format_serial(renewed.previous[purpose].serial_number)
        if purpose == "signature":
            click.echo(
                f"signature: new key generated on the card, certificate {serial} valid until "
                f"{until}; the earlier signature key and certificate {old} were removed"
            )
        elif renewed.keystore is not None:
            click.echo(
                f"encryption: new key sealed in the new keystore {renewed.keystore} (mode "
                f"0600), certificate {serial} valid until {until}; install it as the "
                "configuration's keystore and list the earlier one first in keystore_history"
            )
        else:
            click.echo(
                f"encryption: new key imported on the card (non-extractable), certificate "
                f"{serial} valid until {until}; the earlier key and certificate {old} stay on "
                f"the card as {renewed.old_encryption_label!r} so older mail stays readable"
            )
    if cert_out:
        out = pathlib.Path(cert_out)
        pem = serialization.Encoding.PEM
        written = []
        for purpose, cert in renewed.certificates():
            name = SIGNATURE_FILE if purpose == "signature" else ENCRYPTION_FILE
            _write_public(out / name, cert.public_bytes(pem), overwrite)
            written.append(name)
        _write_public(out / "ca.pem", ca.certificate.public_bytes(pem), overwrite)
        click.echo(f"certificates written to {out}: {', '.join([*written, 'ca.pem'])}")
    if renewed.encryption_private_key is not None:
        where = f"the keystore {renewed.keystore}" if renewed.keystore else "the card"
        click.echo(
            f"warning: no key escrow configured, the new encryption key exists only in {where}"
        )


def _publish_renewed(
    directory: Directory,
    url: str,
    identity: ProfessionalIdentity,
    renewed: RenewedCard,
    cert_out: str | None,
) -> None:
    from caducee.errors import CaduceeError
    from caducee.pki.publish import DirectoryPublisher, PublicationError

    publisher = DirectoryPublisher(directory)
    done: list[str] = []
    for purpose, cert in renewed.certificates():
        try:
            publisher.issued(cert, identity, purpose)
        except CaduceeError as exc:
            name = SIGNATURE_FILE if purpose == "signature" else ENCRYPTION_FILE
            where = str(pathlib.Path(cert_out) / name) if cert_out else f"the {purpose} certificate"
            already = f" ({', '.join(done)} published)" if done else ""
            raise PublicationError(
                f"card renewed; publishing the {purpose} certificate to {url} failed: {exc}"
                f"{already}; publish it with 'caducee directory publish -d {url} {where}'"
            ) from None
        done.append(purpose)
    click.echo(f"published to {url}: {', '.join(done)} certificate{'s' if len(done) > 1 else ''}")


def _echo_superseded(
    renewed: RenewedCard, ca: CertificateAuthority, publish_url: str | None
) -> None:
    from caducee.serials import format_serial

    olds = " ".join(format_serial(c.serial_number) for c in renewed.previous.values())
    withdraw = f" --publish {publish_url}" if publish_url else ""
    click.echo(
        f"the earlier certificate(s) {olds} stay valid until they end; once the new ones are "
        f"in use, revoke them with 'caducee ca revoke --ca {ca.store.path} SERIAL --reason "
        f"superseded{withdraw}' (signatures made earlier stay valid, older mail stays "
        "readable)"
    )
