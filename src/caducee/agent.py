"""The mail agent: send signed and encrypted mail, fetch and check what arrives, read, export.

It holds the user's keys (a card or software keys, through the keys protocols), a certificate
finder and a validator (directories and PKI), a submitter and mailbox sources (the transport seam
in ``caducee.mail.api``), and the local message store. Everything that reaches a person goes
through here, so the rules live here:

- nothing leaves unless every recipient has a valid encryption certificate (or the user chose,
  and policy allows, to send signed only);
- every message is encrypted to the sender too, so the sent copy stays readable;
- received wire bytes are committed before anything else, one hostile message never stops the
  others, and a message that cannot be decrypted is kept and flagged;
- a signature counts as valid only if it verifies, the signer's certificate is trusted at signing
  time, and its e-mail address is the one in From.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.message
import email.policy
import email.utils
import functools
import logging
import mimetypes
import os
import pathlib
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar, cast

from cryptography import x509

from caducee.agent_results import (
    REASON_CODES,
    FetchIncompleteError,
    FetchReport,
    MessageView,
    NoSubmitterError,
    NotSentError,
    OutboxRound,
    ReceiptUpdate,
    RecipientsRefusedError,
    RecipientsUnknownError,
    SendResult,
    UnopenedMessageError,
    _reason_code,
    check_openable,
    needs_fixing,
)
from caducee.agent_trust import CertificateFinder, SignerValidator, TrustVerdict, common_name
from caducee.agent_view import Part, render_entity
from caducee.core import mdn
from caducee.core.algorithms import (
    CIPHER_PREFERENCE,
    KEY_TRANSPORT_PREFERENCE,
    ContentCipher,
    Digest,
)
from caducee.core.capabilities import Capabilities
from caducee.core.cms.envelope import Recipient
from caducee.core.cms.verify import ERR_NO_CERT
from caducee.core.message import OpenedMessage, ProtectOptions, open_message, protect
from caducee.core.mime import b64
from caducee.core.mime import headers as mime_headers
from caducee.core.mime.enveloped import is_enveloped_mime
from caducee.core.policy import choose_encryption
from caducee.errors import (
    CaduceeError,
    DirectoryError,
    PolicyError,
    TransportError,
    UsageError,
)
from caducee.keys.api import DecryptionKey, SigningKey
from caducee.mail.api import (
    Envelope,
    MailboxRenumberedError,
    MailboxSource,
    RemoteMessage,
    ServerRefusedError,
    Submitter,
)
from caducee.opening import PARALLEL_AFTER, Opener, Result
from caducee.store.audit import AuditLog
from caducee.store.messages import MessageStore, StoredMessage

__all__ = [
    "Agent",
    "AgentPolicy",
    "Attachment",
    "FetchIncompleteError",
    "FetchReport",
    "Identity",
    "MessageView",
    "NotSentError",
    "OutboxRound",
    "Part",
    "ReceiptUpdate",
    "REASON_CODES",
    "RecipientsRefusedError",
    "RecipientsUnknownError",
    "SendResult",
    "UnopenedMessageError",
    "check_openable",
    "needs_fixing",
]

log = logging.getLogger(__name__)


def _check_header_text(value: str, what: str) -> None:
    """Refuse line breaks and other control characters in a header value we write (a CR or LF
    would end the field and let the rest pass for another header)."""
    bad = next((ch for ch in value if not ch.isprintable() and ch != "\t"), None)
    if bad is not None:
        kind = "a line break" if bad in "\r\n" else f"control character U+{ord(bad):04X}"
        raise UsageError(f"the {what} contains {kind}: give it on one line, in plain text")


@dataclasses.dataclass(frozen=True)
class Identity:
    """The user: address, signing key (None once the card is lost), decryption keys."""

    email: str
    signing_key: SigningKey | None
    decryption_keys: Sequence[DecryptionKey]
    display_name: str | None = None
    #: CA certificates above the signing certificate, sent with every signature so that a
    #: correspondent who trusts only the root (a national authority) can build the path
    chain: tuple[x509.Certificate, ...] = ()

    def __repr__(self) -> str:
        return f"<Identity {self.email}>"


@dataclasses.dataclass(frozen=True)
class AgentPolicy:
    allow_plaintext: bool = True  # whether the user may choose to send signed-only at all
    preferred_cipher: str | None = None  # ContentCipher name; None = strongest common
    minimum_cipher: str = "AES_128_CBC"  # refuse to send with anything weaker than this
    mdn_on_fetch: bool = False  # answer "processed" automatically when mail is fetched
    request_mdn: bool = True  # ask for read receipts unless send() says otherwise
    fetch_workers: int = 0  # worker processes opening a backlog (software keys only)
    fetch_workers_after: int = PARALLEL_AFTER  # messages of one fetch before they start
    reporting_ua: str = "caducee"


@dataclasses.dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes
    content_type: str | None = None

    def __repr__(self) -> str:
        return f"<Attachment {len(self.data)} bytes>"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Attachment:
        file = pathlib.Path(path)
        try:
            return cls(file.name, file.read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read attachment {file}: {exc.strerror}") from None


class _Lookup(NamedTuple):
    found: list[tuple[str, TrustVerdict]]
    problems: list[tuple[str, str]]  # (address, why)
    unknown: list[tuple[str, str]]  # (address, the directory's error)
    codes: dict[str, str]  # address -> REASON_CODES entry, for each problem


@dataclasses.dataclass(frozen=True)
class _Verdict:
    encrypted: bool
    signature: str  # valid, invalid, unsigned
    reason: str | None
    signer: x509.Certificate | None
    issuer: str | None
    signing_time: dt.datetime | None


_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(method: _F) -> _F:
    """One call at a time per agent, from whatever thread: a call from another thread waits
    (the IMAP connection, the SMTP session and the store's transactions are not shared)."""

    @functools.wraps(method)
    def run(self: Agent, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, run)


def _text_charset(data: bytes) -> str | None:
    """The charset of a text attachment when its bytes say it for sure (ASCII, UTF-8)."""
    try:
        data.decode("ascii")
        return "us-ascii"
    except UnicodeDecodeError:
        pass
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


#: Outbox retries: one minute after the first failure, then twice as long each time, at most
#: an hour apart (as mail servers back off: a lab result must not wait hours after the server
#: is back). A failure that needs fixing waits the longest delay at once.
RETRY_FIRST = dt.timedelta(minutes=1)
RETRY_MAX = dt.timedelta(hours=1)


def _parse_time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    pairs = email.utils.getaddresses([value])
    addr = pairs[0][1].strip().lower() if pairs else ""
    return addr if "@" in addr else None


def _outer_fields(wire: bytes) -> dict[str, str | None]:
    """Outer header values for the index; a header we cannot parse is just left empty."""
    try:
        fields = mime_headers.header_fields(wire)  # the body is not copied
    except CaduceeError:
        return {}
    out: dict[str, str | None] = {}
    for name in ("from", "to", "subject", "date", "message-id", mdn.REQUEST_HEADER.lower()):
        field = mime_headers.get(fields, name)
        if field is not None:
            try:
                out[name] = field.value()[:500]
            except Exception:
                out[name] = None
    return out


def _signer_emails(cert: x509.Certificate) -> list[str]:
    from caducee.agent_trust import _emails

    return _emails(cert)


class Agent:
    def __init__(
        self,
        *,
        identity: Identity,
        finder: CertificateFinder,
        validator: SignerValidator,
        submitter: Submitter | None,
        sources: Mapping[str, MailboxSource],
        store: MessageStore,
        account: str = "default",
        policy: AgentPolicy = AgentPolicy(),
        clock: Callable[[], dt.datetime] = _utcnow,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.identity = identity
        self.finder = finder
        self.validator = validator
        self.submitter = submitter
        self.sources = dict(sources)
        self.store = store
        self.audit = AuditLog(store.connection)
        self.account = account
        self.policy = policy
        self.clock = clock
        self.random = random
        self._receipts_blocked = False  # during a fetch: a receipt was held back already
        self._lock = threading.RLock()  # see _serialized

    def __repr__(self) -> str:
        return f"<Agent {self.identity.email}>"

    # -- sending -----------------------------------------------------------------------------------

    def _message_id(self) -> str:
        domain = self.identity.email.rpartition("@")[2] or "caducee.invalid"
        return f"<{self.random(12).hex()}@{domain}>"

    def _build_mime(
        self,
        to: Sequence[str],
        cc: Sequence[str],
        subject: str,
        body: str,
        attachments: Sequence[Attachment],
        message_id: str,
        request_mdn: bool,
        legacy_display: bool = False,
    ) -> bytes:
        """The message as written, before signing and encryption. ``legacy_display``: the
        Subject will be hidden outside (encrypted mail), so the text begins with it, marked
        ``hp-legacy-display="1"`` (RFC 9788 §4.5.3): readers that do not know protected
        headers (Outlook, today's Thunderbird for S/MIME) show it above the text; readers
        that do (caducee) hide it."""
        msg = email.message.EmailMessage(policy=email.policy.SMTP)
        sender = self.identity.email
        if self.identity.display_name:
            sender = email.utils.formataddr((self.identity.display_name, sender))
        msg["From"] = sender
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        msg["Subject"] = subject
        msg["Date"] = email.utils.format_datetime(self.clock())
        msg["Message-ID"] = message_id
        if request_mdn:
            msg[mdn.REQUEST_HEADER] = self.identity.email
        if legacy_display:
            msg.set_content(f"Subject: {subject}\n\n{body}")
            msg.set_param("hp-legacy-display", "1")
        else:
            msg.set_content(body)
        encoded: dict[bytes, bytes] = {}
        for att in attachments:
            ctype = att.content_type or mimetypes.guess_type(att.filename)[0]
            ctype = ctype or "application/octet-stream"
            maintype, _, subtype = ctype.partition("/")
            # The email package writes the part's headers; its base64 writer (a Python loop
            # per line, then a regex over the result) took longer than signing and encrypting
            # the message, so the part's body is coded here and put in place afterwards.
            # Every attachment travels as its bytes, text included: a lab's ISO-8859-1 file or
            # its LF line ends arrive as they left (the charset is named when it is known).
            msg.add_attachment(b"", maintype, subtype, filename=att.filename)
            marker = f"caducee-attachment-{self.random(16).hex()}"
            *_, part = msg.iter_parts()
            part.set_payload(marker)
            if maintype == "text":
                charset = _text_charset(att.data)
                if charset is not None:
                    part.set_param("charset", charset)
            encoded[marker.encode("ascii") + b"\r\n"] = b64.encode_lines(att.data)
        out = msg.as_bytes()
        for marker_line, lines in encoded.items():
            if out.count(marker_line) != 1:  # pragma: no cover - 128 random bits
                raise AssertionError("attachment marker not unique")
            out = out.replace(marker_line, lines)
        return out

    @_serialized
    def check_recipients(
        self, addresses: Sequence[str]
    ) -> tuple[list[tuple[str, TrustVerdict]], list[tuple[str, str]]]:
        """(address, trusted encryption certificate) for each, and (address, why not) problems
        (a failed directory lookup among them)."""
        found, problems, unknown, _ = self._lookup_recipients(addresses)
        return found, problems + [(a, f"directory lookup failed ({why})") for a, why in unknown]

    def _lookup_recipients(self, addresses: Sequence[str]) -> _Lookup:
        """Found certificates, recipients without a valid one (with a reason code each, for
        :class:`RecipientsRefusedError`), and recipients that could not be looked up (a
        directory down: (address, the directory's error))."""
        found: list[tuple[str, TrustVerdict]] = []
        problems: list[tuple[str, str]] = []
        unknown: list[tuple[str, str]] = []
        codes_of: dict[str, str] = {}
        now = self.clock()
        for address in addresses:
            try:
                candidates = self.finder.find_encryption_certificates(address)
            except DirectoryError as exc:
                unknown.append((address, str(exc)))
                continue
            except CaduceeError as exc:
                problems.append((address, f"directory lookup failed ({exc})"))
                codes_of[address] = "lookup-failed"
                continue
            if not candidates:
                problems.append((address, "no certificate in the directories or address book"))
                codes_of[address] = "no-certificate"
                continue
            reasons: list[str] = []
            codes: list[str] = []
            for cert in candidates:
                try:
                    verdict = self.validator.validate(
                        cert, purpose="encryption", at=now, email=address
                    )
                except CaduceeError as exc:
                    reasons.append(str(exc))
                    codes.append(_reason_code(exc))
                    continue
                found.append((address, verdict))
                break
            else:
                problems.append((address, "; ".join(dict.fromkeys(reasons))))
                codes_of[address] = codes[0] if codes else "untrusted"
        return _Lookup(found, problems, unknown, codes_of)

    @_serialized
    def send(
        self,
        to: Sequence[str],
        subject: str,
        body: str,
        *,
        cc: Sequence[str] = (),
        attachments: Sequence[Attachment] = (),
        allow_plaintext: bool = False,
        request_mdn: bool | None = None,
    ) -> SendResult:
        """Sign (one card operation), encrypt to every recipient and to the sender, submit.

        Raises :class:`RecipientsRefusedError` before anything leaves when a recipient has no
        valid certificate (unless ``allow_plaintext``), and :class:`RecipientsUnknownError`
        (even with ``allow_plaintext``) when a directory that might hold a recipient's
        certificate is unavailable. A transport failure queues the message in the outbox
        (``state == "queued"``); nothing is lost. When the failure will not go away by itself
        (see :func:`needs_fixing`) the message is kept in the outbox all the same, but
        :class:`NotSentError` is raised: someone must fix the configuration.
        ``request_mdn``: ask for a read receipt (default: the policy's ``request_mdn``).
        """
        if request_mdn is None:
            request_mdn = self.policy.request_mdn
        _check_header_text(subject, "subject")
        for address in [*to, *cc]:
            _check_header_text(address.strip(), f"recipient address {address.strip()[:80]!r}")
        _check_header_text(self.identity.email, "sender address")
        if self.identity.display_name:
            _check_header_text(self.identity.display_name, "sender's display name")
        to = [a.strip() for a in to if a.strip()]
        cc = [a.strip() for a in cc if a.strip()]
        everyone = list(dict.fromkeys(a.lower() for a in [*to, *cc]))
        if not everyone:
            raise UsageError("give at least one recipient")
        for address in everyone:
            if _address(address) != address:
                raise UsageError(f"{address[:80]!r} is not an e-mail address")
        signer = self.identity.signing_key
        if signer is None:
            raise PolicyError(
                "no signing key: this identity cannot sign (card missing or revoked);"
                " reading mail still works"
            )
        found, problems, unknown, codes_of = self._lookup_recipients(everyone)
        if unknown:
            raise RecipientsUnknownError(unknown)
        warning = None
        if problems and not allow_plaintext:
            raise RecipientsRefusedError(problems, codes_of)
        if problems:
            if not self.policy.allow_plaintext:
                raise PolicyError(
                    "sending without encryption is forbidden by this installation's policy"
                )
            warning = (
                "sent signed but NOT ENCRYPTED (no valid certificate for "
                + ", ".join(a for a, _ in problems)
                + ")"
            )
        message_id = self._message_id()
        mime = self._build_mime(
            to, cc, subject, body, attachments, message_id, request_mdn,
            legacy_display=not problems,  # encrypted: the Subject is hidden outside
        )  # fmt: skip
        wire = self._protect(mime, [v.certificate for _, v in found], encrypt=not problems)
        return self._submit_and_keep(
            wire,
            message_id=message_id,
            recipients=everyone,
            encrypted=not problems,
            mdn_requested=self.identity.email if request_mdn else None,
            warning=warning,
        )

    def _protect(self, mime: bytes, certs: Sequence[x509.Certificate], *, encrypt: bool) -> bytes:
        signer = self.identity.signing_key
        assert signer is not None
        recipients: tuple[Recipient, ...] = ()
        options = ProtectOptions()
        if encrypt:
            own = [k.certificate for k in self.identity.decryption_keys[:1]]
            if not own:
                raise PolicyError(
                    "no decryption key of our own: the sent copy could not be read back"
                )
            pairs: list[tuple[x509.Certificate, Capabilities | None]] = [
                (c, self._peer_capabilities(c)) for c in certs
            ] + [(c, self._own_capabilities()) for c in own]
            preferred = None
            if self.policy.preferred_cipher:
                preferred = ContentCipher[self.policy.preferred_cipher]
            choice = choose_encryption(pairs, preferred=preferred)
            floor = ContentCipher[self.policy.minimum_cipher]
            if CIPHER_PREFERENCE.index(choice.cipher) > CIPHER_PREFERENCE.index(floor):
                raise PolicyError(
                    f"a recipient only supports {choice.cipher.label}, weaker than the"
                    f" minimum {floor.label} set by policy"
                )
            recipients = choice.recipients
            options = ProtectOptions(cipher=choice.cipher)
        # Everything the agent protects is written by the email package with policy.SMTP (or is
        # an MDN built with CRLF): canonical already, so the signer skips its check.
        options = dataclasses.replace(
            options,
            capabilities=self._own_capabilities(),
            canonical=True,
            extra_certificates=tuple(self.identity.chain),
        )
        return protect(
            mime,
            signer=signer,
            recipients=recipients,
            signing_time=self.clock(),
            random=self.random,
            options=options,
        )

    def _own_capabilities(self) -> Capabilities:
        """What we announce we can decrypt: a card may lack RSA-OAEP with SHA-256."""
        keys = self.identity.decryption_keys
        transports = set(keys[0].key_transports()) if keys else set()
        if not transports:  # EC keys (ECDH), or nothing known: the RFC 8551 defaults
            return Capabilities()
        return Capabilities(
            key_transports=tuple(kt for kt in KEY_TRANSPORT_PREFERENCE if kt in transports)
        )

    def _peer_capabilities(self, cert: x509.Certificate) -> Capabilities | None:
        for address in _signer_emails(cert):
            der = self.store.capabilities(address)
            if der is not None:
                try:
                    return Capabilities.from_der(der)
                except CaduceeError:
                    return None
        return None

    def _submit_and_keep(
        self,
        wire: bytes,
        *,
        message_id: str,
        recipients: Sequence[str],
        encrypted: bool,
        mdn_requested: str | None,
        warning: str | None,
        keep: bool = True,
    ) -> SendResult:
        signer = self.identity.signing_key
        assert signer is not None
        envelope = Envelope(self.identity.email, tuple(recipients))
        stored: int | None = None
        if keep:
            stored = self.store.add_sent(
                account=self.account,
                message_id=message_id,
                wire=wire,
                outer=_outer_fields(wire),
                recipients=recipients,
                state="queued",
                encrypted=encrypted,
                mdn_requested=mdn_requested,
                signer_email=self.identity.email,
                signer_subject=common_name(signer.certificate.subject),
                signer_issuer=common_name(signer.certificate.issuer),
            )
        item = self.store.queue(stored, envelope.sender, envelope.recipients, wire, "not sent yet")
        state = "queued"
        try:
            if self.submitter is None:
                raise NoSubmitterError()
            self.submitter.submit(envelope, wire)
        except TransportError as exc:
            waiting, served = self._after_failure(item, stored, recipients, exc, attempts=0)
            if not waiting and not served:
                raise  # refused for good, for everybody: the caller must know now
            if keep and needs_fixing(exc):  # kept, but someone must act: an error, not a delay
                self.audit.record("queued", stored, detail=str(len(recipients)))
                raise NotSentError(
                    exc, message=stored, message_id=message_id, recipients=recipients
                ) from None
            if waiting:
                log.warning("message queued in the outbox: %s", exc)
                warning = f"queued in the outbox for {', '.join(waiting)}, will retry ({exc})" + (
                    f"; {warning}" if warning else ""
                )
            else:
                state = "sent"
                warning = f"refused for some recipients ({exc})" + (
                    f"; {warning}" if warning else ""
                )
        else:
            self.store.outbox_done(item)
            state = "sent"
        self.audit.record(
            "sent" if state == "sent" else "queued", stored, detail=str(len(recipients))
        )
        return SendResult(stored or 0, message_id, state, encrypted, tuple(recipients), warning)

    def _after_failure(
        self,
        item: int,
        message: int | None,
        recipients: Sequence[str],
        exc: TransportError,
        *,
        attempts: int,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Record a failed submission: (recipients still waiting, recipients served).

        A server that took the message for some recipients has sent it to them: only the ones
        refused for now (4xx) stay queued, so nobody gets it twice; 5xx refusals are final.
        The next attempt waits twice as long as the last one (from one minute, at most
        :data:`RETRY_MAX`), so a server that is down is not hammered; a failure that needs
        fixing (see :func:`needs_fixing`) keeps every recipient waiting, and is tried again on
        the timer only after :data:`RETRY_MAX` (the user retries once the configuration is
        fixed).
        """
        error = str(exc)
        permanent = needs_fixing(exc)
        served: tuple[str, ...]
        waiting: tuple[str, ...]
        final: tuple[str, ...]
        if permanent:
            served, waiting, final = (), tuple(recipients), ()
            error = f"needs fixing: {exc}"
        elif isinstance(exc, ServerRefusedError) and (exc.refused or exc.accepted):
            served, waiting, final = exc.accepted, exc.temporary(), exc.permanent()
        elif getattr(exc, "retryable", True):
            served, waiting, final = (), tuple(recipients), ()
        else:
            served, waiting, final = (), (), tuple(recipients)
        if message is not None:
            for address in served:
                self.store.set_recipient_state(message, address, "sent")
            for address in final:
                self.store.set_recipient_state(message, address, "rejected")
        if waiting:
            delay = RETRY_MAX if permanent else min(RETRY_FIRST * 2**attempts, RETRY_MAX)
            retry_at = (self.clock() + delay).isoformat(timespec="seconds")
            self.store.outbox_narrow(item, waiting, error, retry_at)
        else:
            self.store.outbox_drop(item)
        if served:
            self.audit.record("sent", message, detail=f"{len(served)} of {len(recipients)}")
        return waiting, served

    @_serialized
    def retry_outbox(self, *, due_only: bool = False) -> OutboxRound:
        """Submit what is waiting; (sent, still waiting). ``due_only`` leaves the messages
        whose next attempt is not due yet (the agent's rounds); without it everything is tried
        now (the user asked).

        A failure that needs fixing (wrong password, untrusted certificate...) puts its message
        off for :data:`RETRY_MAX` and is named in ``needs_fixing``; the messages after it are
        not tried in this round when the failure is the server's or the configuration's, not
        the message's (the same password would be refused again)."""
        sent = waiting = 0
        problem: str | None = None
        blocked = False
        now = self.clock()
        for item in self.store.outbox():
            if blocked or (
                due_only and item.next_attempt_at and _parse_time(item.next_attempt_at) > now
            ):
                waiting += 1
                continue
            try:
                if self.submitter is None:
                    raise NoSubmitterError()
                self.submitter.submit(Envelope(item.sender, item.recipients), item.wire)
            except TransportError as exc:
                failed = self._after_failure(
                    item.id, item.message, item.recipients, exc, attempts=item.attempts
                )
                if failed[0]:
                    waiting += 1
                else:
                    log.warning("outbox item %d refused for good", item.id)
                if needs_fixing(exc):
                    problem = problem or str(
                        NotSentError(
                            exc,
                            message=item.message,
                            message_id="",
                            recipients=item.recipients,
                        )
                    )
                    blocked = not isinstance(exc, ServerRefusedError)
            else:
                self.store.outbox_done(item.id)
                self.audit.record("sent", item.message, detail="from the outbox")
                sent += 1
        return OutboxRound(sent, waiting, problem)

    # -- receiving ---------------------------------------------------------------------------------

    @_serialized
    def fetch(
        self,
        progress: Callable[[int], None] | None = None,
        *,
        sources: Collection[str] | None = None,
    ) -> FetchReport:
        """Fetch new mail from every source; store first, then open and judge each message.

        A backlog is opened by worker processes as well as this one (``fetch_workers``), while
        this one keeps fetching; each message is stored before it is opened, so an interruption
        leaves it pending, to be judged by the next fetch. ``sources``: the names of the
        mailboxes to read (default: all); messages left pending are judged whatever it says.
        """
        report = FetchReport()
        self._receipts_blocked = self.send_due_receipts() > 0
        with Opener(
            self.identity.decryption_keys,
            workers=self.policy.fetch_workers,
            start_after=self.policy.fetch_workers_after,
        ) as opener:
            for (message, wire, outer), result in opener.map(self._to_open(report, sources)):
                self._judge(message, wire, outer, report, result)
                if progress is not None:
                    progress(1)
        report.receipts_due = len(self.store.receipts_due())
        if report.failures:
            raise FetchIncompleteError(report)
        return report

    def _to_open(
        self, report: FetchReport, only: Collection[str] | None = None
    ) -> Iterator[tuple[tuple[int, bytes, dict[str, str | None]], bytes]]:
        """Messages left pending by an interrupted fetch, then new ones, each stored first;
        with each, its wire bytes and outer header fields for the judging. A message that is
        byte for byte one already stored (moved between two fetched folders) is recorded as
        a copy, counted in ``report.already_had``, and not opened again."""
        for message in self.store.pending():
            wire = self.store.get(message).wire
            yield (message, wire, _outer_fields(wire)), wire
        for name, source in self.sources.items():
            if only is not None and name not in only:
                continue
            try:
                for remote in self._remote_messages(name, source):
                    outer = _outer_fields(remote.data)
                    arrival = self.store.add_arrival(
                        account=name,
                        mailbox=remote.mailbox,
                        uidvalidity=remote.uidvalidity,
                        uid=remote.uid,
                        wire=remote.data,
                        outer=outer,
                    )
                    if arrival.copy_of is not None:
                        report.already_had += 1
                    elif arrival.id is not None:  # None: had it (a re-fetch after a crash)
                        yield (arrival.id, remote.data, outer), remote.data
            except TransportError as exc:  # one mailbox down: the others are still read
                log.warning("mailbox %s not read: %s", name, exc)
                report.failures.append((name, exc))

    def _remote_messages(self, name: str, source: MailboxSource) -> Iterator[RemoteMessage]:
        """New messages of one source; a renumbered IMAP mailbox (UIDVALIDITY) is read again
        from the start (the store's UNIQUE key keeps the old copies apart)."""
        position = self.store.last_position(name)
        if position is None:
            yield from source.fetch_new(None)
            return
        after, validity = position
        try:
            yield from source.fetch_new(after, uidvalidity=validity)
        except MailboxRenumberedError:
            log.warning("source %s was renumbered (UIDVALIDITY): reading it again", name)
            yield from source.fetch_new(None)

    def _judge(
        self,
        message: int,
        wire: bytes,
        outer: Mapping[str, str | None],
        report: FetchReport,
        opened_: Result,
    ) -> None:
        """Record the verdict on one stored message; never raises for bad input.

        ``opened_()`` gives the message opened, or raises what opening it raised."""
        report.new += 1
        report.ids.append(message)
        encrypted_outside = False
        try:
            encrypted_outside = is_enveloped_mime(wire)
            opened = self._with_known_signer(wire, opened_())
            verdict = self._verdict(opened)
        except CaduceeError as exc:
            self.store.record_verdict(
                message,
                status="failed",
                encrypted=encrypted_outside,
                signature=None,
                error=str(exc)[:500],
            )
            report.failed += 1
            return
        except Exception as exc:
            log.error("message %d could not be opened: internal error %s", message, type(exc))
            self.store.record_verdict(
                message,
                status="failed",
                encrypted=encrypted_outside,
                signature=None,
                error=f"failed: internal error ({type(exc).__name__})",
            )
            report.failed += 1
            return
        requested = self._mdn_request(outer, opened, verdict)
        is_receipt = mdn.is_mdn(opened.entity)
        reason = verdict.reason
        if is_receipt:
            reason = self._apply_receipt(opened, verdict, report) or reason
            report.receipts += 1
        signer = verdict.signer
        self.store.record_verdict(
            message,
            status="opened",
            encrypted=verdict.encrypted,
            signature=verdict.signature,
            reason=reason,
            signer_email=next(iter(_signer_emails(signer)), None) if signer else None,
            signer_subject=common_name(signer.subject) if signer else None,
            signer_issuer=verdict.issuer,
            signing_time=verdict.signing_time.isoformat() if verdict.signing_time else None,
            is_mdn=is_receipt,
            mdn_requested=requested,
            message_id=opened.headers.get("message-id"),
        )
        if verdict.signature == "valid":
            self._learn_capabilities(opened, verdict)
        if verdict.signature == "valid" and verdict.encrypted:
            report.valid += 1
        else:
            report.flagged += 1
        if requested and self.policy.mdn_on_fetch and not is_receipt:
            if self._receipts_blocked:  # a directory did not answer in this fetch: no more waits
                self.store.mark_mdn_due(message, "processed")
            elif not self._send_receipt(message, "processed", manual=False):
                self._receipts_blocked = True

    def _with_known_signer(self, wire: bytes, opened: OpenedMessage) -> OpenedMessage:
        """A signature whose certificate the message left out (``openssl cms -nocerts``, an
        Outlook setting) is checked again with the certificates known for its From address
        (address book, directories): opened again, a second decryption, only in that case."""
        missing = [
            s
            for layer in opened.layers
            if layer.signed is not None
            for s in layer.signed.signers
            if s.certificate is None and s.error == ERR_NO_CERT
        ]
        sender = _address(opened.headers.get("from"))
        if not missing or sender is None:
            return opened
        known = self.finder.find_signer_certificates(sender)
        if not known:
            return opened
        return open_message(wire, keys=self.identity.decryption_keys, extra_certificates=known)

    def _learn_capabilities(self, opened: OpenedMessage, verdict: _Verdict) -> None:
        """Remember what a correspondent's signature says they can decrypt (RFC 8551 2.7.1)."""
        for layer in opened.layers:
            for s in layer.signed.signers if layer.signed is not None else ():
                if s.capabilities is None or s.certificate is None:
                    continue
                for address in _signer_emails(s.certificate):
                    self.store.set_capabilities(address, s.capabilities.to_der())

    def _verdict(self, opened: OpenedMessage) -> _Verdict:
        encrypted = opened.encrypted
        if not opened.signed:
            return _Verdict(encrypted, "unsigned", "the message is not signed", None, None, None)
        signers = [
            s for layer in opened.layers if layer.signed is not None for s in layer.signed.signers
        ]
        first = signers[0] if signers else None
        cert = first.certificate if first else None
        signing_time = first.signing_time if first else None
        if not opened.signature_valid:
            bad = next((s for s in signers if not s.valid), None)
            why = (bad.error if bad else None) or "no signer"
            if bad is not None and bad.error == ERR_NO_CERT:  # not broken: not checkable
                why = (
                    "the signer's certificate is neither in the message nor known here"
                    " (address book, directories): the signature cannot be checked"
                )
                return _Verdict(encrypted, "untrusted", why, cert, None, signing_time)
            return _Verdict(encrypted, "invalid", why, cert, None, signing_time)
        from_address = _address(opened.headers.get("from"))
        if from_address is None:
            return _Verdict(encrypted, "invalid", "no From address", cert, None, signing_time)
        issuer = None
        # CA certificates the message carries (as Outlook and Thunderbird include the issuing
        # CA) help build the path; trust still comes only from the configured anchors.
        carried = [
            c
            for layer in opened.layers
            if layer.signed is not None
            for c in layer.signed.certificates
        ]
        for s in signers:
            assert s.certificate is not None  # a valid signature has its certificate
            if from_address not in _signer_emails(s.certificate):
                emails = ", ".join(_signer_emails(s.certificate)) or "no address"
                return _Verdict(
                    encrypted,
                    "invalid",
                    f"signed by {emails}, but the message claims to be from {from_address}",
                    s.certificate,
                    None,
                    signing_time,
                )
            try:
                trusted = self.validator.validate(
                    s.certificate,
                    purpose="signature",
                    at=s.signing_time or self.clock(),
                    email=from_address,
                    at_signing_time=s.signing_time is not None,
                    intermediates=carried,
                )
            except CaduceeError as exc:  # intact, but who signed could not be checked
                from caducee.pki.errors import CertificateRevokedError

                # A revoked signer is known bad (its key may be in other hands): broken.
                revoked = isinstance(exc, CertificateRevokedError)
                return _Verdict(
                    encrypted,
                    "invalid" if revoked else "untrusted",
                    f"signer not trusted: {exc}",
                    s.certificate,
                    None,
                    signing_time,
                )
            issuer = issuer or trusted.issuer
        weak = None  # valid, but with a digest that collisions can forge: said with the verdict
        if any(s.digest is Digest.SHA1 for s in signers):
            weak = "signed with SHA-1, a digest that can be forged: ask the sender to use SHA-256"
        return _Verdict(encrypted, "valid", weak, cert, issuer, signing_time)

    def _mdn_request(
        self, outer: Mapping[str, str | None], opened: OpenedMessage, verdict: _Verdict
    ) -> str | None:
        """Honour a receipt request only for validly signed mail, and only to its From."""
        requested = outer.get(mdn.REQUEST_HEADER.lower()) or opened.headers.get(mdn.REQUEST_HEADER)
        address = _address(requested)
        if address is None or verdict.signature != "valid":
            return None
        return address if address == _address(opened.headers.get("from")) else None

    def _apply_receipt(
        self, opened: OpenedMessage, verdict: _Verdict, report: FetchReport
    ) -> str | None:
        """Advance a sent message's recipient state from a signed MDN; the reason if ignored."""
        try:
            receipt = mdn.parse_mdn(opened.entity)
        except CaduceeError as exc:
            return f"unreadable receipt: {exc}"
        if verdict.signature != "valid" or verdict.signer is None:
            return "receipt ignored: not validly signed"
        if receipt.final_recipient not in _signer_emails(verdict.signer):
            return "receipt ignored: signed by someone other than the recipient it names"
        sent = self.store.apply_disposition(
            receipt.original_message_id, receipt.final_recipient, receipt.disposition
        )
        if sent is None:
            return "receipt for a message we did not send"
        report.receipt_updates.append(
            ReceiptUpdate(
                sent,
                receipt.original_message_id,
                receipt.final_recipient.lower(),
                receipt.disposition,
            )
        )
        return None

    @_serialized
    def delivery(self, message: int | str) -> dict[str, str]:
        """Each recipient of a sent message (by store id, or by its Message-ID) and where it
        is: "queued" (in the outbox), "sent" (taken by the submission server), "processed" or
        "displayed" (a signed receipt says so), "rejected" (refused for good). No card needed.
        """
        if isinstance(message, str):
            message = self.store.sent_id(message)
        return self.store.recipient_states(message)

    # -- reading -----------------------------------------------------------------------------------

    def _reopen(self, stored: StoredMessage) -> OpenedMessage:
        return open_message(stored.wire, keys=self.identity.decryption_keys)

    def security_summary(self, stored: StoredMessage) -> str:
        if stored.status == "failed":
            text = f"COULD NOT BE OPENED: {stored.error}"
        elif stored.status == "pending":
            text = "NOT CHECKED YET"
        elif stored.signature == "valid":
            who = stored.signer_subject or "?"
            text = f"signed by {who} <{stored.signer_email}>, identity checked by"
            text += f" {stored.signer_issuer or 'the trusted CA'}"
            if stored.reason:  # valid with a warning (a weak digest)
                text += f" (WARNING: {stored.reason})"
        elif stored.signature == "invalid":
            text = f"SIGNATURE BROKEN: {stored.reason}"
        elif stored.signature == "untrusted":
            text = f"SIGNED, BUT THE SIGNER'S IDENTITY IS NOT CHECKED: {stored.reason}"
        else:
            text = "NOT SIGNED"
        if stored.status != "failed":
            text += "; encrypted" if stored.encrypted else "; NOT ENCRYPTED"
        return text

    @_serialized
    def read(self, message: int, *, send_receipt: bool = False) -> MessageView:
        """Decrypt again (one card operation) and show; audited.

        ``send_receipt``: the message is being displayed to its reader, so a requested
        "displayed" receipt is sent (``caducee read`` does). Off by default: software reading
        mail for itself must not tell the sender that a person saw it (use ``mdn_on_fetch``
        for "processed").
        """
        stored = check_openable(self.store.get(message))
        opened = self._reopen(stored)
        rendered, _ = render_entity(opened.entity)
        shown = {
            name: value
            for name in ("from", "to", "cc", "subject", "date", "message-id")
            if (value := opened.headers.get(name)) is not None
        }
        self.audit.record("read", message, actor=self.identity.email)
        view = MessageView(
            id=stored.id,
            direction=stored.direction,
            headers=shown,
            headers_protected=opened.headers.protected,
            security=self.security_summary(stored),
            signature=stored.signature,
            encrypted=stored.encrypted,
            body=rendered.body,
            body_type=rendered.body_type,
            links=rendered.links,
            parts=rendered.parts,
            recipients=tuple((r.address, r.state) for r in stored.recipients),
        )
        if (
            send_receipt
            and stored.direction == "in"
            and stored.mdn_requested
            and stored.mdn_sent != "displayed"
        ):
            self._send_receipt(message, "displayed", manual=True, opened=opened)
        return view

    def _send_receipt(
        self,
        message: int,
        disposition: mdn.Disposition,
        *,
        manual: bool,
        opened: OpenedMessage | None = None,
    ) -> bool:
        """Send a signed (and, when possible, encrypted) MDN; failures never hide the mail.

        False when it is held back because a directory did not answer (then it is marked due
        and :meth:`fetch` tries it again); True otherwise, sent or not sendable at all."""
        stored = self.store.get(message)
        to = stored.mdn_requested
        if not to or self.identity.signing_key is None:
            return True
        try:
            opened = opened or self._reopen(stored)
            original_id = opened.headers.get("message-id")
            if not original_id:
                return True
            found, problems, unknown, _ = self._lookup_recipients([to])
            if unknown:  # an outage must not downgrade the receipt to unencrypted
                _, why = unknown[0]
                log.warning(
                    "receipt for message %d not sent yet: %s; it is tried again at each fetch",
                    message,
                    why,
                )
                self.store.mark_mdn_due(message, disposition)
                return False
            encrypt = not problems
            message_id = self._message_id()
            report = mdn.build_mdn(
                original_message_id=original_id,
                original_subject=opened.headers.get("subject") if encrypt else None,
                from_address=self.identity.email,
                to_address=to,
                final_recipient=self.identity.email,
                disposition=disposition,
                manual=manual,
                date=email.utils.format_datetime(self.clock()),
                message_id=message_id,
                boundary="mdn-" + self.random(12).hex(),
                reporting_ua=self.policy.reporting_ua,
            )
            wire = self._protect(report, [v.certificate for _, v in found], encrypt=encrypt)
            self._submit_and_keep(
                wire,
                message_id=message_id,
                recipients=[to],
                encrypted=encrypt,
                mdn_requested=None,
                warning=None,
                keep=False,
            )
        except CaduceeError as exc:
            log.warning("receipt for message %d not sent: %s", message, exc)
            return True
        self.store.mark_mdn_sent(message, disposition)
        self.audit.record("mdn-sent", message, detail=disposition)
        return True

    @_serialized
    def send_due_receipts(self) -> int:
        """Send the receipts held back while a directory was down; how many are still due.

        Stops at the first one held back again (the directory is still down: one timeout per
        round, not one per receipt)."""
        due = self.store.receipts_due()
        for index, (message, disposition) in enumerate(due):
            if not self._send_receipt(message, disposition, manual=disposition == "displayed"):
                return len(due) - index
        return 0

    @_serialized
    def export(
        self,
        message: int,
        directory: str | os.PathLike[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[pathlib.Path]:
        """Write the attachments (mode 0600, safe names, never outside ``directory``)."""
        stored = check_openable(self.store.get(message))
        opened = self._reopen(stored)
        _, attachments = render_entity(opened.entity)
        target = pathlib.Path(directory)
        try:
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create {target}: {exc.strerror}") from None
        root = target.resolve()
        written: list[pathlib.Path] = []
        for part, data in attachments:
            assert part.filename is not None
            path = _free_name(root, part.filename)
            if path.parent != root:
                raise PolicyError(f"refused to write {part.filename!r} outside {root}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
            except OSError as exc:
                raise UsageError(f"cannot write {path}: {exc.strerror}") from None
            written.append(path)
            if progress is not None:
                progress(1)
        self.audit.record(
            "exported", message, actor=self.identity.email, detail=f"{len(written)} file(s)"
        )
        return written


def _free_name(root: pathlib.Path, name: str) -> pathlib.Path:
    path = root / name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 1
    while path.exists() or path.is_symlink():
        path = root / (f"{stem}-{n}{dot}{ext}" if dot else f"{stem}-{n}")
        n += 1
    return path
