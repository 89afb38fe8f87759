"""The mail commands: ``caducee init | send | fetch | inbox | read | export | agent | outbox``.

Each command reads the configuration (``--config`` or the platform default), builds the agent
(``caducee.agent_setup``) and prints plain words for people or ``--json`` for scripts. Errors are
CaduceeErrors, which ``caducee.cli.main`` prints as one line with a non-zero exit code.
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

from caducee.config import Config, default_config_path, default_data_dir, load_config
from caducee.errors import CaduceeError, CryptoError, UsageError
from caducee.store.messages import StoreError


class NoSuchMessageError(StoreError):
    """The message number given is not in the local message store."""


class UnopenedMessageError(CryptoError):
    """The message was stored but could not be opened when it was fetched; ``details`` holds
    what can still be shown (its outer headers), for ``--json``."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


class MailCommand(click.Command):
    """A mail command whose failures, with ``--json``, also print ``{"error", "exit_code"}`` on
    standard output, so a script reading stdout sees them; ``caducee.cli.main`` still prints
    the one line on standard error and sets the exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # before parsing, which consumes ``args``
        wants_json = "--json" in args and any(p.name == "as_json" for p in self.params)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # bad options: parsed before the command runs
            if wants_json:
                _emit_error(exc.format_message(), exc.exit_code)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, BrokenPipeError):
            raise
        except Exception as exc:
            if ctx.params.get("as_json"):
                _emit_error(*_failure(exc), getattr(exc, "details", None))
            raise
        except KeyboardInterrupt:
            if ctx.params.get("as_json"):
                _emit_error("interrupted", 130)
            raise


def _failure(exc: Exception) -> tuple[str, int]:
    """The message and exit code ``caducee.cli.main`` reports for ``exc``."""
    if isinstance(exc, CaduceeError):
        return str(exc), exc.exit_code
    if isinstance(exc, click.exceptions.Abort):
        return "aborted", 130
    if isinstance(exc, click.ClickException):
        return exc.format_message(), exc.exit_code
    return f"internal error ({type(exc).__name__}): {exc}; set CADUCEE_DEBUG=1 for details", 70


def _emit_error(message: str, code: int, details: dict[str, Any] | None = None) -> None:
    _emit({**(details or {}), "error": message, "exit_code": code})


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    default=None,
    help="Configuration file (default: the platform's configuration directory).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _pin_prompt(label: str) -> str:
    return str(click.prompt(f"PIN for {label}", hide_input=True, err=True))


@contextmanager
def _agent(config_path: pathlib.Path | None, need_keys: bool = True) -> Iterator[Any]:
    from caducee.agent_setup import open_agent

    config = load_config(config_path)
    session = open_agent(config, pin_callback=_pin_prompt, need_keys=need_keys)
    try:
        yield session.agent
    finally:
        session.close()


def _emit(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))


def _addresses(values: tuple[str, ...]) -> list[str]:
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


# -- init --------------------------------------------------------------------------------------


def _ask(value: Any, prompt: str, interactive: bool, default: Any = None, **kw: Any) -> Any:
    if value is not None or not interactive:
        return value if value is not None else default
    return click.prompt(prompt, default=default, show_default=default is not None, **kw)


@click.command("init", cls=MailCommand)
@CONFIG_OPTION
@click.option("--email", help="Your professional e-mail address (must be in your certificates).")
@click.option("--name", help="Your name as shown to correspondents.")
@click.option(
    "--card",
    help="PKCS#11 URI of your card, instead of software keys"
    " (pkcs11:token=LABEL?module-path=/path/to/module.so).",
)
@click.option(
    "--signing-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Software signing private key (PEM or DER, unencrypted); with --signing-cert.",
)
@click.option(
    "--signing-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="Your signing certificate: it must hold --signing-key's public key and --email.",
)
@click.option(
    "--decryption-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Software decryption private key (PEM or DER, unencrypted); with --decryption-cert.",
)
@click.option(
    "--decryption-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="Your encryption certificate: it must hold --decryption-key's public key and --email.",
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
@click.option("--smtp-host", help="SMTP submission server (host name).")
@click.option("--smtp-port", type=int, help="SMTP port (default 587, or 465 with tls).")
@click.option(
    "--smtp-security",
    type=click.Choice(["starttls", "tls", "none"]),
    help="SMTP connection security (default starttls).",
)
@click.option("--smtp-user", help="SMTP user name (with --smtp-password-file).")
@click.option(
    "--smtp-password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the SMTP password (it is never written in the configuration).",
)
@click.option("--imap-host", help="IMAP server to fetch mail from (host name).")
@click.option("--imap-port", type=int, help="IMAP port (default 143, or 993 with tls).")
@click.option(
    "--imap-security",
    type=click.Choice(["starttls", "tls", "none"]),
    help="IMAP connection security (default starttls).",
)
@click.option("--imap-user", help="IMAP user name (with --imap-password-file).")
@click.option(
    "--imap-password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the IMAP password (it is never written in the configuration).",
)
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
        for use in ("decryption", "signing"):
            if identity[f"{use}_key"]:
                _check_key_pair(identity[f"{use}_key"], identity[f"{use}_cert"], email, use)
    identity = {
        k: (str(pathlib.Path(v).resolve()) if k.endswith(("_key", "_cert")) and v else v)
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


def _check_key_pair(key_path: str, cert_path: str, email: str, use: str) -> None:
    """The key file must hold the private key of the certificate, which must name ``email``."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from caducee.certfiles import load_certificate
    from caducee.keys.software import load_private_key
    from caducee.pki.validate import check_email

    what = f"{use} certificate"
    cert = load_certificate(_read_file(cert_path, what), f"{what} {cert_path}")
    data = _read_file(key_path, f"{use} key")
    if b"ENCRYPTED" not in data:  # an encrypted key is checked when first opened
        try:
            key = load_private_key(data)
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


