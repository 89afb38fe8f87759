"""``caducee directory``: look up, publish, withdraw and serve professionals' certificates.

Directories are named by URL (``sqlite:///path``, ``ldap://host:port/<base DN>``,
``http://host:port``); several ``--directory`` options, or a ``--config`` file listing the
operators, make a federated lookup. The default is the embedded SQLite directory.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import click
from cryptography import x509

from caducee.directory.api import (
    Directory,
    EntryNotFoundError,
    certificate_purposes,
    entry_from_certificate,
    fingerprint,
)
from caducee.errors import CaduceeError, UsageError
from caducee.serials import format_serial, parse_serial

__all__ = ["group"]


def default_directory() -> str:
    """``$CADUCEE_HOME/directory.sqlite``, else under ``$XDG_DATA_HOME`` (``~/.local/share``)."""
    home = os.environ.get("CADUCEE_HOME")
    if home:
        base = pathlib.Path(home)
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(pathlib.Path.home() / ".local" / "share")
        base = pathlib.Path(xdg) / "caducee"
    return f"sqlite://{base / 'directory.sqlite'}"


def _read_secret(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _open(
    url: str | None,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    *,
    create: bool,
) -> Directory:
    """``create``: whether a missing SQLite database file may be created (never its folder)."""
    from caducee.directory.federation import open_directory

    if url is None and create:
        # caducee's own data folder is made on first use; a folder named by the user never is
        folder = pathlib.Path(default_directory().removeprefix("sqlite://")).parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return open_directory(
        url or default_directory(),
        create=create,
        bind_dn=bind_dn,
        password=_read_secret(password_file),
        token=_read_secret(token_file),
        timeout=timeout,
    )


def read_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (one or more) or a DER file."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise UsageError(f"{path}: not a PEM or DER certificate") from None


_write_options = [
    click.option(
        "--directory",
        "-d",
        "url",
        metavar="URL",
        envvar="CADUCEE_DIRECTORY",
        help="Directory URL (default: the embedded SQLite directory).",
    ),
    click.option("--bind-dn", help="LDAP: DN to bind as for changes."),
    click.option(
        "--password-file",
        type=click.Path(dir_okay=False),
        help="LDAP: file holding the bind password.",
    ),
    click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        help="HTTP: file holding the operator token.",
    ),
    click.option(
        "--timeout",
        type=float,
        default=5.0,
        show_default=True,
        help="Seconds before an unreachable directory is an error.",
    ),
]


def write_options(fn: Any) -> Any:
    for option in reversed(_write_options):
        fn = option(fn)
    return fn


@click.group(name="directory")
def group() -> None:
    """Look up, publish and serve professionals' certificates."""


