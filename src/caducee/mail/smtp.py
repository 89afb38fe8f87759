"""Submission of finished (already signed and encrypted) messages to an SMTP server.

Why stdlib smtplib: it speaks ESMTP, STARTTLS and AUTH correctly and blocks with a socket
timeout, which is what an outbox worker wants. This module only adds what it lacks for us:
refusing to continue in clear when TLS was asked for, reporting which recipients were refused,
and turning every socket/TLS/SMTP failure into a :class:`~caducee.errors.TransportError` that
says where it happened and whether trying again later can help.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping
from typing import Literal

from caducee.errors import ConfigError, TransportError
from caducee.mail import tlsprobe
from caducee.mail.api import Envelope, ServerRefusedError
from caducee.mail.tlsprobe import speaks_tls

__all__ = [
    "Security",
    "SmtpAuthError",
    "SmtpError",
    "SmtpRejectedError",
    "SmtpSubmitter",
    "SmtpTlsError",
    "SmtpUnavailableError",
]

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]

#: Longest wait for the TCP connection and the server's greeting (bounded by ``timeout`` too).
#: A client in the wrong TLS mode against an implicit-TLS port gets no greeting at all (the
#: server waits for a TLS handshake): failing after 10 s with a hint beats hanging for 30 s.
GREETING_TIMEOUT = 10.0

#: OpenSSL verification codes meaning "the issuer is not in the trust store" (not, e.g., a
#: name mismatch or an expired certificate): adding the CA with ``ca_file`` is then the fix.
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})

#: OpenSSL reasons seen when a TLS client reads a plaintext greeting instead of a handshake.
_PLAINTEXT_PEER = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}
)


class SmtpError(TransportError):
    """An SMTP submission failed. ``retryable`` says whether the same message may pass later."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class SmtpUnavailableError(SmtpError):
    """The server could not be reached, timed out, or closed the connection."""

    retryable = True


class SmtpTlsError(SmtpError):
    """TLS could not be established (handshake, certificate, STARTTLS not offered)."""

    retryable = True
    needs_fixing = True


class SmtpAuthError(SmtpError):
    """The server refused our credentials (fix the configuration, then the outbox retries)."""

    retryable = True
    needs_fixing = True


