"""What the agent's calls return and raise: results a program can act on (a state per
recipient, the ids of what a fetch stored) and errors that say whether to retry or alert.

Re-exported by :mod:`caducee.agent`, where integrators find them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from caducee.agent_view import Part
from caducee.errors import CaduceeError, CryptoError, DirectoryError, PolicyError, TransportError
from caducee.store.messages import StoredMessage

__all__ = [
    "REASON_CODES",
    "FetchIncompleteError",
    "FetchReport",
    "MessageView",
    "NoSubmitterError",
    "NotSentError",
    "OutboxRound",
    "ReceiptUpdate",
    "RecipientsRefusedError",
    "RecipientsUnknownError",
    "SendResult",
    "UnopenedMessageError",
    "check_openable",
    "needs_fixing",
]

#: why a recipient has no usable encryption certificate, for programs (``reasons``)
REASON_CODES = (
    "no-certificate",  # none in the directories or the address book
    "expired",  # not valid now (or not yet)
    "revoked",
    "revocation-unknown",  # its revocation status cannot be checked (no CRL, stale CRL)
    "untrusted",  # not issued under a trusted CA, or invalid
    "not-for-encryption",  # a certificate for another purpose
    "address-mismatch",  # the certificate does not name this address
    "lookup-failed",  # the directory answered with an error
)


def _reason_code(exc: CaduceeError) -> str:
    from caducee.pki import errors as pki

    for kind, code in (
        (pki.CertificateRevokedError, "revoked"),
        (pki.ExpiredError, "expired"),
        (pki.RevocationUnavailableError, "revocation-unknown"),
        (pki.WrongUsageError, "not-for-encryption"),
        (pki.EmailMismatchError, "address-mismatch"),
    ):
        if isinstance(exc, kind):
            return code
    return "untrusted"


class RecipientsRefusedError(PolicyError):
    """Some recipients have no valid encryption certificate; nothing was sent.

    ``problems``: (address, why) in words; ``reasons``: address -> one of
    :data:`REASON_CODES`, for programs."""

    def __init__(
        self, problems: Sequence[tuple[str, str]], reasons: Mapping[str, str] | None = None
    ) -> None:
        self.problems = tuple(problems)
        self.reasons = dict(reasons or {})
        self.details: dict[str, object] = {"reasons": self.reasons}
        listed = "; ".join(f"{addr}: {why}" for addr, why in problems)
        super().__init__(
            f"not sent: no valid encryption certificate for {listed} ({_what_to_do(self.reasons)})"
        )


def _what_to_do(reasons: Mapping[str, str]) -> str:
    """The way out for these refusals. Never sending in clear: a trust or configuration
    problem is for an administrator, not a reason to send patient data unencrypted."""
    codes = set(reasons.values())
    advice = []
    if not codes or codes & {"no-certificate", "address-mismatch", "not-for-encryption"}:
        advice.append("check the address, or ask them to publish their certificate")
    if codes & {"expired", "revoked"}:
        advice.append("ask them to renew their certificate")
    if codes & {"untrusted", "revocation-unknown", "lookup-failed"}:
        advice.append(
            "their CA is not trusted here or its revocation cannot be checked:"
            " ask your administrator (trust anchors, CRLs)"
        )
    return "; ".join(advice)


class RecipientsUnknownError(DirectoryError):
    """A directory could not be asked about some recipients; nothing was sent.

    Not the same as "no certificate": the recipient may well have one. Sending is refused
    whatever ``allow_plaintext`` says (it covers recipients known to have no certificate) and
    may be retried once the directory answers again.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        by_cause: dict[str, list[str]] = {}
        for address, why in problems:  # one directory down fails every lookup the same way
            cause = why.removeprefix(f"no entry for email={address}: ")
            by_cause.setdefault(cause, []).append(address)
        listed = "; ".join(f"{', '.join(addrs)}: {cause}" for cause, addrs in by_cause.items())
        super().__init__(
            f"not sent: could not look up the certificate of {listed}"
            " (a directory is unavailable: try again later)"
        )


class NoSubmitterError(TransportError):
    """No SMTP submission server is configured: nothing can leave until one is."""

    needs_fixing = True

    def __init__(self) -> None:
        super().__init__("no SMTP submission server is configured")