@group.command()
@click.option(
    "--directory",
    "-d",
    "urls",
    metavar="URL",
    multiple=True,
    help="Directory URL; repeat to query several operators together.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True),
    help="TOML file whose [directory] table lists the operators.",
)
@click.option("--email", "-e", help="E-mail address (exact).")
@click.option("--name", "-n", help="Common name, surname or given name (exact, any case).")
@click.option("--professional-id", "-p", help="National professional identifier (11 digits).")
@click.option("--organisation", "-o", help="Organisation (exact, any case).")
@click.option("--timeout", type=float, default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (entries and problems).")
@click.option(
    "--save",
    "save_dir",
    type=click.Path(file_okay=False),
    help="Write each certificate found to DIR/<e-mail>-<usage>-<serial>.pem.",
)
def lookup(
    urls: tuple[str, ...],
    config_file: str | None,
    email: str | None,
    name: str | None,
    professional_id: str | None,
    organisation: str | None,
    timeout: float,
    as_json: bool,
    save_dir: str | None,
) -> None:
    """Find candidate certificates (validate them before use)."""
    from cryptography.hazmat.primitives import serialization

    from caducee.directory.federation import (
        FederatedDirectory,
        load_config,
        load_federation,
        open_directory,
    )

    directory: Directory
    if config_file:
        if urls:
            raise UsageError("give --config or --directory, not both")
        directory = load_federation(load_config(config_file), base=pathlib.Path(config_file).parent)
    else:
        env = os.environ.get("CADUCEE_DIRECTORY")
        chosen = list(urls) or ([env] if env else [default_directory()])
        directory = FederatedDirectory(
            [open_directory(u, timeout=timeout, create=False) for u in chosen], timeout=timeout
        )
    with directory:
        result = directory.lookup(
            email=email, name=name, professional_id=professional_id, organisation=organisation
        )
    for problem in result.problems:
        click.echo(f"caducee: warning: {problem}", err=True)
    if as_json:
        from caducee.directory.http import entry_to_json

        click.echo(
            json.dumps(
                {
                    "entries": [entry_to_json(e) for e in result.entries],
                    "problems": list(result.problems),
                },
                indent=2,
            )
        )
    if not result.entries:
        asked = ", ".join(
            f"{k}={v}"
            for k, v in (
                ("email", email),
                ("name", name),
                ("professional id", professional_id),
                ("organisation", organisation),
            )
            if v
        )
        raise EntryNotFoundError(f"no directory entry matches {asked}")
    for entry in result.entries:
        if not as_json:
            click.echo(
                f"{entry.email}  {entry.common_name}"
                + (f"  {entry.profession}" if entry.profession else "")
                + (f"  [{entry.organisation}]" if entry.organisation else "")
                + (f"  id {entry.professional_id}" if entry.professional_id else "")
                + f"  (from {entry.source})"
            )
        for cert in entry.certificates:
            usage = "+".join(sorted(certificate_purposes(cert)))
            if not as_json:
                click.echo(
                    f"  {usage:<20} serial {format_serial(cert.serial_number)}  until "
                    f"{cert.not_valid_after_utc:%Y-%m-%d}  sha256 {fingerprint(cert)[:16]}"
                )
            if save_dir:
                out = pathlib.Path(save_dir)
                out.mkdir(parents=True, exist_ok=True)
                target = out / f"{entry.email}-{usage}-{format_serial(cert.serial_number)}.pem"
                target.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@group.command()
@click.argument("certificates", nargs=-1, required=True, type=click.Path(dir_okay=False))
@write_options
@click.option("--email", help="E-mail of the entry (default: the certificate's).")
@click.option("--profession", help="Profession (default: the subject's title).")
@click.option("--organisation", help="Organisation (default: the subject's O).")
@click.option("--professional-id", help="National professional identifier (11 digits).")
def publish(
    certificates: tuple[str, ...],
    url: str | None,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    email: str | None,
    profession: str | None,
    organisation: str | None,
    professional_id: str | None,
) -> None:
    """Publish a professional's certificates (signature and encryption) as one entry."""
    certs = [c for path in certificates for c in read_certificates(path)]
    entry = entry_from_certificate(
        certs[0],
        email=email,
        profession=profession,
        organisation=organisation,
        professional_id=professional_id,
        extra_certificates=certs[1:],
    )
    with _open(url, bind_dn, password_file, token_file, timeout, create=True) as directory:
        stored = directory.publish(entry)
        click.echo(
            f"published {len(entry.certificates)} certificate(s) for {stored.email} "
            f"({len(stored.certificates)} now in {directory.name})"
        )


@group.command()
@click.argument("certificate", required=False, type=click.Path(dir_okay=False))
@write_options
@click.option("--serial", help="Serial number (hex) of the certificate to withdraw.")
@click.option("--email", help="Withdraw the whole entry of this e-mail.")
def withdraw(
    certificate: str | None,
    url: str | None,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    serial: str | None,
    email: str | None,
) -> None:
    """Withdraw a certificate (revocation) or a whole entry."""
    if sum(x is not None for x in (certificate, serial, email)) != 1:
        raise UsageError("give exactly one of: CERTIFICATE, --serial, --email")
    with _open(url, bind_dn, password_file, token_file, timeout, create=False) as directory:
        if certificate is not None:
            removed = sum(directory.withdraw(c) for c in read_certificates(certificate))
        elif serial is not None:
            try:
                number = parse_serial(serial)
            except ValueError:
                raise UsageError(f"--serial must be hexadecimal, got {serial[:40]!r}") from None
            removed = directory.withdraw(serial=number)
        else:
            removed = directory.withdraw(email=email)
        if not removed:
            raise EntryNotFoundError(f"nothing to withdraw from {directory.name}")
        click.echo(f"withdrew {removed} certificate(s) from {directory.name}")


@group.command()
@write_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8389, show_default=True)
@click.option(
    "--admin-token-file",
    type=click.Path(dir_okay=False),
    help="Allow publish/withdraw with this bearer token (default: read-only).",
)
def serve(
    url: str | None,
    bind_dn: str | None,
    password_file: str | None,
    token_file: str | None,
    timeout: float,
    host: str,
    port: int,
    admin_token_file: str | None,
) -> None:
    """Serve a directory over HTTP (JSON lookups and DER downloads)."""
    from caducee.directory.http import DirectoryHTTPServer

    token = _read_secret(admin_token_file)
    # read-only: serve only a database that exists; read-write may start an empty one
    directory = _open(url, bind_dn, password_file, token_file, timeout, create=token is not None)
    from caducee.directory.sqlite import SqliteDirectory

    try:
        if isinstance(directory, SqliteDirectory):
            directory.ensure_open()  # a missing database is refused now, not at each lookup
        server = DirectoryHTTPServer(directory, (host, port), token=token)
    except CaduceeError:
        directory.close()
        raise
    except OSError as exc:
        directory.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(
        f"serving {directory.name} on {server.url} "
        f"({'read-write' if server.token else 'read-only'})",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        directory.close()