class SmtpRejectedError(SmtpError, ServerRefusedError):
    """The server refused the message or some recipients.

    ``refused`` maps each refused recipient to the server's ``(code, reply)``; ``accepted``
    lists the recipients the server took (the message *was* sent to them when non-empty).
    ``retryable`` is True only when every refusal was temporary (4xx).
    """

    def __init__(
        self,
        message: str,
        *,
        refused: Mapping[str, tuple[int, str]],
        accepted: tuple[str, ...] = (),
        retryable: bool,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.refused = dict(refused)
        self.accepted = accepted


_CRLF = re.compile(rb"\r\n|\n|\r(?!\n)")


def _reply(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())[:200]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpSubmitter:
    """Implements :class:`caducee.mail.api.Submitter` over SMTP submission (587/465/25).

    ``security`` is "starttls" (upgrade required: no fallback to clear text), "tls" (implicit
    TLS, port 465) or "none" (loopback or test servers only when a password is configured).
    One connection per :meth:`submit`; every socket operation is bounded by ``timeout``, and
    connecting up to the server's greeting by ``min(timeout, GREETING_TIMEOUT)``.
    ``ssl_context`` decides which server certificates are trusted (default: the system's).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = "localhost",
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ConfigError(f"SMTP security must be starttls, tls or none, not {security!r}")
        if (username is None) != (password is None):
            raise ConfigError("SMTP username and password go together")
        if security == "none" and username is not None and not _is_loopback(host):
            raise ConfigError(
                f"refusing to send an SMTP password in clear text to {host}:{port}; "
                "use security starttls or tls"
            )
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.local_hostname = local_hostname

    def __repr__(self) -> str:
        auth = f", username={self.username!r}" if self.username else ""
        return f"SmtpSubmitter({self.host!r}, {self.port}, security={self.security!r}{auth})"

    @property
    def where(self) -> str:
        return f"SMTP {self.host}:{self.port}"

    def _connect(self) -> smtplib.SMTP:
        wait = min(self.timeout, GREETING_TIMEOUT)
        conn: smtplib.SMTP
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    local_hostname=self.local_hostname,
                    timeout=wait,
                    context=self.ssl_context,
                )
            else:
                conn = smtplib.SMTP(
                    self.host, self.port, local_hostname=self.local_hostname, timeout=wait
                )
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a read timeout on the greeting as a disconnection.
            if "timed out" not in str(exc):
                raise
            probe = min(wait, tlsprobe.PROBE_TIMEOUT)
            if self.security != "tls" and speaks_tls(self.host, self.port, probe):
                raise SmtpTlsError(
                    f"{self.where}: no greeting, and the port answers TLS: it expects"
                    ' security = "tls" (implicit TLS) in the configuration'
                ) from None
            raise SmtpUnavailableError(self._no_greeting(wait)) from None
        except TimeoutError:
            raise SmtpUnavailableError(f"{self.where}: timed out after {wait:g} s") from None
        conn.timeout = self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        return conn

    def _no_greeting(self, wait: float) -> str:
        text = f"{self.where}: no greeting within {wait:g} s (timed out)"
        if self.security != "tls":
            text += ': does this port expect security = "tls"?'
        return text

    def _open(self) -> smtplib.SMTP:
        conn = self._connect()
        try:
            conn.ehlo()
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise SmtpTlsError(f"{self.where}: server does not offer STARTTLS")
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if self.username is not None and self._password is not None:
                if not conn.has_extn("auth"):
                    raise SmtpAuthError(f"{self.where}: server does not offer AUTH")
                conn.login(self.username, self._password)
        except BaseException:
            conn.close()
            raise
        return conn

    def submit(self, envelope: Envelope, message: bytes) -> None:
        """Send ``message`` to every envelope recipient or raise an :class:`SmtpError`."""
        if not envelope.recipients:
            raise ConfigError("an SMTP envelope needs at least one recipient")
        # SMTP lines end in CRLF. smtplib fixes line ends of str messages but sends bytes as
        # they are, and `openssl cms` writes bare LF: servers then see one endless line.
        message = _CRLF.sub(b"\r\n", message)
        try:
            conn = self._open()
            try:
                refused = conn.sendmail(envelope.sender, list(envelope.recipients), message)
            finally:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()
        except SmtpError:
            raise
        except Exception as exc:
            raise self._map(exc) from None
        if refused:
            raise self._refused(
                {r: (code, _reply(text)) for r, (code, text) in refused.items()},
                tuple(r for r in envelope.recipients if r not in refused),
            )
        log.info("%s accepted a message for %d recipient(s)", self.where, len(envelope.recipients))

    def _refused(
        self, refused: Mapping[str, tuple[int, str]], accepted: tuple[str, ...]
    ) -> SmtpRejectedError:
        parts = "; ".join(f"{r} ({code} {text})" for r, (code, text) in refused.items())
        lead = f"accepted for {len(accepted)}, refused" if accepted else "all recipients refused"
        return SmtpRejectedError(
            f"{self.where}: {lead}: {parts}",
            refused=refused,
            accepted=accepted,
            retryable=all(400 <= code < 500 for code, _ in refused.values()),
        )

    def _map(self, exc: BaseException) -> SmtpError:
        where = self.where
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return self._refused(
                {r: (code, _reply(text)) for r, (code, text) in exc.recipients.items()}, ()
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return SmtpAuthError(
                f"{where}: authentication refused ({exc.smtp_code} {_reply(exc.smtp_error)})"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return SmtpError(f"{where}: {exc}", retryable=False)
        if isinstance(exc, smtplib.SMTPSenderRefused):
            refused = SmtpRejectedError(
                f"{where}: sender {exc.sender} refused ({exc.smtp_code} {_reply(exc.smtp_error)})",
                refused={},
                retryable=400 <= exc.smtp_code < 500,
            )
            # our own address refused for good: the account or its configuration is wrong
            refused.needs_fixing = not refused.retryable
            return refused
        if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPHeloError):
            return SmtpUnavailableError(
                f"{where}: server refused the session ({exc.smtp_code} {_reply(exc.smtp_error)})"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            code = exc.smtp_code
            what = "message refused" if code >= 500 else "temporary failure"
            return SmtpRejectedError(
                f"{where}: {what} ({code} {_reply(exc.smtp_error)})",
                refused={},
                retryable=not 500 <= code < 600,
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            # smtplib turns a read timeout into "Connection unexpectedly closed: timed out".
            if "timed out" in str(exc):
                return SmtpUnavailableError(f"{where}: timed out after {self.timeout:g} s")
            return SmtpUnavailableError(f"{where}: server closed the connection")
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = f"{where}: server certificate not trusted ({exc.verify_message})"
            if exc.verify_code in _UNKNOWN_ISSUER:
                text += " (add its CA with ca_file under [smtp] in the configuration)"
            return SmtpTlsError(text)
        if isinstance(exc, ssl.SSLError):
            text = f"{where}: TLS failed ({exc.reason or exc})"
            if self.security == "tls" and exc.reason in _PLAINTEXT_PEER:
                text += ': does this port expect security = "starttls"?'
            return SmtpTlsError(text)
        if isinstance(exc, TimeoutError | socket.timeout):
            return SmtpUnavailableError(f"{where}: timed out after {self.timeout:g} s")
        if isinstance(exc, ConnectionRefusedError):
            return SmtpUnavailableError(f"{where}: connection refused (server down?)")
        if isinstance(exc, socket.gaierror):
            return SmtpUnavailableError(f"{where}: cannot resolve host ({exc.strerror})")
        if isinstance(exc, OSError):
            return SmtpUnavailableError(f"{where}: {exc.strerror or exc}")
        if isinstance(exc, smtplib.SMTPException):
            return SmtpError(f"{where}: {exc}")
        if isinstance(exc, UnicodeError | ValueError):
            # e.g. a non-ASCII address the server cannot take without SMTPUTF8.
            return SmtpError(f"{where}: cannot send this envelope ({exc})", retryable=False)
        raise exc
