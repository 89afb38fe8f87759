"""``caducee ca``: run an operator's (or the national) certification authority from a directory.

The CA key passphrase comes from ``--pass-source FILE`` (first line), else the environment
variable ``CADUCEE_CA_PASS``, else an interactive hidden prompt. It is never echoed or logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from caducee.errors import UsageError
from caducee.pki.ca import KEY_KINDS, REASONS, CertificateAuthority, generate_ca_key, load_csr
from caducee.pki.profiles import ProfessionalIdentity, ValidityPolicy
from caducee.pki.store import CAConfig

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


def ca_passphrase(source: pathlib.Path | None, *, confirm: bool = False, what: str = "CA") -> bytes:
    if source is not None:
        lines = source.read_bytes().splitlines()
        value = lines[0] if lines else b""
    elif os.environ.get(PASS_ENV):
        value = os.environ[PASS_ENV].encode()
    else:
        value = click.prompt(
            f"{what} key passphrase", hide_input=True, confirmation_prompt=confirm
        ).encode()
    if not value:
        raise UsageError("the CA key passphrase is empty")
    return value


def _open_signing(
    ca_dir: pathlib.Path, pass_source: pathlib.Path | None, key_uri: str | None
) -> CertificateAuthority:
    """Open the CA with its key: from a token when ``key_uri`` is given, else the key file."""
    if key_uri is None:
        return CertificateAuthority.open(ca_dir, passphrase=ca_passphrase(pass_source))
    from caducee.keys.open import open_key
    from caducee.pki.signer import SigningKeyCASigner

    def prompt(what: str) -> str:
        return str(click.prompt(f"PIN for {what}", hide_input=True))

    key = open_key(key_uri, pin_callback=prompt)
    _opened_cards.append(key.card)
    return CertificateAuthority.open(ca_dir, signer=SigningKeyCASigner(key))


_opened_cards: list[Any] = []


def _close_cards() -> None:
    while _opened_cards:
        _opened_cards.pop().close()


@contextlib.contextmanager
def _publisher(ca: CertificateAuthority, url: str | None) -> Iterator[None]:
    """While issuing or revoking, keep the directory at ``url`` in step."""
    if url is None:
        yield
        return
    from caducee.directory.federation import open_directory
    from caducee.pki.publish import DirectoryPublisher

    with open_directory(url) as directory:
        ca.listeners.append(DirectoryPublisher(directory))
        try:
            yield
        finally:
            ca.listeners.pop()


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
    """Run an operator's certification authority (init, issue, revoke, crl, list, serve)."""


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
    """Create a CA: a self-signed root, or with --parent an operator CA under a root."""
    config = CAConfig(
        name=name,
        crl_url=crl_url,
        aia_url=aia_url,
        ocsp_url=ocsp_url,
        validity=ValidityPolicy(sig_days, enc_days, crl_days),
    )
    parent_ca = None
    if parent is not None:
        parent_pass = ca_passphrase(parent_pass_source, what="parent CA")
        parent_ca = CertificateAuthority.open(parent, passphrase=parent_pass)
    passphrase = ca_passphrase(pass_source, confirm=True)
    key = generate_ca_key(key_type)
    if parent_ca is None:
        ca = CertificateAuthority.init_root(
            ca_dir, config, organisation=organisation, country=country, key=key,
            passphrase=passphrase, days=days or 20 * 365,
        )  # fmt: skip
    else:
        ca = CertificateAuthority.init_subordinate(
            ca_dir, config, parent_ca, organisation=organisation, country=country, key=key,
            passphrase=passphrase, days=days or 10 * 365,
        )  # fmt: skip
    ca.crl()
    kind = "root" if parent_ca is None else f"subordinate of {parent_ca.config.name}"
    click.echo(f"created {kind} CA {name!r} in {ca_dir} (serial {ca.certificate.serial_number:X})")


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
@pass_option
@key_uri_option
def certify(
    ca_dir: pathlib.Path,
    csr_file: pathlib.Path,
    days: int,
    out: pathlib.Path,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
) -> None:
    """As the root: certify an operator CA from its request."""
    csr = load_csr(csr_file.read_bytes(), str(csr_file))
    try:
        ca = _open_signing(ca_dir, pass_source, key_uri)
        cert = ca.certify_ca_request(csr, days=days)
    finally:
        _close_cards()
    out.write_bytes(
        b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in [cert, ca.certificate, *ca.chain]
        )
    )
    click.echo(
        f"certified {cert.subject.rfc4514_string()} (serial {cert.serial_number:X}) -> {out}"
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
@click.option("--publish", "publish_url", metavar="URL", help="Publish to this directory.")
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
) -> None:
    """Issue a signature or encryption certificate from a CSR (and publish it with --publish)."""
    identity = ProfessionalIdentity(
        given_name=given_name,
        surname=surname,
        email=email,
        professional_id=professional_id,
        profession=profession,
        organisation=organisation,
        country=country,
    )
    csr = load_csr(csr_file.read_bytes(), str(csr_file))
    try:
        ca = _open_signing(ca_dir, pass_source, key_uri)
        with _publisher(ca, publish_url):
            cert = ca.issue_from_csr(csr, identity, purpose, days=days)
    finally:
        _close_cards()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if out is not None:
        out.write_bytes(pem)
        click.echo(f"issued {purpose} certificate serial {cert.serial_number:X} -> {out}", err=True)
    else:
        click.echo(pem.decode(), nl=False)


