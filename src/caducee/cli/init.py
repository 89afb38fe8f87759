"""``caducee init``: write this workstation's configuration, after checking what it names.

Every file, key pair, address and card URI is checked before anything is written: a mistake
found now costs one line; found at the first ``send`` it costs a confused user.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from caducee.cli.commands import CONFIG_OPTION, MailCommand
from caducee.config import default_config_path, default_data_dir
from caducee.errors import CaduceeError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def _ask(value: Any, prompt: str, interactive: bool, default: Any = None, **kw: Any) -> Any:
    if value is not None or not interactive:
        return value if value is not None else default
    return click.prompt(prompt, default=default, show_default=default is not None, **kw)


def _server_options(kind: str, what: str, port: int, tls_port: int) -> Callable[[F], F]:
    """--KIND-host, -port, -security, -user, -password-file and -ca-file for one server."""
    name = kind.upper()
    options = [
        click.option(f"--{kind}-host", help=f"{what} (host name)."),
        click.option(
            f"--{kind}-port",
            type=int,
            help=f"{name} port (default {port}, or {tls_port} with tls).",
        ),
        click.option(
            f"--{kind}-security",
            type=click.Choice(["starttls", "tls", "none"]),
            help=f"{name} connection security (default starttls).",
        ),
        click.option(f"--{kind}-user", help=f"{name} user name (with --{kind}-password-file)."),
        click.option(
            f"--{kind}-password-file",
            type=click.Path(exists=True, dir_okay=False),
            help=f"File holding the {name} password (it is never written in the configuration).",
        ),
        click.option(
            f"--{kind}-ca-file",
            type=click.Path(exists=True, dir_okay=False),
            help=f"CA certificate(s) to trust for the {name} server, in addition to the "
            "system's (for a server certificate from a private CA).",
        ),
    ]

    def apply(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


def _key_pair_options(use: str, certificate: str) -> Callable[[F], F]:
    """--USE-key and --USE-cert: a software key file and the certificate of its public key."""
    file = click.Path(exists=True, dir_okay=False)
    key = click.option(
        f"--{use}-key",
        type=file,
        help=f"Software {use} private key (PEM or DER; encrypted: with --key-password-file);"
        f" with --{use}-cert.",
    )
    cert = click.option(
        f"--{use}-cert",
        type=file,
        help=f"Your {certificate} certificate: it must hold --{use}-key's public key and --email.",
    )

    def apply(command: F) -> F:
        return key(cert(command))

    return apply


@click.command("init", cls=MailCommand)
@CONFIG_OPTION
@click.option("--email", help="Your professional e-mail address (must be in your certificates).")
@click.option("--name", help="Your name as shown to correspondents.")
@click.option(
    "--card",
    help="PKCS#11 URI of your card, instead of software keys"
    " (pkcs11:token=LABEL?module-path=/path/to/module.so).",
)
@_key_pair_options("signing", "signing")
@_key_pair_options("decryption", "encryption")
@click.option(
    "--key-password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the password of encrypted software keys (the configuration names the"
    " file, never the password).",
)
@click.option(
    "--anchor",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate trusted as is: a root, or an operator CA without its root (repeatable).",
)
@click.option(
    "--intermediate",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate that only helps build a path to an anchor, e.g. an operator CA "
    "under a trusted root (repeatable).",
)
@click.option(
    "--crl",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CRL file at hand (repeatable).",
)
@click.option("--no-fetch-crls", is_flag=True, help="Use only the CRL files given.")
@click.option("--directory", "directories", multiple=True, help="Directory URL (repeatable).")
@click.option(
    "--address-book",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Correspondents' certificates (PEM), repeatable.",
)
@_server_options("smtp", "SMTP submission server", 587, 465)
@_server_options("imap", "IMAP server to fetch mail from", 143, 993)
@click.option("--maildir", type=click.Path(file_okay=False), help="Read a local Maildir.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Where the message store lives (default: the platform's data directory).",
)
@click.option("--forbid-plaintext", is_flag=True, help="Never allow unencrypted sending.")
@click.option("--non-interactive", "-y", is_flag=True, help="Ask nothing; use flags only.")
def init(config_path: pathlib.Path | None, non_interactive: bool, **opts: Any) -> None:
    """Set up this workstation: identity, trust, directories, mail servers, policy."""
    from caducee.config import write_config

    ask = not non_interactive and sys.stdin.isatty()
    path = config_path or default_config_path()
    if path.exists():
        raise UsageError(f"{path} already exists; edit it, or remove it to start again")
    email = _ask(opts["email"], "Your professional e-mail address", ask)
    if not email:
        raise UsageError("give --email")
    identity: dict[str, Any] = {"email": email, "name": _ask(opts["name"], "Your name", ask, "")}
    card = opts["card"]
    if card is None and opts["decryption_key"] is None and ask:
        card = click.prompt("Card PKCS#11 URI (empty for software keys)", default="") or None
    if card:
        _check_card(card)
        identity["card"] = card
    else:
        for key in ("signing_key", "signing_cert", "decryption_key", "decryption_cert"):
            identity[key] = _ask(opts[key], key.replace("_", " ").capitalize() + " file", ask)
        if not identity["decryption_key"] or not identity["decryption_cert"]:
            raise UsageError("give --card, or --decryption-key and --decryption-cert")
        if bool(identity["signing_key"]) != bool(identity["signing_cert"]):
            raise UsageError("give both --signing-key and --signing-cert, or neither")
        password = None
        if opts["key_password_file"]:
            identity["key_password_file"] = opts["key_password_file"]
            secret = _read_file(opts["key_password_file"], "key password file")
            password = secret.strip()
        for use in ("decryption", "signing"):
            if identity[f"{use}_key"]:
                _check_key_pair(
                    identity[f"{use}_key"], identity[f"{use}_cert"], email, use, password
                )
    identity = {
        k: (str(pathlib.Path(v).resolve()) if k.endswith(("_key", "_cert", "_file")) and v else v)
        for k, v in identity.items()
        if v
    }
    anchors = list(opts["anchor"])
    if not anchors and ask:
        anchors = [
            a
            for a in click.prompt(
                "Trusted CA certificate files (comma-separated)", default=""
            ).split(",")
            if a.strip()
        ]
    for anchor in anchors:
        _check_certificates(anchor.strip(), "trusted CA certificate")
    for intermediate in opts["intermediate"]:
        _check_certificates(intermediate, "intermediate CA certificate")
    data: dict[str, Any] = {
        "data_dir": str(pathlib.Path(opts["data_dir"] or default_data_dir()).resolve()),
        "identity": identity,
        "trust": {
            "anchors": [str(pathlib.Path(a.strip()).resolve()) for a in anchors],
            "intermediates": [str(pathlib.Path(i).resolve()) for i in opts["intermediate"]],
            "crls": [str(pathlib.Path(c).resolve()) for c in opts["crl"]],
            "fetch_crls": not opts["no_fetch_crls"],
        },
        "address_book": [str(pathlib.Path(c).resolve()) for c in opts["address_book"]],
        "policy": {"allow_plaintext": not opts["forbid_plaintext"]},
    }
    directories = list(opts["directories"])
    if not directories and ask:
        directories = [
            d
            for d in click.prompt("Directory URLs (comma-separated)", default="").split(",")
            if d.strip()
        ]
    if directories:
        data["directory"] = {
            "operators": [
                {"name": f"dir{i + 1}", "url": u.strip()} for i, u in enumerate(directories)
            ]
        }
    smtp_host = _ask(opts["smtp_host"], "SMTP submission server (empty: none)", ask, "")
    if smtp_host:
        data["smtp"] = _server(opts, "smtp", smtp_host, 587, ask)
    imap_host = None if opts["maildir"] else _ask(opts["imap_host"], "IMAP server", ask, "")
    if imap_host:
        data["imap"] = [{"name": "imap", **_server(opts, "imap", imap_host, 143, ask)}]
    created = None
    if opts["maildir"]:
        from caducee.mail.maildir import MaildirError, MaildirSource, ensure_maildir

        maildir = pathlib.Path(opts["maildir"]).resolve()
        try:
            MaildirSource(maildir).check()
        except MaildirError:
            if maildir.exists():
                raise  # a directory that is not a Maildir: not ours to turn into one
            created = ensure_maildir(maildir)  # named here on purpose: reading never creates it
        data["maildir"] = [{"name": "maildir", "path": str(maildir)}]
    written = write_config(path, data)
    click.echo(f"configuration written to {written}")
    if created is not None:
        click.echo(f"created an empty Maildir at {created}")


def _server(opts: dict[str, Any], kind: str, host: str, port: int, ask: bool) -> dict[str, Any]:
    security = _ask(
        opts[f"{kind}_security"], f"{kind.upper()} security (starttls/tls/none)", ask, "starttls"
    )
    default_port = (465 if kind == "smtp" else 993) if security == "tls" else port
    table: dict[str, Any] = {
        "host": host,
        "port": int(_ask(opts[f"{kind}_port"], f"{kind.upper()} port", ask, default_port)),
        "security": security,
    }
    user = _ask(opts[f"{kind}_user"], f"{kind.upper()} user name (empty: none)", ask, "")
    if user:
        table["username"] = user
        secret = _ask(opts[f"{kind}_password_file"], f"{kind.upper()} password file", ask)
        if not secret:
            raise UsageError(f"give --{kind}-password-file with --{kind}-user")
        table["password_file"] = str(_existing(secret, f"{kind.upper()} password file"))
    ca_file = opts[f"{kind}_ca_file"]
    if ca_file:
        what = f"{kind.upper()} CA file"
        _check_certificates(ca_file, what)
        table["ca_file"] = str(_existing(ca_file, what))
    return table


# What ``init`` checks before writing anything: a configuration that names a missing file, a key
# that is not its certificate's or a certificate for someone else would only fail later, at the
# first send or fetch, far from the typo.


def _existing(path: str, what: str) -> pathlib.Path:
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{what} {path}: no such file")
    return file.resolve()


def _read_file(path: str, what: str) -> bytes:
    try:
        return _existing(path, what).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


def _check_certificates(path: str, what: str) -> Sequence[Any]:
    from caducee.certfiles import load_certificates

    return load_certificates(_read_file(path, what), f"{what} {path}")


def _check_key_pair(
    key_path: str, cert_path: str, email: str, use: str, password: bytes | None = None
) -> None:
    """The key file must hold the private key of the certificate, which must name ``email``;
    an encrypted key is opened with ``password`` (the key password file's)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from caducee.certfiles import load_certificate
    from caducee.keys.software import load_private_key
    from caducee.pki.validate import check_email

    what = f"{use} certificate"
    cert = load_certificate(_read_file(cert_path, what), f"{what} {cert_path}")
    data = _read_file(key_path, f"{use} key")
    encrypted = b"ENCRYPTED" in data
    if encrypted and password is None:
        raise UsageError(f"{use} key {key_path} is encrypted: give --key-password-file")
    try:
        key = load_private_key(data, password if encrypted else None)
    except CaduceeError as exc:
        raise UsageError(f"{use} key {key_path}: {exc}") from None

    def spki(public: Any) -> bytes:
        return bytes(public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))

    if spki(key.public_key()) != spki(cert.public_key()):
        raise UsageError(
            f"{use} key {key_path} does not belong to the certificate {cert_path}"
            " (their public keys differ)"
        )
    try:
        check_email(cert, email)
    except CaduceeError as exc:
        raise UsageError(f"{what} {cert_path}: {exc}") from None


def _check_card(uri: str) -> None:
    from caducee.keys.pkcs11_uri import parse_pkcs11_uri

    try:
        parsed = parse_pkcs11_uri(uri)
    except CaduceeError as exc:
        hint = ""
        if ";module-" in uri:
            hint = " (module-path and module-name go after '?': pkcs11:token=X?module-path=...)"
        raise UsageError(f"--card: {exc}{hint}") from None
    if parsed.module_path is not None:
        _existing(parsed.module_path, "PKCS#11 module")


# -- send ----------------------------------------------------------------------------------------
