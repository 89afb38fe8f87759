"""Reading a mailbox over IMAP: new messages by UID, IDLE, APPEND to Sent, flags.

Why UIDs: an IMAP UID never changes for a given UIDVALIDITY, so the caller stores the highest UID
it has committed and asks for ``after_uid`` on the next run — a crash in the middle of a fetch
leaves nothing fetched twice and nothing lost. Messages are read with ``BODY.PEEK[]`` so reading
never marks them seen; flags are set explicitly once the caller has stored them.

The source yields raw bytes and never parses them: a hostile or broken message is the store's
problem, and cannot stop the iteration over the others.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import imapclient
from imapclient import exceptions as imap_errors

from caducee.errors import ConfigError, TransportError
from caducee.mail import tlsprobe
from caducee.mail.api import MailboxRenumberedError, RemoteMessage
from caducee.mail.tlsprobe import speaks_tls

__all__ = [
    "PROCESSED",
    "ImapAuthError",
    "ImapError",
    "ImapMailbox",
    "ImapTlsError",
    "ImapUidValidityError",
    "ImapUnavailableError",
]

log = logging.getLogger(__name__)

PROCESSED = "$caducee-processed"
Security = Literal["starttls", "tls", "none"]
T = TypeVar("T")

#: Longest wait for the TCP connection and the server's greeting (bounded by ``timeout`` too).
#: A client in the wrong TLS mode against an implicit-TLS port gets no greeting at all (the
#: server waits for a TLS handshake): failing after 10 s with a hint beats hanging for 30 s.
GREETING_TIMEOUT = 10.0

#: A cached connection idle for longer than this is probed (NOOP) before an operation uses it:
#: servers drop idle sessions (Dovecot after 30 min, NATs and firewalls sooner) or restart, and
#: a dead connection must cost a reconnect, not a failed operation.
PROBE_AFTER = 5.0

#: Longest wait for the answer to that probe: a connection silently dropped by a middlebox
#: would otherwise hold the operation for the whole read ``timeout`` before reconnecting.
PROBE_TIMEOUT = 5.0

#: OpenSSL verification codes meaning "the issuer is not in the trust store" (not, e.g., a
#: name mismatch or an expired certificate): adding the CA with ``ca_file`` is then the fix.
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})

#: OpenSSL reasons seen when a TLS client reads a plaintext greeting instead of a handshake.
_PLAINTEXT_PEER = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class ImapError(TransportError):
    """An IMAP operation failed.

    ``retryable``: the same operation may succeed later (once the server is back, or once what
    ``needs_fixing`` names has been fixed); ``needs_fixing``: it will not succeed by waiting, as
    for every :class:`~caducee.errors.TransportError` (the same rule as the SMTP errors).
    """

    retryable = True


class ImapUnavailableError(ImapError):
    """The server could not be reached, timed out or dropped the connection."""


class ImapTlsError(ImapError):
    """TLS could not be established (handshake, certificate, STARTTLS not offered, wrong TLS
    mode): polling again will not help, the configuration or the server must change."""

    retryable = True
    needs_fixing = True


class ImapAuthError(ImapError):
    """The server refused the login: fix the credentials; retrying on a timer only hammers the
    server (and may lock the account)."""

    retryable = True
    needs_fixing = True


class ImapUidValidityError(MailboxRenumberedError, ImapError):
    """The mailbox's UIDVALIDITY changed: stored UIDs no longer name the same messages."""

    retryable = False


