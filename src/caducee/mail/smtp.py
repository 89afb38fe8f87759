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
from caducee.mail.api import Envelope, ServerRefusedError

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


class SmtpAuthError(SmtpError):
    """The server refused our credentials (fix the configuration, then the outbox retries)."""

    retryable = True


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
    One connection per :meth:`submit`; every socket operation is bounded by ``timeout``.
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
        if self.security == "tls":
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=self.local_hostname,
                timeout=self.timeout,
                context=self.ssl_context,
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout
        )

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
            return SmtpRejectedError(
                f"{where}: sender {exc.sender} refused ({exc.smtp_code} {_reply(exc.smtp_error)})",
                refused={},
                retryable=400 <= exc.smtp_code < 500,
            )
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
            return SmtpTlsError(f"{where}: server certificate not trusted ({exc.verify_message})")
        if isinstance(exc, ssl.SSLError):
            return SmtpTlsError(f"{where}: TLS failed ({exc.reason or exc})")
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
