"""``caducee ca``: run an operator's (or the national) certification authority from a directory.

The CA key passphrase comes from ``--pass-source FILE`` (first line), else the environment
variable ``CADUCEE_CA_PASS``, else an interactive hidden prompt. It is never echoed or logged.
"""

from __future__ import annotations

import getpass
import json
import os
import pathlib
import stat
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from caducee.cli.keyargs import ask_secret, card_pin_prompt
from caducee.errors import CaduceeError, UsageError
from caducee.pki.ca import (
    KEY_KINDS,
    REASONS,
    CertificateAuthority,
    ca_name,
    generate_ca_key,
    load_csr,
)
from caducee.pki.names import check_days
from caducee.pki.profiles import ProfessionalIdentity, ValidityPolicy
from caducee.pki.publish import PublicationError, check_publishable
from caducee.pki.store import CAConfig, CAStore, release_refusal
from caducee.serials import format_serial

PASS_ENV = "CADUCEE_CA_PASS"  # noqa: S105 - a variable name, not a secret

ca_option = click.option(
    "--ca",
    "ca_dir",
    required=True,
    envvar="CADUCEE_CA_DIR",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="CA directory (env CADUCEE_CA_DIR).",
)
key_uri_option = click.option(
    "--key-uri",
    help="pkcs11: URI of the CA key on a token (instead of the encrypted key file).",
)
pass_option = click.option(
    "--pass-source",
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help=f"File whose first line is the CA key passphrase (else ${PASS_ENV}, else a prompt).",
)


def ca_passphrase(
    source: pathlib.Path | None,
    *,
    confirm: bool = False,
    what: str = "CA",
    hint: str = f"give --pass-source FILE or set {PASS_ENV}",
) -> bytes:
    if source is not None:
        try:
            mode = source.stat().st_mode
            lines = source.read_bytes().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the passphrase file {source}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            click.echo(
                f"caducee: warning: passphrase file {source} is readable by other users "
                f"(chmod 600 {source})",
                err=True,
            )
        value = lines[0] if lines else b""
    elif os.environ.get(PASS_ENV):
        value = os.environ[PASS_ENV].encode()
    else:
        value = ask_secret(
            f"{what} key passphrase",
            needed_for=f"the {what} key passphrase is needed",
            hint=hint,
            confirm=confirm,
        ).encode()
    if not value:
        raise UsageError(f"the {what} key passphrase is empty")
    return value


def _open_signing(
    ca_dir: pathlib.Path, pass_source: pathlib.Path | None, key_uri: str | None
) -> CertificateAuthority:
    """Open the CA with its key: from a token when ``key_uri`` is given, else the key file."""
    CAStore(ca_dir).config()  # a missing or pending CA is said before asking for a passphrase
    if key_uri is None:
        return CertificateAuthority.open(ca_dir, passphrase=ca_passphrase(pass_source))
    from caducee.keys.open import open_key
    from caducee.pki.signer import SigningKeyCASigner

    def prompt(what: str) -> str:
        return card_pin_prompt(what, hint="set CADUCEE_PIN or add pin-source=FILE to --key-uri")

    key = open_key(key_uri, pin_callback=prompt)
    _opened_cards.append(key.card)
    return CertificateAuthority.open(ca_dir, signer=SigningKeyCASigner(key))


_opened_cards: list[Any] = []


def _close_cards() -> None:
    while _opened_cards:
        _opened_cards.pop().close()


