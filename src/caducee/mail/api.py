"""The seam between the agent and mail transport: what it needs, whatever the server.

The agent (``caducee.agent``) depends only on these protocols; ``caducee.mail.smtp``,
``caducee.mail.imap`` and ``caducee.mail.maildir`` implement them against real servers, and the
embedded mail service of the demo implements them with Maildirs on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Protocol

from caducee.errors import TransportError


@dataclasses.dataclass(frozen=True)
class Envelope:
    """SMTP envelope: who the server is told the message is from and for (not the headers)."""

    sender: str
    recipients: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RemoteMessage:
    """One message as stored on the server, identified so that a re-fetch is idempotent.

    ``uid`` is unique and stable within ``mailbox`` for a given ``uidvalidity`` (IMAP UIDs; a
    Maildir's unique file name part for Maildir sources).
    """

    mailbox: str
    uidvalidity: int
    uid: str
    data: bytes = dataclasses.field(repr=False)  # message content: never in logs


class MailboxRenumberedError(TransportError):
    """The mailbox's UIDVALIDITY changed: stored UIDs no longer name the same messages."""

    retryable = False

    def __init__(self, message: str, *, expected: int, found: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class ServerRefusedError(TransportError):
    """The server refused the message for some or all recipients.

    ``accepted``: recipients it took (the message *was* sent to them); ``refused``: each refused
    recipient with the server's ``(code, reply)``. A 4xx refusal may pass later, a 5xx won't.
    Implementations set both attributes.
    """

    accepted: tuple[str, ...] = ()
    refused: dict[str, tuple[int, str]]

    def temporary(self) -> tuple[str, ...]:
        return tuple(r for r, (code, _) in self.refused.items() if 400 <= code < 500)

    def permanent(self) -> tuple[str, ...]:
        return tuple(r for r, (code, _) in self.refused.items() if not 400 <= code < 500)


class Submitter(Protocol):
    """Hands a finished message to the operator's submission server."""

    def submit(self, envelope: Envelope, message: bytes) -> None:
        """Raise ``TransportError`` if the server did not accept it for every recipient."""
        ...


class MailboxSource(Protocol):
    """Reads messages from a mailbox, newest UIDs after what we already have."""

    def fetch_new(
        self, after_uid: str | None, *, uidvalidity: int | None = None
    ) -> Iterator[RemoteMessage]:
        """Messages after ``after_uid`` (all when None), oldest first.

        ``uidvalidity`` is the value stored with ``after_uid``: if the mailbox was renumbered
        since, raise :class:`MailboxRenumberedError` rather than skip or repeat messages.
        """
        ...

    def wait_for_new(self, timeout: float) -> bool:
        """Block until something may have arrived (IMAP IDLE, polling), or ``timeout`` passes."""
        ...


class SentFolder(Protocol):
    def append(self, message: bytes, flags: Sequence[str] = ("\\Seen",)) -> None: ...
