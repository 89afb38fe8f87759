"""The embedded mail service of ``make demo``: an SMTP receiver that files mail into Maildirs.

Why: the demo must exchange real SMTP mail between two operators on one machine without
installing or configuring a mail server. Each operator gets one of these on a loopback port; the
agent submits with :class:`~caducee.mail.smtp.SmtpSubmitter` (security "none", loopback only)
and reads its user's Maildir with :class:`~caducee.mail.maildir.MaildirSource`. Production uses
the same submitter and an IMAP source against the operator's real servers.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Iterable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from caducee.errors import TransportError
from caducee.mail.maildir import MaildirError, MaildirSource, deliver, ensure_maildir
from caducee.mail.servers import free_port

__all__ = ["EmbeddedMailService"]

log = logging.getLogger(__name__)


class _MaildirHandler:
    def __init__(self, service: EmbeddedMailService) -> None:
        self.service = service

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.service.accepts(address):
            return "550 5.1.1 recipient not served here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.service.file, recipients, data)
        except MaildirError as exc:
            log.error("embedded mail service could not store a message: %s", exc)
            return "451 4.3.0 cannot store the message now"
        return "250 OK stored"


class EmbeddedMailService:
    """SMTP on ``127.0.0.1:port`` delivering to ``root/<domain>/<local>/Maildir``.

    Accepts any local part of the configured ``domains`` (or only ``users`` when given). Each
    recipient gets its own durable copy (tmp -> new, fsync, 0600). Use as a context manager; the
    server runs in a background thread.
    """

    def __init__(
        self,
        root: pathlib.Path | str,
        domains: Iterable[str],
        *,
        users: Iterable[str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.root = pathlib.Path(root)
        self.domains = {d.lower() for d in domains}
        self.users = {u.lower() for u in users} if users is not None else None
        self.host = host
        self.port = port or free_port(host)
        self._controller: Controller | None = None

    def __repr__(self) -> str:
        return f"EmbeddedMailService({self.host}:{self.port}, domains={sorted(self.domains)})"

    def accepts(self, address: str) -> bool:
        address = address.lower()
        local, at, domain = address.rpartition("@")
        if not at or not local or "/" in local or local.startswith("."):
            return False
        if self.users is not None:
            return address in self.users
        return domain in self.domains

    def maildir(self, address: str) -> pathlib.Path:
        local, _, domain = address.lower().rpartition("@")
        return self.root / domain / local / "Maildir"

    def source(self, address: str) -> MaildirSource:
        """The ``MailboxSource`` the agent of ``address`` reads."""
        return MaildirSource(ensure_maildir(self.maildir(address)))

    def file(self, recipients: list[str], data: bytes) -> None:
        for rcpt in recipients:
            deliver(self.maildir(rcpt), data)

    def start(self) -> EmbeddedMailService:
        if self._controller is None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            controller = Controller(
                _MaildirHandler(self),
                hostname=self.host,
                port=self.port,
                server_hostname="localhost",
            )
            try:
                controller.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                raise TransportError(
                    f"embedded SMTP service cannot listen on {self.host}:{self.port}: {exc}"
                ) from None
            self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> EmbeddedMailService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