@click.command("send", cls=MailCommand)
@CONFIG_OPTION
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable).")
@click.option("--cc", multiple=True, help="Copy recipient (repeatable).")
@click.option("--subject", required=True, help="Subject (one line; encrypted with the text).")
@click.option(
    "--attach",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="File to attach, signed and encrypted with the message (repeatable).",
)
@click.option(
    "--body",
    "body_source",
    default="-",
    show_default=True,
    help="File holding the text, or - for standard input.",
)
@click.option(
    "--allow-plaintext",
    is_flag=True,
    help="If any recipient has no valid encryption certificate, send the message signed but"
    " NOT ENCRYPTED, to every recipient (all of them get it in clear); when every recipient"
    " has one, it is encrypted as usual. Refused if the policy forbids plaintext.",
)
@click.option("--no-receipt", is_flag=True, help="Do not ask for read receipts.")
@JSON_OPTION
def send(
    config_path: pathlib.Path | None,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    subject: str,
    attach: tuple[str, ...],
    body_source: str,
    allow_plaintext: bool,
    no_receipt: bool,
    as_json: bool,
) -> None:
    """Sign with your card, encrypt to every recipient and to you, and send."""
    from caducee.agent import Attachment

    if "\r" in subject or "\n" in subject:
        raise UsageError("--subject must be one line (it contains a line break)")
    if body_source == "-":
        body = sys.stdin.read()
    else:
        try:
            body = pathlib.Path(body_source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the body from {body_source}: {exc}") from None
    attachments = [Attachment.from_file(p) for p in attach]
    config = load_config(config_path)
    with _agent(config_path) as agent:
        result = agent.send(
            _addresses(to),
            subject,
            body,
            cc=_addresses(cc),
            attachments=attachments,
            allow_plaintext=allow_plaintext,
            request_mdn=config.policy.request_mdn and not no_receipt,
        )
        waiting = next((i for i in agent.store.outbox() if i.message == result.id), None)
    cause = waiting.last_error if waiting is not None and result.state == "queued" else None
    if as_json:
        _emit(
            {
                "id": result.id,
                "message_id": result.message_id,
                "state": result.state,
                "encrypted": result.encrypted,
                "recipients": list(result.recipients),
                "warning": result.warning,
                "queued_because": cause,
            }
        )
        return
    how = "signed and encrypted" if result.encrypted else "signed, NOT encrypted"
    warning = result.warning
    if result.state == "sent":
        click.echo(f"message {result.id} {how}, sent to {', '.join(result.recipients)}")
    else:
        who = ", ".join(waiting.recipients if waiting is not None else result.recipients)
        click.echo(
            f"message {result.id} {how}, NOT SENT YET: queued in the outbox for {who},"
            f" will be retried; cause: {cause or 'unknown'}"
        )
        # the agent's warning repeats the queueing; keep only what it adds (no encryption)
        _, plain, rest = (warning or "").partition("sent signed but NOT ENCRYPTED")
        warning = plain + rest if plain else None
    if warning:
        click.echo(f"warning: {warning}", err=True)


# -- fetch, inbox, read, export ------------------------------------------------------------------


@click.command("fetch", cls=MailCommand)
@CONFIG_OPTION
@JSON_OPTION
def fetch(config_path: pathlib.Path | None, as_json: bool) -> None:
    """Fetch new messages, decrypt and verify them, and store them."""
    with _agent(config_path) as agent:
        if as_json or not sys.stderr.isatty():
            report = agent.fetch()
        else:
            from rich.progress import Progress, SpinnerColumn, TextColumn

            with Progress(
                SpinnerColumn(), TextColumn("fetching: {task.completed} message(s)"), transient=True
            ) as progress:
                task = progress.add_task("fetch", total=None)
                report = agent.fetch(lambda n: progress.advance(task, n))
    if as_json:
        _emit(
            {
                "new": report.new,
                "valid": report.valid,
                "flagged": report.flagged,
                "failed": report.failed,
                "receipts": report.receipts,
                "ids": report.ids,
            }
        )
        return
    click.echo(
        f"{report.new} new: {report.valid} signed and encrypted, {report.flagged} flagged,"
        f" {report.failed} could not be opened, {report.receipts} read receipt(s)"
    )


def _status(message: Any) -> str:
    if message.status == "failed":
        return "FAILED"
    if message.status == "pending":
        return "unchecked"
    status = {"valid": "signed", "invalid": "BROKEN SIGNATURE", "unsigned": "NOT SIGNED"}.get(
        message.signature or "", "?"
    )
    return status + ("" if message.encrypted else ", NOT ENCRYPTED")


def _row(message: Any) -> dict[str, Any]:
    subject = message.outer_subject
    if message.encrypted and (subject in (None, "[...]", "...")):
        subject = "[encrypted]"
    row: dict[str, Any] = {
        "id": message.id,
        "direction": message.direction,
        "date": message.outer_date,
        "from": message.outer_from,
        "to": message.outer_to,
        "subject": subject,
        "status": _status(message),
        "signature": message.signature,
        "reason": message.reason,
        "encrypted": message.encrypted,
        "signer": message.signer_email,
        "error": message.error,
    }
    if message.direction == "out":
        row["recipients"] = {r.address: r.state for r in message.recipients}
    return row


@click.command("inbox", cls=MailCommand)
@CONFIG_OPTION
@click.option("--sent", is_flag=True, help="List sent messages with each recipient's state.")
@JSON_OPTION
def inbox(config_path: pathlib.Path | None, sent: bool, as_json: bool) -> None:
    """List messages with their security status (no card needed)."""
    with _agent(config_path, need_keys=False) as agent:
        rows = [_row(m) for m in agent.store.messages("out" if sent else "in")]
    if as_json:
        _emit(rows)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "date", "to" if sent else "from", "status", "subject")
    for r in rows:
        status = r["status"]
        if sent:
            status = ", ".join(f"{a}: {s}" for a, s in r["recipients"].items())
        # Text cells are shown as they are: a subject, a name or our own "[encrypted]" is
        # never read as rich markup ("[bold red]" stays four words of text).
        table.add_row(
            *(
                Text(cell or "")
                for cell in (
                    str(r["id"]),
                    r["date"],
                    r["to"] if sent else r["from"],
                    status,
                    r["subject"],
                )
            )
        )
    Console().print(table)


