"""The mail commands: ``caducee send | fetch | inbox | read | export | agent | outbox``.

Each command reads the configuration (``--config`` or the platform default), builds the agent
(``caducee.agent_setup``) and prints plain words for people or ``--json`` for scripts. Errors are
CaduceeErrors, which ``caducee.cli.main`` prints as one line with a non-zero exit code.
"""

from __future__ import annotations

import pathlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from caducee.cli.commands import CONFIG_OPTION, JSON_OPTION, MailCommand, emit
from caducee.config import Config, load_config
from caducee.errors import CaduceeError, TransportError, UsageError
from caducee.store.messages import OutboxItem

if TYPE_CHECKING:
    from caducee.agent import FetchReport


class StillWaitingError(TransportError):
    """``outbox --retry`` left messages waiting; ``details`` holds the outbox for ``--json``."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def _waiting_summary(items: list[OutboxItem]) -> str:
    """The first message waiting and why (the others usually wait for the same reason)."""
    first = items[0]
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return (
        f"message {first.message} to {', '.join(first.recipients)}{more}:"
        f" {first.last_error or 'not tried yet'}"
    )


def _pin_prompt(label: str) -> str:
    """The card PIN, asked on the terminal only: with no terminal (stdin may be the message),
    one line saying where a PIN can come from instead."""
    from caducee.cli.keyargs import card_pin_prompt

    return card_pin_prompt(
        label, "set CADUCEE_PIN or add pin-source=file:PATH to the card URI in the configuration"
    )


@contextmanager
def _agent(config_path: pathlib.Path | None, need_keys: bool = True) -> Iterator[Any]:
    from caducee.agent_setup import open_agent

    config = load_config(config_path)
    session = open_agent(config, pin_callback=_pin_prompt, need_keys=need_keys)
    try:
        yield session.agent
    finally:
        session.close()


def _addresses(values: tuple[str, ...]) -> list[str]:
    return [a.strip() for v in values for a in v.split(",") if a.strip()]


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
    with _agent(config_path) as agent:
        result = agent.send(
            _addresses(to),
            subject,
            body,
            cc=_addresses(cc),
            attachments=attachments,
            allow_plaintext=allow_plaintext,
            request_mdn=False if no_receipt else None,  # None: the policy says
        )
        waiting = next((i for i in agent.store.outbox() if i.message == result.id), None)
    cause = waiting.last_error if waiting is not None and result.state == "queued" else None
    if as_json:
        emit(
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
    """Fetch new messages, decrypt and verify them, and store them.

    A mailbox that cannot be read does not stop the others: what they bring is stored and
    counted, then the command fails (exit 7) naming the mailbox."""
    from caducee.agent import FetchIncompleteError

    with _agent(config_path) as agent:
        try:
            if as_json or not sys.stderr.isatty():
                report = agent.fetch()
            else:
                from rich.progress import Progress, SpinnerColumn, TextColumn

                with Progress(
                    SpinnerColumn(),
                    TextColumn("fetching: {task.completed} message(s)"),
                    transient=True,
                ) as progress:
                    task = progress.add_task("fetch", total=None)
                    report = agent.fetch(lambda n: progress.advance(task, n))
        except FetchIncompleteError as exc:
            if not as_json and exc.report.new:  # (with --json, the error object has it all)
                _echo_fetched(exc.report)
            raise
    if as_json:
        emit(report.to_json())
        return
    _echo_fetched(report)


def _echo_fetched(report: FetchReport) -> None:
    had = f", {report.already_had} already had" if report.already_had else ""
    click.echo(
        f"{report.new} new: {report.valid} signed and encrypted, {report.flagged} flagged,"
        f" {report.failed} could not be opened, {report.receipts} read receipt(s){had}"
    )
    if report.receipts_due:
        click.echo(
            f"{report.receipts_due} read receipt(s) to send are waiting for a directory to"
            " answer; they are sent at the next fetch",
            err=True,
        )


def _status(message: Any) -> str:
    if message.status == "failed":
        return "FAILED"
    if message.status == "pending":
        return "unchecked"
    status = {
        "valid": "signed",
        "invalid": "BROKEN SIGNATURE",
        "untrusted": "SIGNER NOT CHECKED",
        "unsigned": "NOT SIGNED",
    }.get(message.signature or "", "?")
    if message.signature == "valid" and message.reason:  # valid with a warning
        status += " (WARNING)"
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
        emit(rows)
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


def _stored(agent: Any, message_id: int) -> Any:
    """The stored message (before the card is opened): NoSuchMessageError (exit 9) when
    there is none, UnopenedMessageError when it could not be opened at fetch time."""
    from caducee.agent import check_openable

    return check_openable(agent.store.get(message_id))


@click.command("read", cls=MailCommand)
@CONFIG_OPTION
@click.argument("message_id", type=int)
@click.option("--no-receipt", is_flag=True, help="Do not send a requested read receipt.")
@JSON_OPTION
def read(
    config_path: pathlib.Path | None, message_id: int, no_receipt: bool, as_json: bool
) -> None:
    """Decrypt and show one message (text only; remote content is never loaded)."""
    from caducee.agent import UnopenedMessageError

    with _agent(config_path, need_keys=False) as agent:  # no card needed to say "no such"
        try:
            _stored(agent, message_id)
        except UnopenedMessageError as exc:
            if not as_json:  # what can be shown: why, and the headers outside the encryption
                click.echo(f"COULD NOT BE OPENED: {exc.details['reason']}")
                for name, value in exc.details["headers"].items():
                    click.echo(f"{name.capitalize()}: {value}")
            raise
    with _agent(config_path) as agent:
        view = agent.read(message_id, send_receipt=not no_receipt)
    if as_json:
        emit(view.to_json())
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
    with _agent(config_path, need_keys=False) as agent:  # no card needed to say "no such"
        _stored(agent, message_id)
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
        emit([str(p) for p in written])
    elif not written:
        click.echo(f"message {message_id} has no attachments: nothing written")
    else:
        for path in written:
            click.echo(str(path))


# -- agent loop and outbox -----------------------------------------------------------------------

#: seconds a mailbox whose failure needs fixing is left alone (the outbox's longest delay)
PAUSE_NEEDS_FIXING = 3600.0


@click.command("agent", cls=MailCommand)
@CONFIG_OPTION
@click.option("--once", is_flag=True, help="One round (fetch and outbox retry), then exit.")
@click.option("--interval", type=float, default=None, help="Seconds between rounds.")
def agent(config_path: pathlib.Path | None, once: bool, interval: float | None) -> None:
    """Run continuously: fetch new mail (IMAP IDLE or polling), retry the outbox.

    The first round tries everything waiting in the outbox (the configuration may just have
    been fixed); later rounds try what is due (1 minute, doubling, at most 1 hour)."""
    from caducee.agent import FetchIncompleteError

    config: Config = load_config(config_path)
    wait = interval or config.policy.poll_interval
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _agent(config_path) as mail_agent:
            first_round = True
            # A mailbox whose failure needs fixing (a refused password: the server may lock
            # the account) is not tried again for an hour, or until the agent is restarted.
            paused: dict[str, float] = {}  # source name -> time.monotonic() it may be tried
            while not stop.is_set():
                failures: list[TransportError] = []
                fetched: Any = None
                now = time.monotonic()
                active = [name for name in mail_agent.sources if paused.get(name, 0.0) <= now]
                try:
                    fetched = mail_agent.fetch(sources=active).new
                except FetchIncompleteError as exc:  # a source down: the others were read
                    fetched = exc.report.new
                    for name, error in exc.failures:
                        failures.append(error)
                        if error.needs_fixing:
                            paused[name] = now + PAUSE_NEEDS_FIXING
                except TransportError as exc:
                    failures.append(exc)
                needs_fixing: str | None = None
                try:
                    outcome = mail_agent.retry_outbox(due_only=not first_round)
                    sent, waiting = outcome
                    needs_fixing = outcome.needs_fixing
                except TransportError as exc:
                    failures.append(exc)
                    sent = waiting = 0
                queue = mail_agent.store.outbox() if waiting else []
                click.echo(
                    f"fetched {'nothing' if fetched is None else fetched},"
                    f" sent {sent}, waiting {waiting}"
                    + (f": {_waiting_summary(queue)}" if queue else ""),
                    err=True,
                )
                if needs_fixing:  # said every round: it will not pass by itself
                    click.echo(f"warning: {needs_fixing}", err=True)
                if once and failures:  # one round asked: its failure is the exit status
                    raise failures[0]
                for failure in failures:  # server down: say so, keep running
                    click.echo(f"warning: {failure}", err=True)
                for name in sorted(n for n, until in paused.items() if until > time.monotonic()):
                    click.echo(
                        f"warning: mailbox {name} needs fixing: not read for an hour;"
                        " restart the agent once the configuration is fixed",
                        err=True,
                    )
                if once:
                    break
                first_round = False
                _wait(mail_agent, wait, stop, paused)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("agent stopped", err=True)


def _wait(mail_agent: Any, seconds: float, stop: threading.Event, paused: dict[str, float]) -> bool:
    """Wait until a source may have new mail (True), up to ``seconds`` or a stop (False).

    Each source in turn waits for a short slice (IMAP IDLE, or a look at a Maildir), so mail
    on any source is noticed within seconds and a signal is noticed quickly. A source that
    fails is not asked again in this wait (a server down is not called every few seconds);
    one whose failure needs fixing is paused like a failed fetch."""
    now = time.monotonic()
    sources = [(n, s) for n, s in mail_agent.sources.items() if paused.get(n, 0.0) <= now]
    failed: set[str] = set()
    remaining = seconds
    turn = 0
    while remaining > 0 and not stop.is_set():
        step = min(remaining, 5.0 / max(1, len(sources)))
        if not sources:
            stop.wait(step)
        else:
            name, source = sources[turn % len(sources)]
            turn += 1
            if name in failed:
                stop.wait(step)
            else:
                try:
                    if source.wait_for_new(step):
                        return True
                except CaduceeError as exc:
                    failed.add(name)
                    if getattr(exc, "needs_fixing", False):
                        paused[name] = time.monotonic() + PAUSE_NEEDS_FIXING
                    stop.wait(step)
        remaining -= step
    return False


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
    # asked to send now and some could not go: an error, naming why the first one waits
    still = (
        f"sent {result[0]}, still waiting {len(items)}: {_waiting_summary(items)}"
        if result is not None and items
        else None
    )
    if as_json:
        data = {"waiting": rows, **({"sent": result[0]} if result else {})}
        if still is not None:
            raise StillWaitingError(still, data)
        emit(data)
        return
    if result is not None and still is None:
        click.echo(f"sent {result[0]}, still waiting {len(items)}")
    if not rows:
        click.echo("the outbox is empty")
    for r in rows:
        click.echo(
            f"{r['id']}: message {r['message']} to {', '.join(r['recipients'])},"
            f" {r['attempts']} attempt(s), last error: {r['last_error']}"
            + (f", next attempt {r['next_attempt_at']}" if r["next_attempt_at"] else "")
        )
    if still is not None:
        raise StillWaitingError(still, {})