@group.command()
@ca_option
@click.argument("serial")
@click.option(
    "--reason", type=click.Choice(list(REASONS)), default="unspecified", show_default=True
)
@click.option("--publish", "publish_url", metavar="URL", help="Withdraw it from this directory.")
@pass_option
@key_uri_option
def revoke(
    ca_dir: pathlib.Path,
    serial: str,
    reason: str,
    pass_source: pathlib.Path | None,
    key_uri: str | None,
    publish_url: str | None = None,
) -> None:
    """Revoke a certificate (hexadecimal SERIAL) and publish a new CRL at once."""
    number = _serial(serial)
    try:
        ca = _open_signing(ca_dir, pass_source, key_uri)
        with _publisher(ca, publish_url):
            crl = ca.revoke(number, reason)
    finally:
        _close_cards()
    click.echo(f"revoked {number:X} ({reason}); CRL number {_crl_number(crl)} published")


def _crl_number(crl: object) -> str:
    from cryptography import x509

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
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--ocsp", is_flag=True, help="Also answer OCSP for CAs with an ocsp_url (needs keys)."
)
@click.option(
    "--renew-crls", is_flag=True, help="Issue each CA's CRL again before it expires (needs keys)."
)
@pass_option
def serve(
    ca_dirs: tuple[pathlib.Path, ...],
    host: str,
    port: int,
    ocsp: bool,
    pass_source: pathlib.Path | None,
    renew_crls: bool = False,
) -> None:
    """Serve the CAs' CRLs and certificates (and OCSP) at their configured URL paths."""
    from caducee.pki.http import make_server
    from caducee.pki.ocsp import OcspResponder

    responders = []
    if ocsp:
        for ca_dir in ca_dirs:
            if CertificateAuthority.open(ca_dir).config.ocsp_url:
                ca = CertificateAuthority.open(ca_dir, passphrase=ca_passphrase(pass_source))
                responders.append(OcspResponder(ca))
        if not responders:
            raise UsageError("--ocsp: none of these CAs has an ocsp_url")
    scheduler = None
    if renew_crls:
        from caducee.pki.schedule import CrlScheduler

        cas = [CertificateAuthority.open(d, passphrase=ca_passphrase(pass_source)) for d in ca_dirs]
        scheduler = CrlScheduler(cas)
    try:
        server = make_server(ca_dirs, host, port, quiet=False, responders=responders)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    click.echo(f"serving {len(server.routes)} paths on {server.url}", err=True)
    for path in sorted([*server.routes, *server.ocsp]):
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