def _check_out(path: pathlib.Path | None, option: str = "--out") -> None:
    """Refuse an output file that cannot be written, before anything is signed or recorded."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def _publish_options(fn: Any) -> Any:
    """--publish URL and the directory credentials, named as in 'caducee directory'."""
    for option in reversed([
        click.option("--bind-dn", help="LDAP: DN to bind as for --publish."),
        click.option(
            "--password-file", type=click.Path(dir_okay=False),
            help="LDAP: file holding the bind password.",
        ),
        click.option(
            "--token-file", type=click.Path(dir_okay=False),
            help="HTTP: file holding the operator token.",
        ),
        click.option(
            "--timeout", type=float, default=5.0, show_default=True,
            help="Seconds before an unreachable directory is an error.",
        ),
    ]):  # fmt: skip
        fn = option(fn)
    return fn


def _open_directory(
    url: str,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    *,
    create: bool,
) -> Any:
    """Opened as 'caducee directory publish/withdraw' open it (same options, same checks)."""
    from caducee.cli.directory import _open

    return _open(url, bind_dn, password_file, token_file, timeout, create=create)


def _serial(value: str) -> int:
    text = value.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(text, 16)
    except ValueError:
        raise UsageError(
            f"{value!r} is not a hexadecimal serial number (as 'ca list' shows)"
        ) from None


@click.group()
def group() -> None:
    """Run an operator's certification authority.

    init, request/certify/adopt (a CA certified elsewhere), issue, revoke, release (a hold),
    crl, list, serve, check.
    """


@group.command()
@ca_option
@click.option("--name", required=True, help='CA common name, e.g. "Operator A Health CA".')
@click.option("--crl-url", required=True, help="HTTP URL where this CA's CRL is published.")
@click.option("--aia-url", help="HTTP URL where this CA's certificate is published.")
@click.option("--ocsp-url", help="HTTP URL of this CA's OCSP responder (put in issued certs).")
@click.option("--organisation", "--org", "organisation", help="Organisation of the CA.")
@click.option("--country", help="Two-letter country code.")
@click.option("--key-type", type=click.Choice(KEY_KINDS), default="p384", show_default=True)
@click.option("--days", type=int, help="CA validity in days (root 7300, subordinate 3650).")
@click.option(
    "--parent",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Parent CA directory: create an operator CA under it (else a self-signed root).",
)
@click.option(
    "--parent-pass-source",
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="Passphrase file of the parent CA key.",
)
@click.option("--sig-days", type=int, default=3 * 365, show_default=True)
@click.option("--enc-days", type=int, default=3 * 365, show_default=True)
@click.option("--crl-days", type=int, default=7, show_default=True, help="CRL nextUpdate delay.")
@pass_option
def init(
    ca_dir: pathlib.Path,
    name: str,
    crl_url: str,
    aia_url: str | None,
    ocsp_url: str | None,
    organisation: str | None,
    country: str | None,
    key_type: str,
    days: int | None,
    parent: pathlib.Path | None,
    parent_pass_source: pathlib.Path | None,
    sig_days: int,
    enc_days: int,
    crl_days: int,
    pass_source: pathlib.Path | None,
) -> None:
    """Create a CA: a self-signed root, or with --parent an operator CA under a root.

    Every option is checked before anything is created: a refused CA leaves nothing behind.
    """
    config = CAConfig(
        name=name,
        crl_url=crl_url,
        aia_url=aia_url,
        ocsp_url=ocsp_url,
        validity=ValidityPolicy(sig_days, enc_days, crl_days),
    )
    ca_name(name, organisation, country)
    if days is not None:
        check_days("CA validity (--days)", days)
    CAStore(ca_dir).check_free()
    parent_ca = None
    if parent is not None:
        CAStore(parent).config()
        parent_pass = ca_passphrase(parent_pass_source, what="parent CA")
        parent_ca = CertificateAuthority.open(parent, passphrase=parent_pass)
        parent_ca.check_can_certify_ca(ca_name(name, organisation, country))
    passphrase = ca_passphrase(pass_source, confirm=True)
    key = generate_ca_key(key_type)
    if parent_ca is None:
        ca = CertificateAuthority.init_root(
            ca_dir, config, organisation=organisation, country=country, key=key,
            passphrase=passphrase, days=20 * 365 if days is None else days,
        )  # fmt: skip
    else:
        ca = CertificateAuthority.init_subordinate(
            ca_dir, config, parent_ca, organisation=organisation, country=country, key=key,
            passphrase=passphrase, days=10 * 365 if days is None else days,
        )  # fmt: skip
    ca.crl()
    kind = "root" if parent_ca is None else f"subordinate of {parent_ca.config.name}"
    serial = format_serial(ca.certificate.serial_number)
    click.echo(f"created {kind} CA {name!r} in {ca_dir} (serial {serial})")


@group.command()
@ca_option
@click.option("--name", required=True, help="Operator CA common name.")
@click.option("--crl-url", required=True)
@click.option("--aia-url")
@click.option("--ocsp-url")
@click.option("--organisation", "--org", "organisation")
@click.option("--country")
@click.option("--key-type", type=click.Choice(KEY_KINDS), default="p384", show_default=True)
@click.option("--sig-days", type=int, default=3 * 365, show_default=True)
@click.option("--enc-days", type=int, default=3 * 365, show_default=True)
@click.option("--crl-days", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True)
@pass_option
def request(
    ca_dir: pathlib.Path,
    name: str,
    crl_url: str,
    aia_url: str | None,
    ocsp_url: str | None,
    organisation: str | None,
    country: str | None,
    key_type: str,
    sig_days: int,
    enc_days: int,
    crl_days: int,
    out: pathlib.Path,
    pass_source: pathlib.Path | None,
) -> None:
    """Prepare an operator CA to be certified by a root run elsewhere: key + CSR (--out)."""
    config = CAConfig(
        name, crl_url, aia_url, ocsp_url, ValidityPolicy(sig_days, enc_days, crl_days)
    )
    ca_name(name, organisation, country)
    _check_out(out)
    CAStore(ca_dir).check_free()
    csr = CertificateAuthority.request(
        ca_dir, config, key=generate_ca_key(key_type),
        passphrase=ca_passphrase(pass_source, confirm=True),
        organisation=organisation, country=country,
    )  # fmt: skip
    out.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    click.echo(f"CA request written to {out}; send it to the root, then 'caducee ca adopt'")


@group.command()
@ca_option
@click.option(
    "--csr", "csr_file", required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="The operator CA's request ('caducee ca request').",
)  # fmt: skip
@click.option("--days", type=int, default=10 * 365, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), required=True)
@click.option(
    "--any-subject", is_flag=True,
    help="Certify even a request that does not look like a CA's (e.g. a person's).",
)  # fmt: skip
@click.option(
    "--rollover", is_flag=True,
    help="A new key for a CA name already certified (CA key rollover).",
)  # fmt: skip
@pass_option
@key_uri_option
def certify(
    ca_dir: pathlib.Path,
    csr_file: pathlib.Path,
    days: int,
    out: pathlib.Path,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
    any_subject: bool = False,
    rollover: bool = False,
) -> None:
    """As the root: certify an operator CA from its request.

    Refused: a request that does not look like a CA's (a CN, and an O or a cA=true request;
    no e-mail or person's name) unless --any-subject; a key or a CA name already certified
    (unless --rollover for the name); a path length constraint that forbids another CA level.
    """
    csr = load_csr(csr_file.read_bytes(), str(csr_file))
    check_days("CA validity (--days)", days)
    _check_out(out)
    try:
        ca = _open_signing(ca_dir, pass_source, key_uri)
        cert = ca.certify_ca_request(csr, days=days, any_subject=any_subject, rollover=rollover)
    finally:
        _close_cards()
    out.write_bytes(
        b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in [cert, ca.certificate, *ca.chain]
        )
    )
    click.echo(
        f"certified {cert.subject.rfc4514_string()} "
        f"(serial {format_serial(cert.serial_number)}) -> {out}"
    )


@group.command()
@ca_option
@click.option(
    "--cert", "cert_file", required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="The CA certificate followed by its chain up to the root (as 'ca certify' writes).",
)  # fmt: skip
def adopt(ca_dir: pathlib.Path, cert_file: pathlib.Path) -> None:
    """Install the certificate of a CA prepared with 'caducee ca request'."""
    from caducee.certfiles import load_certificates

    certs = load_certificates(cert_file.read_bytes(), str(cert_file))
    CertificateAuthority.adopt(ca_dir, None, certs[0], certs[1:])
    click.echo(f"CA {certs[0].subject.rfc4514_string()} ready in {ca_dir}; run 'caducee ca crl'")


@group.command()
@ca_option
@click.option(
    "--csr", "csr_file", required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="PKCS#10 request (PEM or DER), signed by the card key.",
)  # fmt: skip
@click.option("--purpose", type=click.Choice(["signature", "encryption"]), required=True)
@click.option("--email", required=True)
@click.option("--given-name", required=True)
@click.option("--surname", required=True)
@click.option(
    "--professional-id", "--rpps", "professional_id", required=True,
    help="11-digit national professional identifier (RPPS-style).",
)  # fmt: skip
@click.option("--profession", help='e.g. "Médecin généraliste" (subject title).')
@click.option("--organisation", "--org", "organisation", help="Practice, hospital...")
@click.option("--country")
@click.option("--days", type=int, help="Override the validity policy.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=pathlib.Path), help="Write the PEM here."
)
@click.option(
    "--reassign-address", is_flag=True,
    help="Bind --email even though another professional identifier holds a certificate for it.",
)  # fmt: skip
@click.option("--publish", "publish_url", metavar="URL", help="Publish to this directory.")
@_publish_options
@pass_option
@key_uri_option
def issue(
    ca_dir: pathlib.Path,
    csr_file: pathlib.Path,
    purpose: str,
    email: str,
    given_name: str,
    surname: str,
    professional_id: str,
    profession: str | None,
    organisation: str | None,
    country: str | None,
    days: int | None,
    out: pathlib.Path | None,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
    publish_url: str | None = None,
    reassign_address: bool = False,
    bind_dn: str | None = None,
    password_file: str | None = None,
    token_file: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Issue a signature or encryption certificate from a CSR (and publish it with --publish).

    The certificate is written (--out, else standard output) before it is published; if
    publishing fails the message says so and how to publish it later (exit status 6).
    """
    identity = ProfessionalIdentity(
        given_name=given_name,
        surname=surname,
        email=email,
        professional_id=professional_id,
        profession=profession,
        organisation=organisation,
        country=country,
    )
    if days is not None:
        check_days("certificate validity (--days)", days)
    _check_out(out)
    csr = load_csr(csr_file.read_bytes(), str(csr_file))
    directory = None
    if publish_url is not None:
        check_publishable(identity)
        directory = _open_directory(
            publish_url, bind_dn, password_file, token_file, timeout, create=True
        )
    try:
        try:
            ca = _open_signing(ca_dir, pass_source, key_uri)
            cert = ca.issue_from_csr(
                csr, identity, purpose, days=days, reassign_address=reassign_address
            )
        finally:
            _close_cards()
        serial = format_serial(cert.serial_number)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if out is not None:
            out.write_bytes(pem)
            done = f"{purpose} certificate {serial} issued and written to {out}"
        else:
            click.echo(pem.decode(), nl=False)
            done = f"{purpose} certificate {serial} issued (PEM on standard output)"
        if directory is None:
            if out is not None:
                click.echo(done)
            return
        from caducee.pki.publish import DirectoryPublisher

        try:
            DirectoryPublisher(directory).issued(cert, identity, purpose)
        except CaduceeError as exc:
            where = str(out) if out is not None else "FILE (the PEM printed above)"
            raise PublicationError(
                f"{done}; publishing to {publish_url} failed: {exc}; publish it with "
                f"'caducee directory publish -d {publish_url} {where}'"
            ) from None
        click.echo(f"{done}; published to {publish_url}", err=out is None)
    finally:
        if directory is not None:
            directory.close()