#: how a bytes value is written by repr(): b'...' or b"..." (with escapes)
_BYTES_REPR = re.compile(r"\bb'(?:[^'\\]|\\.)*'" + "|" + r'\bb"(?:[^"\\]|\\.)*"')


def _why(error: str | None) -> str:
    """The stored reason a message could not be opened, without raw bytes quoted in it."""
    return _BYTES_REPR.sub("(binary data)", error or "unknown error")


def _stored(agent: Any, message_id: int) -> Any:
    """The stored message, or the store's own error when there is no such message; a message
    that could not be opened at fetch time is reported as such, with its outer headers."""
    try:
        stored = agent.store.get(message_id)
    except UsageError:
        raise NoSuchMessageError(f"no message {message_id} in the message store") from None
    if stored.status == "failed":
        why = _why(stored.error)
        headers = {
            "from": stored.outer_from,
            "to": stored.outer_to,
            "date": stored.outer_date,
            "subject": stored.outer_subject,
        }
        raise UnopenedMessageError(
            f"message {message_id} COULD NOT BE OPENED: {why}",
            {
                "id": message_id,
                "reason": why,
                "headers": {k: v for k, v in headers.items() if v is not None},
            },
        )
    return stored


@click.command("read", cls=MailCommand)
@CONFIG_OPTION
@click.argument("message_id", type=int)
@click.option("--no-receipt", is_flag=True, help="Do not send a requested read receipt.")
@JSON_OPTION
def read(
    config_path: pathlib.Path | None, message_id: int, no_receipt: bool, as_json: bool
) -> None:
    """Decrypt and show one message (text only; remote content is never loaded)."""
    with _agent(config_path) as agent:
        try:
            _stored(agent, message_id)
        except UnopenedMessageError as exc:
            if not as_json:  # what can be shown: why, and the headers outside the encryption
                click.echo(f"COULD NOT BE OPENED: {exc.details['reason']}")
                for name, value in exc.details["headers"].items():
                    click.echo(f"{name.capitalize()}: {value}")
            raise
        view = agent.read(message_id, send_receipt=not no_receipt)
    if as_json:
        _emit(view.to_json())
        return
    mark = "" if view.signature == "valid" and view.encrypted else "!! "
    click.echo(f"{mark}{view.security}")
    for name in ("from", "to", "cc", "date", "subject"):
        if name in view.headers:
            click.echo(f"{name.capitalize()}: {view.headers[name]}")
    if not view.headers_protected:
        click.echo("(headers not protected by the signature)")
    for address, state in view.recipients:
        click.echo(f"  {address}: {state}")
    click.echo("")
    if view.body_type and view.body_type != "text/plain":
        click.echo(f"[{view.body_type}; remote content not loaded]")
    click.echo(view.body)
    for link in view.links:
        click.echo(f"  {link}")
    attachments = [p for p in view.parts if p.attachment]
    if attachments:
        click.echo("\nAttachments:")
        for p in attachments:
            click.echo(f"  {p.filename} ({p.content_type}, {p.size} bytes)")


