"""The mail commands: ``caducee init | send | fetch | inbox | read | export | agent | outbox``.

Each command reads the configuration (``--config`` or the platform default), builds the agent
(``caducee.agent_setup``) and prints plain words for people or ``--json`` for scripts. Errors are
CaduceeErrors, which ``caducee.cli.main`` prints as one line with a non-zero exit code.
"""

from __future__ import annotations

import json
import pathlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from caducee.config import Config, default_config_path, default_data_dir, load_config
from caducee.errors import UsageError

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


@click.command("init")
@CONFIG_OPTION
@click.option("--email", help="Your professional e-mail address.")
@click.option("--name", help="Your name as shown to correspondents.")
@click.option("--card", help="PKCS#11 URI of your card (instead of software keys).")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--signing-cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--decryption-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--decryption-cert", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--anchor",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Trusted CA certificate (repeatable).",
)
@click.option("--crl", multiple=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--no-fetch-crls", is_flag=True, help="Use only the CRL files given.")
@click.option("--directory", "directories", multiple=True, help="Directory URL (repeatable).")
@click.option(
    "--address-book",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Correspondents' certificates (PEM), repeatable.",
)
@click.option("--smtp-host")
@click.option("--smtp-port", type=int)
@click.option("--smtp-security", type=click.Choice(["starttls", "tls", "none"]))
@click.option("--smtp-user")
@click.option("--smtp-password-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--imap-host")
@click.option("--imap-port", type=int)
@click.option("--imap-security", type=click.Choice(["starttls", "tls", "none"]))
@click.option("--imap-user")
@click.option("--imap-password-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--maildir", type=click.Path(file_okay=False), help="Read a local Maildir.")
@click.option("--data-dir", type=click.Path(file_okay=False))
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
        identity["card"] = card
    else:
        for key in ("signing_key", "signing_cert", "decryption_key", "decryption_cert"):
            identity[key] = _ask(opts[key], key.replace("_", " ").capitalize() + " file", ask)
        if not identity["decryption_key"] or not identity["decryption_cert"]:
            raise UsageError("give --card, or --decryption-key and --decryption-cert")
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
    data: dict[str, Any] = {
        "data_dir": str(pathlib.Path(opts["data_dir"] or default_data_dir()).resolve()),
        "identity": identity,
        "trust": {
            "anchors": [str(pathlib.Path(a.strip()).resolve()) for a in anchors],
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
    if opts["maildir"]:
        data["maildir"] = [
            {"name": "maildir", "path": str(pathlib.Path(opts["maildir"]).resolve())}
        ]
    written = write_config(path, data)
    click.echo(f"configuration written to {written}")


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
        table["password_file"] = str(pathlib.Path(secret).resolve())
    return table


# -- send ----------------------------------------------------------------------------------------


@click.command("send")
@CONFIG_OPTION
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable).")
@click.option("--cc", multiple=True, help="Copy recipient (repeatable).")
@click.option("--subject", required=True)
@click.option("--attach", multiple=True, type=click.Path(exists=True, dir_okay=False))
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
    help="Send signed but unencrypted to recipients without a valid certificate.",
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
    if as_json:
        _emit(
            {
                "id": result.id,
                "message_id": result.message_id,
                "state": result.state,
                "encrypted": result.encrypted,
                "recipients": list(result.recipients),
                "warning": result.warning,
            }
        )
        return
    how = "signed and encrypted" if result.encrypted else "signed, NOT encrypted"
    verb = "sent" if result.state == "sent" else "queued (will be retried)"
    click.echo(f"message {result.id} {how}, {verb} to {', '.join(result.recipients)}")
    if result.warning:
        click.echo(f"warning: {result.warning}", err=True)


# -- fetch, inbox, read, export ------------------------------------------------------------------


@click.command("fetch")
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


@click.command("inbox")
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

    table = Table("id", "date", "to" if sent else "from", "status", "subject")
    for r in rows:
        status = r["status"]
        if sent:
            status = ", ".join(f"{a}: {s}" for a, s in r["recipients"].items())
        table.add_row(
            str(r["id"]),
            r["date"] or "",
            (r["to"] if sent else r["from"]) or "",
            status,
            r["subject"] or "",
        )
    Console().print(table)


@click.command("read")
@CONFIG_OPTION
@click.argument("message_id", type=int)
@click.option("--no-receipt", is_flag=True, help="Do not send a requested read receipt.")
@JSON_OPTION
def read(
    config_path: pathlib.Path | None, message_id: int, no_receipt: bool, as_json: bool
) -> None:
    """Decrypt and show one message (text only; remote content is never loaded)."""
    with _agent(config_path) as agent:
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


@click.command("export")
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
    else:
        for path in written:
            click.echo(str(path))


# -- agent loop and outbox -----------------------------------------------------------------------


@click.command("agent")
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
                try:
                    report = mail_agent.fetch()
                    sent, waiting = mail_agent.retry_outbox(due_only=True)
                    click.echo(f"fetched {report.new}, sent {sent}, waiting {waiting}", err=True)
                except TransportError as exc:  # server down: say so, keep running
                    click.echo(f"warning: {exc}", err=True)
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


@click.command("outbox")
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