@group.command()
@ca_option
@click.argument("serial")
@click.option(
    "--reason", type=click.Choice(list(REASONS)), default="unspecified", show_default=True
)
@click.option("--publish", "publish_url", metavar="URL", help="Withdraw it from this directory.")
@_publish_options
@pass_option
@key_uri_option
def revoke(
    ca_dir: pathlib.Path,
    serial: str,
    reason: str,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
    publish_url: str | None = None,
    bind_dn: str | None = None,
    password_file: str | None = None,
    token_file: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Revoke a certificate (hexadecimal SERIAL) and publish a new CRL at once.

    With --publish the certificate is then withdrawn from the directory; running the command
    again on a certificate already revoked only withdraws it (to finish a failed withdrawal).
    """
    number = _serial(serial)
    shown = format_serial(number)
    record = CAStore(ca_dir).get(number)
    on_hold = record.status == "revoked" and record.reason == "certificateHold"
    # a hold may become final; holding it again would only move its date
    already = record.status == "revoked" and (not on_hold or reason == "certificateHold")
    if already and publish_url is None:
        if on_hold:
            assert record.revocation_time is not None
            raise UsageError(
                f"serial {shown} is already on hold since "
                f"{record.revocation_time:%Y-%m-%d %H:%M} UTC"
            )
        raise UsageError(f"serial {shown} is already revoked")
    directory = None
    if publish_url is not None:
        directory = _open_directory(
            publish_url, bind_dn, password_file, token_file, timeout, create=False
        )
    try:
        if already:
            assert record.revocation_time is not None
            done = f"{shown} was already revoked on {record.revocation_time:%Y-%m-%d %H:%M} UTC"
            cert = CertificateAuthority.open(ca_dir).issued_certificate(number)
        else:
            try:
                ca = _open_signing(ca_dir, pass_source, key_uri)
                crl = ca.revoke(number, reason, actor=_actor())
            finally:
                _close_cards()
            done = f"revoked {shown} ({reason}); CRL number {_crl_number(crl)} published"
            cert = ca.issued_certificate(number)
        if directory is None:
            click.echo(done)
            return
        from caducee.pki.publish import DirectoryPublisher

        try:
            removed = DirectoryPublisher(directory).revoked(cert, reason)
        except CaduceeError as exc:
            raise PublicationError(
                f"{done}; withdrawing it from {publish_url} failed: {exc}; withdraw it with "
                f"'caducee directory withdraw -d {publish_url} --serial {shown}' "
                "(or run this command again)"
            ) from None
        note = f"withdrawn from {publish_url}" if removed else f"was not in {publish_url}"
        click.echo(f"{done}; {note}")
    finally:
        if directory is not None:
            directory.close()


@group.command()
@ca_option
@click.argument("serial")
@click.option("--publish", "publish_url", metavar="URL", help="Publish it again in this directory.")
@_publish_options
@pass_option
@key_uri_option
def release(
    ca_dir: pathlib.Path,
    serial: str,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
    publish_url: str | None = None,
    bind_dn: str | None = None,
    password_file: str | None = None,
    token_file: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Release a certificate (hexadecimal SERIAL) from certificateHold; publish a new CRL.

    For a lost card found again. Only a hold can be released: any other revocation is final.
    The new CRL no longer lists the certificate. With --publish it is then published again in
    the directory; running the command again on a certificate already released only
    publishes it (to finish a failed publication).
    """
    number = _serial(serial)
    shown = format_serial(number)
    store = CAStore(ca_dir)
    record = store.get(number)
    events = store.history(number)
    redo = (
        record.status == "valid"
        and publish_url is not None
        and bool(events)
        and events[-1].action == "released"
    )
    if not redo:
        refusal = release_refusal(number, record.status, record.reason, record.revocation_time)
        if refusal is not None:
            raise UsageError(refusal)
    directory = None
    if publish_url is not None:
        if record.purpose == "ca":
            raise UsageError(
                f"serial {shown} is a CA certificate: the directory holds professionals' "
                "certificates only (drop --publish)"
            )
        cert = CertificateAuthority.open(ca_dir).issued_certificate(number)
        identity = ProfessionalIdentity.from_certificate(cert)
        check_publishable(identity)
        directory = _open_directory(
            publish_url, bind_dn, password_file, token_file, timeout, create=True
        )
    try:
        if redo:
            done = f"{shown} was already released on {events[-1].time:%Y-%m-%d %H:%M} UTC"
        else:
            try:
                ca = _open_signing(ca_dir, pass_source, key_uri)
                crl = ca.release(number, actor=_actor())
            finally:
                _close_cards()
            done = f"released {shown} from hold; CRL number {_crl_number(crl)} published"
        if directory is None:
            click.echo(done)
            return
        from caducee.pki.publish import DirectoryPublisher

        try:
            DirectoryPublisher(directory).issued(cert, identity, record.purpose)
        except CaduceeError as exc:
            raise PublicationError(
                f"{done}; publishing it to {publish_url} failed: {exc}; publish it with "
                f"'caducee ca release --ca {ca_dir} {shown} --publish {publish_url}' again"
            ) from None
        click.echo(f"{done}; published to {publish_url}")
    finally:
        if directory is not None:
            directory.close()


def _actor() -> str | None:
    """Who runs the command, for the index's history (the login name; None if unknown)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


def _crl_number(crl: object) -> str:
    assert isinstance(crl, x509.CertificateRevocationList)
    try:
        return str(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:  # pragma: no cover - we always add it
        return "?"


@group.command()
@ca_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@pass_option
@key_uri_option
def crl(
    ca_dir: pathlib.Path,
    out: pathlib.Path | None,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
) -> None:
    """Issue a CRL now (run it from a scheduler before nextUpdate)."""
    _check_out(out)
    try:
        new = _open_signing(ca_dir, pass_source, key_uri).crl()
    finally:
        _close_cards()
    if out is not None:
        out.write_bytes(new.public_bytes(serialization.Encoding.DER))
    nxt = new.next_update_utc
    click.echo(
        f"CRL number {_crl_number(new)} with {len(new)} entries, next update "
        f"{nxt:%Y-%m-%d %H:%M} UTC"
        if nxt
        else "no next update"
    )


@group.command(name="list")
@ca_option
@click.option("--status", type=click.Choice(["valid", "revoked"]))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(ca_dir: pathlib.Path, status: str | None, as_json: bool) -> None:
    """List the certificates this CA issued."""
    ca = CertificateAuthority.open(ca_dir)
    for r in ca.records(status=status):
        if as_json:
            click.echo(json.dumps({
                "serial": r.serial_hex, "subject": r.subject, "email": r.email,
                "professional_id": r.professional_id, "purpose": r.purpose,
                "not_before": r.not_before.isoformat(), "not_after": r.not_after.isoformat(),
                "status": r.status, "reason": r.reason,
                "revocation_time": r.revocation_time.isoformat() if r.revocation_time else None,
            }))  # fmt: skip
        else:
            extra = f" {r.reason} {r.revocation_time:%Y-%m-%d}" if r.revocation_time else ""
            click.echo(
                f"{r.serial_hex}  {r.purpose:<10} {r.status}{extra}  "
                f"until {r.not_after:%Y-%m-%d}  {r.email or r.subject}"
            )


@group.command()
@click.option(
    "--ca", "ca_dirs", multiple=True, required=True,
    type=click.Path(file_okay=False, exists=True, path_type=pathlib.Path),
    help="CA directory to publish (repeatable).",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--ocsp", is_flag=True, help="Also answer OCSP for CAs with an ocsp_url (needs keys)."
)
@click.option(
    "--renew-crls", is_flag=True, help="Issue each CA's CRL again before it expires (needs keys)."
)
@click.option(
    "--pass-source", "pass_sources", multiple=True, metavar="[CA_DIR=]FILE",
    help="File whose first line is a CA key passphrase: CA_DIR=FILE for that --ca only "
    f"(repeatable), FILE for every other CA (else ${PASS_ENV}, else a prompt per CA).",
)  # fmt: skip
def serve(
    ca_dirs: tuple[pathlib.Path, ...],
    host: str,
    port: int,
    ocsp: bool,
    pass_sources: tuple[str, ...],
    renew_crls: bool = False,
) -> None:
    """Serve the CAs' CRLs and certificates (and OCSP) at their configured URL paths.

    --ocsp and --renew-crls need the CAs' keys, each with its own passphrase:
    '--pass-source root=root.pass --pass-source op1=op1.pass', or one '--pass-source FILE'
    shared by the CAs without their own.
    """
    from caducee.pki.http import make_server
    from caducee.pki.ocsp import OcspResponder

    per_ca, shared = _serve_pass_sources(ca_dirs, pass_sources)
    opened: dict[pathlib.Path, CertificateAuthority] = {}

    def with_key(ca_dir: pathlib.Path) -> CertificateAuthority:
        """Each CA's key decrypted once, with its own passphrase source."""
        if ca_dir not in opened:
            name = CertificateAuthority.open(ca_dir).config.name
            passphrase = ca_passphrase(
                per_ca.get(ca_dir.resolve(), shared),
                what=f"CA {name!r} ({ca_dir})",
                hint=f"give --pass-source {ca_dir}=FILE (or --pass-source FILE for every CA) "
                f"or set {PASS_ENV}",
            )
            opened[ca_dir] = CertificateAuthority.open(ca_dir, passphrase=passphrase)
        return opened[ca_dir]

    responders = []
    if ocsp:
        for ca_dir in ca_dirs:
            if CertificateAuthority.open(ca_dir).config.ocsp_url:
                responders.append(OcspResponder(with_key(ca_dir)))
        if not responders:
            raise UsageError("--ocsp: none of these CAs has an ocsp_url")
    scheduler = None
    if renew_crls:
        from caducee.pki.schedule import CrlScheduler

        scheduler = CrlScheduler([with_key(d) for d in ca_dirs])
    try:
        server = make_server(ca_dirs, host, port, quiet=False, responders=responders)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    paths = sorted([*server.routes, *server.ocsp])
    click.echo(f"serving {len(paths)} paths on {server.url}", err=True)
    for path in paths:
        click.echo(f"  {server.url}{path}", err=True)
    if scheduler is not None:
        scheduler.start()
        click.echo("CRLs are renewed when half their lifetime has passed", err=True)
    try:
        server.serve_forever()
    finally:
        if scheduler is not None:
            scheduler.stop()
        server.server_close()


def _serve_pass_sources(
    ca_dirs: tuple[pathlib.Path, ...], values: tuple[str, ...]
) -> tuple[dict[pathlib.Path, pathlib.Path], pathlib.Path | None]:
    """``serve --pass-source`` values: {resolved CA directory: file} and the shared file.

    ``CA_DIR=FILE`` names one of the ``--ca`` directories (as given, or the same directory
    spelt otherwise); a value that is an existing file is the shared ``FILE``, even with an
    ``=`` in its name.
    """
    known = {d.resolve() for d in ca_dirs}
    per_ca: dict[pathlib.Path, pathlib.Path] = {}
    shared: pathlib.Path | None = None
    for value in values:
        if pathlib.Path(value).is_file():
            if shared is not None:
                raise UsageError(
                    f"--pass-source {value}: a passphrase file for every CA is already given "
                    f"({shared}); name the CA for the others: --pass-source CA_DIR=FILE"
                )
            shared = pathlib.Path(value)
            continue
        splits = [i for i, c in enumerate(value) if c == "="]
        match = next((i for i in splits if pathlib.Path(value[:i]).resolve() in known), None)
        if match is None:
            if splits:
                raise UsageError(
                    f"--pass-source {value}: not CA_DIR=FILE with one of the --ca directories "
                    f"({', '.join(str(d) for d in ca_dirs)})"
                )
            raise UsageError(f"--pass-source {value}: no such file")
        ca_dir, file = pathlib.Path(value[:match]), pathlib.Path(value[match + 1 :])
        if ca_dir.resolve() in per_ca:
            raise UsageError(f"--pass-source: two passphrase files for the CA {ca_dir}")
        if not file.is_file():
            raise UsageError(f"--pass-source {value}: no such file {file}")
        per_ca[ca_dir.resolve()] = file
    return per_ca, shared


@group.command()
@click.argument("cert_file", type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path))
@click.option(
    "--trust", "trust_files", multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="Trust bundle (PEM, DER or PKCS#7; repeatable): its self-signed roots are trusted.",
)  # fmt: skip
@click.option(
    "--anchor", "anchor_files", multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="CA certificate trusted as is, even if it is not a root, e.g. an operator CA "
    "(repeatable; like [trust] anchors in the configuration).",
)  # fmt: skip
@click.option(
    "--crl", "crl_files", multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="Local CRL (PEM or DER; repeatable); others are fetched from the distribution points.",
)  # fmt: skip
@click.option(
    "--untrusted", "untrusted_files", multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="Extra CA certificates to build the path (repeatable).",
)  # fmt: skip
@click.option("--purpose", type=click.Choice(["signature", "encryption"]), required=True)
@click.option("--email", help="The certificate must be for this address.")
@click.option("--at", "at_time", help="ISO 8601 time to validate at (default: now).")
@click.option("--signing-time", is_flag=True, help="--at is a signature time (received message).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="CRL fetch timeout.")
def check(
    cert_file: pathlib.Path,
    trust_files: tuple[pathlib.Path, ...],
    anchor_files: tuple[pathlib.Path, ...],
    crl_files: tuple[pathlib.Path, ...],
    untrusted_files: tuple[pathlib.Path, ...],
    purpose: str,
    email: str | None,
    at_time: str | None,
    signing_time: bool,
    timeout: float,
) -> None:
    """Validate a certificate as caducee would before using it, and print its path."""
    import datetime as dt

    from caducee.certfiles import load_certificate, load_certificates
    from caducee.pki.crl import ChainedCrlSource, CrlCache, HttpCrlFetcher
    from caducee.pki.trust import TrustStore
    from caducee.pki.validate import validate_certificate

    cert = load_certificate(cert_file.read_bytes(), str(cert_file))
    if not trust_files and not anchor_files:
        raise UsageError("give --trust (a bundle with a root CA) or --anchor (a CA trusted as is)")
    hint = "give it with --anchor FILE instead of --trust"
    trust = TrustStore.from_files(*trust_files, anchors=anchor_files, hint=hint)
    extra = [c for f in untrusted_files for c in load_certificates(f.read_bytes(), str(f))]
    if at_time is None:
        when = dt.datetime.now(dt.UTC)
    else:
        try:
            when = dt.datetime.fromisoformat(at_time)
        except ValueError:
            raise UsageError(f"--at {at_time!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    source = ChainedCrlSource(CrlCache.from_files(*crl_files), HttpCrlFetcher(timeout=timeout))
    result = validate_certificate(
        cert, purpose=purpose, trust=trust, crls=source, at=when, email=email,
        intermediates=extra, at_signing_time=signing_time,
    )  # fmt: skip
    click.echo(f"OK {purpose} certificate at {when:%Y-%m-%d %H:%M} UTC: {result.describe()}")