@click.command("export", cls=MailCommand)
@CONFIG_OPTION
@click.argument("message_id", type=int)
@click.option(
    "--attachments",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    help="Directory to write the attachments into.",
)
@JSON_OPTION
def export(
    config_path: pathlib.Path | None, message_id: int, directory: pathlib.Path, as_json: bool
) -> None:
    """Write a message's attachments (mode 0600, safe names)."""
    with _agent(config_path) as agent:
        _stored(agent, message_id)
        if as_json or not sys.stderr.isatty():
            written = agent.export(message_id, directory)
        else:
            from rich.progress import Progress, SpinnerColumn, TextColumn

            with Progress(
                SpinnerColumn(), TextColumn("exporting: {task.completed} file(s)"), transient=True
            ) as progress:
                task = progress.add_task("export", total=None)
                written = agent.export(message_id, directory, lambda n: progress.advance(task, n))
    if as_json:
        _emit([str(p) for p in written])
    elif not written:
        click.echo(f"message {message_id} has no attachments: nothing written")
    else:
        for path in written:
            click.echo(str(path))


# -- agent loop and outbox -----------------------------------------------------------------------


@click.command("agent", cls=MailCommand)
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="One round (fetch and outbox retry), then exit.")
@click.option("--interval", type=float, default=None, help="Seconds between rounds.")
def agent(config_path: pathlib.Path | None, once: bool, interval: float | None) -> None:
    """Run continuously: fetch new mail (IMAP IDLE or polling), retry the outbox."""
    from caducee.errors import TransportError

    config: Config = load_config(config_path)
    wait = interval or config.policy.poll_interval
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _agent(config_path) as mail_agent:
            while not stop.is_set():
                failures: list[TransportError] = []
                fetched: Any = None
                try:
                    fetched = mail_agent.fetch().new
                except TransportError as exc:  # a source down: still retry the outbox
                    failures.append(exc)
                try:
                    sent, waiting = mail_agent.retry_outbox(due_only=True)
                except TransportError as exc:
                    failures.append(exc)
                    sent = waiting = 0
                click.echo(
                    f"fetched {'nothing' if fetched is None else fetched},"
                    f" sent {sent}, waiting {waiting}",
                    err=True,
                )
                if once and failures:  # one round asked: its failure is the exit status
                    raise failures[0]
                for failure in failures:  # server down: say so, keep running
                    click.echo(f"warning: {failure}", err=True)
                if once:
                    break
                _wait(mail_agent, wait, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("agent stopped", err=True)


def _wait(mail_agent: Any, seconds: float, stop: threading.Event) -> None:
    """IDLE on the first source in short slices so a signal is noticed quickly."""
    from caducee.errors import CaduceeError

    sources = list(mail_agent.sources.values())
    remaining = seconds
    while remaining > 0 and not stop.is_set():
        step = min(remaining, 5.0)
        try:
            if sources and sources[0].wait_for_new(step):
                return
            if not sources:
                stop.wait(step)
        except CaduceeError:
            stop.wait(step)
        remaining -= step


@click.command("outbox", cls=MailCommand)
@CONFIG_OPTION
@click.option("--retry", is_flag=True, help="Try to send everything waiting now.")
@JSON_OPTION
def outbox(config_path: pathlib.Path | None, retry: bool, as_json: bool) -> None:
    """Show (or retry) messages waiting to be sent."""
    with _agent(config_path, need_keys=False) as mail_agent:
        result: tuple[int, int] | None = mail_agent.retry_outbox() if retry else None
        items = mail_agent.store.outbox()
    rows = [
        {
            "id": i.id,
            "message": i.message,
            "recipients": list(i.recipients),
            "queued_at": i.queued_at,
            "attempts": i.attempts,
            "last_error": i.last_error,
            "next_attempt_at": i.next_attempt_at,
        }
        for i in items
    ]
    if as_json:
        _emit({"waiting": rows, **({"sent": result[0]} if result else {})})
        return
    if result is not None:
        click.echo(f"sent {result[0]}, still waiting {result[1]}")
    if not rows:
        click.echo("the outbox is empty")
    for r in rows:
        click.echo(
            f"{r['id']}: message {r['message']} to {', '.join(r['recipients'])},"
            f" {r['attempts']} attempt(s), last error: {r['last_error']}"
            + (f", next attempt {r['next_attempt_at']}" if r["next_attempt_at"] else "")
        )