class ImapMailbox:
    """Implements ``MailboxSource`` and ``SentFolder`` for one IMAP mailbox.

    The connection is opened on first use and reopened after a failure; call :meth:`close`
    (or use ``with``) when done. Not thread-safe: one thread uses an instance at a time (a
    prefetching :meth:`fetch_new` owns the connection until its generator is exhausted or
    closed). ``batch_bytes``/``batch_count`` bound one UID FETCH so that a
    mailbox of large messages is read in pieces rather than in one huge response.
    ``create_missing`` creates ``mailbox`` when the server does not have it (a Sent folder);
    off by default so that a mistyped folder name is an error, not a new empty folder.
    ``prefetch`` is what :meth:`fetch_new` does when its caller does not say.
    ``ssl_context`` decides which server certificates are trusted (default: the system's).
    Connecting up to the server's greeting is bounded by ``min(timeout, GREETING_TIMEOUT)``.

    A cached connection the server has dropped (idle timeout, restart) is replaced before an
    operation sends anything: it is probed with NOOP when something arrived on it while idle
    (a ``BYE``, the end of the stream) or when it has been idle for ``probe_after`` seconds,
    and reopened if the probe fails. An operation that fails once under way is never run
    again (an APPEND or a STORE may have reached the server): it raises. A reopened session
    whose mailbox has a new UIDVALIDITY raises :class:`ImapUidValidityError` before any UID
    is used.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str,
        password: str,
        mailbox: str = "INBOX",
        security: Security = "starttls",
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        batch_count: int = 50,
        batch_bytes: int = 8 * 1024 * 1024,
        create_missing: bool = False,
        prefetch: bool = False,
        probe_after: float = PROBE_AFTER,
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ConfigError(f"IMAP security must be starttls, tls or none, not {security!r}")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.mailbox = mailbox
        self.security = security
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.batch_count = batch_count
        self.batch_bytes = batch_bytes
        self.create_missing = create_missing
        self.prefetch = prefetch
        self.probe_after = probe_after
        self._client: imapclient.IMAPClient | None = None
        self._last_used = 0.0
        self._uidvalidity: int | None = None
        self._highest_seen = 0

    def __repr__(self) -> str:
        return (
            f"ImapMailbox({self.host!r}, {self.port}, username={self.username!r}, "
            f"mailbox={self.mailbox!r}, security={self.security!r})"
        )

    @property
    def where(self) -> str:
        return f"IMAP {self.host}:{self.port} {self.mailbox}"

    # --- connection -------------------------------------------------------------------------

    def _connect(self) -> imapclient.IMAPClient:
        wait = min(self.timeout, GREETING_TIMEOUT)
        try:
            client = imapclient.IMAPClient(
                self.host,
                port=self.port,
                ssl=self.security == "tls",
                ssl_context=self.ssl_context,
                timeout=imapclient.SocketTimeout(connect=wait, read=self.timeout),
            )
        except TimeoutError:
            if self.security == "tls":  # the TLS handshake or the greeting
                raise ImapUnavailableError(f"{self.where}: timed out after {wait:g} s") from None
            if speaks_tls(self.host, self.port, min(wait, tlsprobe.PROBE_TIMEOUT)):
                raise ImapTlsError(
                    f"{self.where}: no greeting, and the port answers TLS: it expects"
                    ' security = "tls" (implicit TLS) in the configuration'
                ) from None
            raise ImapUnavailableError(
                f"{self.where}: no greeting within {wait:g} s (timed out): "
                'does this port expect security = "tls"?'
            ) from None
        # imapclient logs the whole protocol dialogue (message bodies included) at DEBUG
        # level through imaplib's debug hook; message content must never reach a log.
        client._imap.debug = 0
        try:
            if self.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise ImapTlsError(f"{self.where}: server does not offer STARTTLS")
                client.starttls(self.ssl_context)
            client.login(self.username, self._password)
            try:
                info = client.select_folder(self.mailbox)
            except imap_errors.IMAPClientError as exc:
                if "NONEXISTENT" not in str(exc) and "exist" not in str(exc):
                    raise
                if not self.create_missing:
                    raise ImapError(
                        f"{self.where}: no such mailbox on the server (check the folder name)"
                    ) from None
                client.create_folder(self.mailbox)
                info = client.select_folder(self.mailbox)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        self._uidvalidity = int(info[b"UIDVALIDITY"])
        self._last_used = time.monotonic()
        return client

    def _run(self, op: Callable[[imapclient.IMAPClient], T], *, by_uid: bool = True) -> T:
        """Run ``op`` once on a live connection, mapping every failure to an ImapError.

        Only the liveness probe of a cached connection may fail silently (see the class
        docstring); ``by_uid`` says ``op`` names messages by UID, which a reopened session
        must not do if the mailbox was renumbered meanwhile.
        """
        known = self._uidvalidity
        try:
            if self._client is not None and not self._alive(self._client):
                self._drop()
            if self._client is None:
                self._client = self._connect()
                if by_uid and known is not None and self._uidvalidity != known:
                    found = self._uidvalidity
                    assert found is not None
                    raise ImapUidValidityError(
                        f"{self.where}: UIDVALIDITY changed from {known} to {found} "
                        "(seen on reconnecting); the mailbox must be fetched again from the start",
                        expected=known,
                        found=found,
                    )
            result = op(self._client)
        except ImapUidValidityError:
            raise  # the new session is sound: only the caller's UIDs are stale
        except ImapError:
            self._drop()
            raise
        except Exception as exc:
            self._drop()
            raise self._map(exc) from None
        self._last_used = time.monotonic()
        return result

    def _alive(self, client: imapclient.IMAPClient) -> bool:
        """Whether a cached connection still works; a failed probe is not an error."""
        idle = time.monotonic() - self._last_used
        try:
            sock = client.socket()
            # While idle, the server has nothing to say: anything readable is a BYE or the
            # end of the stream (or an unsolicited update, which the NOOP consumes).
            with selectors.DefaultSelector() as selector:  # select() fails on fds > 1023
                selector.register(sock, selectors.EVENT_READ)
                readable = bool(selector.select(0))
            if not readable and idle < self.probe_after:
                return True
            sock.settimeout(min(self.timeout, PROBE_TIMEOUT))
            try:
                client.noop()
            finally:
                sock.settimeout(self.timeout)
        except Exception as exc:
            log.info("%s: cached connection is dead (%s): reconnecting", self.where, _short(exc))
            return False
        return True

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.shutdown()
            self._client = None

    def close(self) -> None:
        """Log out politely when possible; never raises."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.logout()
            self._drop()

    def __enter__(self) -> ImapMailbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _map(self, exc: BaseException) -> ImapError:
        where = self.where
        if isinstance(exc, imap_errors.LoginError):
            return ImapAuthError(f"{where}: login refused for {self.username}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = f"{where}: server certificate not trusted ({exc.verify_message})"
            if exc.verify_code in _UNKNOWN_ISSUER:
                text += " (add its CA with ca_file under [[imap]] in the configuration)"
            return ImapTlsError(text)
        if isinstance(exc, ssl.SSLError):
            text = f"{where}: TLS failed ({exc.reason or exc})"
            if self.security == "tls" and exc.reason in _PLAINTEXT_PEER:
                text += ': does this port expect security = "starttls"?'
            return ImapTlsError(text)
        if isinstance(exc, TimeoutError | socket.timeout):
            return ImapUnavailableError(f"{where}: timed out after {self.timeout:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return ImapUnavailableError(f"{where}: connection refused (server down?)")
        if isinstance(exc, socket.gaierror):
            return ImapUnavailableError(f"{where}: cannot resolve host ({exc.strerror})")
        if isinstance(exc, OSError):
            return ImapUnavailableError(f"{where}: {exc.strerror or exc}")
        if isinstance(exc, imap_errors.IMAPClientAbortError):
            return ImapUnavailableError(f"{where}: connection lost ({_short(exc)})")
        if isinstance(exc, imap_errors.IMAPClientError):
            return ImapError(f"{where}: {_short(exc)}")
        raise exc

    # --- MailboxSource ----------------------------------------------------------------------

    @property
    def uidvalidity(self) -> int:
        """The mailbox's UIDVALIDITY (connects if needed): store it next to the last UID.

        A cached connection found dead is reopened here, so the value is the live session's."""
        self._run(lambda c: None, by_uid=False)
        assert self._uidvalidity is not None
        return self._uidvalidity

    def _check_validity(self, expected: int | None) -> int:
        found = self.uidvalidity
        if expected is not None and expected != found:
            raise ImapUidValidityError(
                f"{self.where}: UIDVALIDITY changed from {expected} to {found}; "
                "the mailbox must be fetched again from the start",
                expected=expected,
                found=found,
            )
        return found

    def _uids_after(self, client: imapclient.IMAPClient, after: int) -> list[int]:
        # A selected session sees mail that arrived since the last command only after the
        # server has synchronised it: NOOP first, or SEARCH answers from a stale view.
        client.noop()
        # "UID n:*" always matches the highest UID, even when it is below n.
        found = client.search(["UID", f"{after + 1}:*"])
        return sorted(uid for uid in found if uid > after)

    def fetch_new(
        self,
        after_uid: str | None,
        *,
        uidvalidity: int | None = None,
        prefetch: bool | None = None,
    ) -> Iterator[RemoteMessage]:
        """Yield messages with UID > ``after_uid``, oldest first, in bounded batches.

        Give the ``uidvalidity`` stored with ``after_uid`` to be told (ImapUidValidityError)
        when the server renumbered the mailbox instead of silently skipping or repeating mail.
        With ``prefetch``, the next batch is downloaded in a background thread while the caller
        works on the current one (decrypting, storing): the server's and the network's time is
        then hidden behind the caller's. The connection is never used by two threads at once.
        """
        after = _parse_uid(after_uid)
        validity = self._check_validity(uidvalidity)
        # The caller has everything up to ``after_uid``: not "new" for wait_for_new.
        self._highest_seen = max(self._highest_seen, after)
        uids = self._run(lambda c: self._uids_after(c, after))
        if not uids:
            return
        sizes = self._run(lambda c: c.fetch(uids, ["RFC822.SIZE"]))
        batches = list(self._batches(uids, sizes))

        def download(batch: list[int]) -> dict[int, Any]:
            return self._run(lambda c: c.fetch(batch, ["BODY.PEEK[]"]))

        if prefetch is None:
            prefetch = self.prefetch
        if not prefetch or len(batches) == 1:
            for batch in batches:
                yield from self._emit(batch, download(batch), validity)
            return
        with concurrent.futures.ThreadPoolExecutor(1, "caducee-imap-prefetch") as pool:
            future: concurrent.futures.Future[dict[int, Any]] | None = pool.submit(
                download, batches[0]
            )
            try:
                for index, batch in enumerate(batches):
                    assert future is not None
                    response = future.result()
                    future = None
                    if index + 1 < len(batches):
                        future = pool.submit(download, batches[index + 1])
                    yield from self._emit(batch, response, validity)
            finally:
                # The caller stopped early or failed: let the download in flight finish so
                # the connection is idle again before anyone else uses it.
                if future is not None:
                    with contextlib.suppress(Exception):
                        future.result()

    def _emit(
        self, batch: list[int], response: dict[int, Any], validity: int
    ) -> Iterator[RemoteMessage]:
        for uid in batch:
            item = response.get(uid)
            data = item.get(b"BODY[]") if item else None
            if data is None:
                # Expunged between SEARCH and FETCH: nothing to deliver, nothing lost.
                continue
            self._highest_seen = max(self._highest_seen, uid)
            yield RemoteMessage(
                mailbox=self.mailbox, uidvalidity=validity, uid=str(uid), data=bytes(data)
            )

    def _batches(self, uids: list[int], sizes: dict[int, Any]) -> Iterator[list[int]]:
        batch: list[int] = []
        total = 0
        for uid in uids:
            size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
            if batch and (len(batch) >= self.batch_count or total + size > self.batch_bytes):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch

    def wait_for_new(self, timeout: float) -> bool:
        """Return True when mail may have arrived (IDLE, or polling without IDLE).

        Also True when a reopened session finds the mailbox renumbered: the caller's next
        :meth:`fetch_new` (with its stored UIDVALIDITY) is what must deal with it."""
        deadline = time.monotonic() + timeout
        after = self._highest_seen
        if self._anything_after(after):
            return True
        if self._run(lambda c: c.has_capability("IDLE"), by_uid=False):
            return self._run(lambda c: self._idle(c, deadline), by_uid=False)
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            if self._anything_after(after):
                return True
        return False

    def _anything_after(self, after: int) -> bool:
        try:
            return bool(self._run(lambda c: self._uids_after(c, after)))
        except ImapUidValidityError:
            self._highest_seen = 0  # those UIDs are gone with the old numbering
            return True

    def _idle(self, client: imapclient.IMAPClient, deadline: float) -> bool:
        # RFC 2177: re-issue IDLE well before the server's 30-minute inactivity limit.
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            client.idle()
            try:
                responses = client.idle_check(timeout=min(left, 25 * 60.0))
            finally:
                client.idle_done()
            if any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                return True

    # --- flags and SentFolder ---------------------------------------------------------------

    def add_flags(self, uids: Sequence[str], flags: Sequence[str]) -> None:
        """Set flags (``\\Seen``, or keywords such as :data:`PROCESSED`) on messages by UID."""
        numbers = [_parse_uid(u) for u in uids]
        if numbers:
            self._run(lambda c: c.add_flags(numbers, list(flags), silent=True))

    def mark_seen(self, uids: Sequence[str]) -> None:
        self.add_flags(uids, ["\\Seen"])

    def mark_processed(self, uids: Sequence[str]) -> None:
        self.add_flags(uids, [PROCESSED])

    def flags(self, uid: str) -> tuple[str, ...]:
        number = _parse_uid(uid)
        result = self._run(lambda c: c.get_flags([number]))
        return tuple(_text(f) for f in result.get(number, ()))

    def append(self, message: bytes, flags: Sequence[str] = ("\\Seen",)) -> None:
        """APPEND ``message`` to this mailbox (``mailbox="Sent"`` makes a SentFolder)."""

        def op(client: imapclient.IMAPClient) -> None:
            client.append(self.mailbox, message, flags=list(flags))

        self._run(op, by_uid=False)


def _parse_uid(uid: str | None) -> int:
    if uid is None or uid == "":
        return 0
    try:
        value = int(uid)
    except ValueError:
        raise ConfigError(f"not an IMAP UID: {uid!r}") from None
    if value < 0:
        raise ConfigError(f"not an IMAP UID: {uid!r}")
    return value


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