class UnopenedMessageError(CryptoError):
    """The message is stored, but it could not be opened when it was fetched (``read`` and
    ``export`` do not try again); ``details`` holds what can still be shown: the reason and
    the headers outside the encryption."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


#: how a bytes value is written by repr(): b'...' or b"..." (with escapes)
_BYTES_REPR = re.compile(r"\bb'(?:[^'\\]|\\.)*'" + "|" + r'\bb"(?:[^"\\]|\\.)*"')


def check_openable(stored: StoredMessage) -> StoredMessage:
    """``stored``, unless it could not be opened when fetched (:class:`UnopenedMessageError`)."""
    if stored.status != "failed":
        return stored
    why = _BYTES_REPR.sub("(binary data)", stored.error or "unknown error")
    headers = {
        "from": stored.outer_from,
        "to": stored.outer_to,
        "date": stored.outer_date,
        "subject": stored.outer_subject,
    }
    raise UnopenedMessageError(
        f"message {stored.id} COULD NOT BE OPENED: {why}",
        {
            "id": stored.id,
            "reason": why,
            "headers": {k: v for k, v in headers.items() if v is not None},
        },
    )


class NotSentError(TransportError):
    """Submission failed for a reason that will not go away by itself (credentials refused,
    certificate not trusted, wrong TLS mode, the message refused with a 5xx): the message is
    kept in the outbox, but the caller must hear that someone has to fix something.

    ``details`` (id, message_id, state, recipients) goes into the ``--json`` error object;
    ``cause`` is the transport's error. Do not send the message again: it is in the outbox
    (:meth:`Agent.retry_outbox` once the cause is fixed), a second send would deliver it twice.
    """

    needs_fixing = True
    retryable = False  # not the call: the outbox holds the message

    def __init__(
        self,
        cause: TransportError,
        *,
        message: int | None,
        message_id: str,
        recipients: Sequence[str],
    ) -> None:
        self.cause = cause
        self.details: dict[str, object] = {
            "id": message,
            "message_id": message_id,
            "state": "queued",
            "recipients": list(recipients),
        }
        super().__init__(
            f"not sent: {cause}; kept in the outbox: fix the configuration,"
            " then `caducee outbox --retry`"
        )


def needs_fixing(exc: TransportError) -> bool:
    """Whether a submission failure will repeat until someone changes something: retrying it
    on a timer only hammers the server (a wrong password may even lock the account).

    The transport says so (``TransportError.needs_fixing``: credentials refused, TLS that
    cannot be established or trusted, our sender address refused, no submission server
    configured). A message refused for good (a 5xx to its content or to every recipient) is
    not such a failure: its recipients are marked rejected, it leaves the outbox."""
    return exc.needs_fixing


class OutboxRound(tuple[int, int]):
    """(sent, still waiting) after trying the outbox; ``needs_fixing`` is the message of the
    first failure that will not go away by itself, if there was one."""

    needs_fixing: str | None

    def __new__(cls, sent: int, waiting: int, needs_fixing: str | None = None) -> OutboxRound:
        made = super().__new__(cls, (sent, waiting))
        made.needs_fixing = needs_fixing
        return made

    @property
    def sent(self) -> int:
        return self[0]

    @property
    def waiting(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"OutboxRound(sent={self[0]}, waiting={self[1]}, needs_fixing={self.needs_fixing!r})"


@dataclasses.dataclass(frozen=True)
class SendResult:
    id: int  # in the local store
    message_id: str
    state: str  # "sent" or "queued"
    encrypted: bool
    recipients: tuple[str, ...]
    warning: str | None = None


@dataclasses.dataclass
class FetchReport:
    new: int = 0
    valid: int = 0
    flagged: int = 0  # unsigned, invalid, unencrypted
    failed: int = 0
    receipts: int = 0
    already_had: int = 0  # the same message again, from another folder (moved on the server)
    receipts_due: int = 0  # read receipts still held back (a directory did not answer)
    ids: list[int] = dataclasses.field(default_factory=list)
    #: (source name, error) of each mailbox that could not be read; the others were
    failures: list[tuple[str, TransportError]] = dataclasses.field(default_factory=list)
    #: what the receipts of this fetch changed: one per receipt applied to a sent message
    receipt_updates: list[ReceiptUpdate] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "new": self.new,
            "valid": self.valid,
            "flagged": self.flagged,
            "failed": self.failed,
            "receipts": self.receipts,
            "already_had": self.already_had,
            "receipts_due": self.receipts_due,
            "ids": list(self.ids),
            "failures": [{"source": name, "error": str(exc)} for name, exc in self.failures],
            "receipt_updates": [u._asdict() for u in self.receipt_updates],
        }


class ReceiptUpdate(NamedTuple):
    """A signed read receipt applied to a sent message: its store id and Message-ID, the
    recipient, and the disposition it reported ("processed" or "displayed"; the recipient's
    state only ever moves forward, see :meth:`Agent.delivery`)."""

    sent: int
    message_id: str
    recipient: str
    disposition: str


class FetchIncompleteError(TransportError):
    """A mailbox could not be read; every other one was, and what came from them is stored,
    judged and counted in ``report`` (``report.ids``: do not lose them), with each failure in
    ``report.failures``. The message is the first failure's (and how many more).

    ``needs_fixing`` when a failure needs fixing (a refused password, a TLS certificate not
    trusted); otherwise the next fetch may pass."""

    def __init__(self, report: FetchReport) -> None:
        self.report = report
        self.failures = tuple(report.failures)
        self.needs_fixing = any(exc.needs_fixing for _, exc in self.failures)
        self.retryable = not self.needs_fixing
        self.details: dict[str, object] = report.to_json()
        first = str(self.failures[0][1])
        more = len(self.failures) - 1
        if more:
            first += f" (and {more} other mailbox{'es' if more > 1 else ''} failed)"
        if report.new:
            first += f"; {report.new} new message(s) from the other mailboxes were stored"
        super().__init__(first)


@dataclasses.dataclass(frozen=True)
class MessageView:
    """What ``read`` shows: protected headers, the security verdict, text, and parts."""

    id: int
    direction: str
    headers: Mapping[str, str]
    headers_protected: bool
    security: str
    signature: str | None
    encrypted: bool | None
    body: str
    body_type: str | None
    links: tuple[str, ...]
    parts: tuple[Part, ...]
    recipients: tuple[tuple[str, str], ...]  # (address, state) for sent messages

    def __repr__(self) -> str:
        return f"<MessageView {self.id}>"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "direction": self.direction,
            "headers": dict(self.headers),
            "headers_protected": self.headers_protected,
            "security": self.security,
            "signature": self.signature,
            "encrypted": self.encrypted,
            "body": self.body,
            "body_type": self.body_type,
            "links": list(self.links),
            "parts": [dataclasses.asdict(p) for p in self.parts],
            "recipients": [{"address": a, "state": s} for a, s in self.recipients],
        }
